"""Inside a worker: decode → infer → encode as a bounded pipeline of threads.

The decoder and encoder release the GIL, so the model never waits on the codec, and the
bounded queues keep memory flat whatever the segment's length.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from vidshard.errors import Cancelled, ModelError
from vidshard.media.reader import read_frames
from vidshard.media.verify import check_piece
from vidshard.media.writer import SegmentWriter
from vidshard.models.base import Model

from .units import SeamUnit, SegmentUnit, UnitResult

ProgressFn = Callable[[int], None]  # frames completed since the last call
CheckpointFn = Callable[[str], None]  # named moments, for fault injection in tests
_END = object()
QUEUE_BATCHES = 2  # batches buffered between stages


class _Stage(threading.Thread):
    """A daemon thread whose exception is re-raised by :meth:`join_checked`."""

    def __init__(self, name: str, target: Callable[[], None], stop: threading.Event) -> None:
        super().__init__(name=name, daemon=True)
        self._target_fn = target
        self._stop_event = stop
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self._target_fn()
        except BaseException as exc:  # handed to the caller's thread
            self.error = exc
            self._stop_event.set()  # unblock the other stages

    def join_checked(self) -> None:
        self.join()
        if self.error is not None:
            raise self.error


def _put(q: queue.Queue[Any], item: object, stop: threading.Event) -> bool:
    """Put unless the pipeline is stopping; False when it is."""
    while not stop.is_set():
        try:
            q.put(item, timeout=0.1)
            return True
        except queue.Full:
            continue
    return False


def _get(q: queue.Queue[Any], stop: threading.Event) -> Any:
    while not stop.is_set():
        try:
            return q.get(timeout=0.1)
        except queue.Empty:
            continue
    return _END


def check_output(batch_in: np.ndarray, batch_out: object, scale: int, name: str) -> np.ndarray:
    """A model's output must be (N, H*s, W*s, 3) uint8; say what arrived otherwise."""
    n, h, w, _ = batch_in.shape
    expected = (n, h * scale, w * scale, 3)
    if not isinstance(batch_out, np.ndarray):
        raise ModelError(
            f"model {name!r} returned {type(batch_out).__name__}, expected a numpy array"
        )
    if batch_out.shape != expected or batch_out.dtype != np.uint8:
        raise ModelError(
            f"model {name!r}: expected output {expected} uint8, "
            f"got {batch_out.shape} {batch_out.dtype}"
        )
    return batch_out


class _SeamCollector:
    """Keeps the raw outputs of one seam half, then saves them as a .npy file."""

    def __init__(self, frame_range: tuple[int, int] | None, path: Path | None) -> None:
        self.range = frame_range
        self.path = path
        self.frames: list[np.ndarray] = []

    def offer(self, index: int, image: np.ndarray) -> None:
        if self.range is not None and self.range[0] <= index < self.range[1]:
            self.frames.append(image)

    def save(self) -> None:
        if self.range is None or self.path is None:
            return
        expected = self.range[1] - self.range[0]
        if len(self.frames) != expected:
            raise RuntimeError(f"seam {self.path.name}: {len(self.frames)} of {expected} frames")
        tmp = self.path.with_suffix(".partial.npy")
        np.save(tmp, np.stack(self.frames))
        tmp.replace(self.path)


def _no_checkpoint(_point: str) -> None:
    return None


def _check_cancel(cancel: threading.Event | None, unit_id: str) -> None:
    if cancel is not None and cancel.is_set():
        raise Cancelled(f"{unit_id} was cancelled")


def run_segment(
    unit: SegmentUnit,
    model: Model,
    progress: ProgressFn,
    checkpoint: CheckpointFn = _no_checkpoint,
    cancel: threading.Event | None = None,
) -> UnitResult:
    """Process one segment unit; returns when its outputs are complete on disk.

    ``checkpoint`` is called with ``"mid"`` once half of the segment is encoded and
    with ``"encode"`` when the encoder has flushed, before the file is committed.
    ``cancel``, once set, stops the unit before its next batch (raising
    :class:`Cancelled`) and leaves no partial file.
    """
    started = time.monotonic()
    seg = unit.segment
    read_start, read_end = seg.read_range
    core_start, core_end = seg.core_range
    batch_size = max(1, unit.batch_size if model.spec.batchable else 1)
    stop = threading.Event()
    decoded: queue.Queue[Any] = queue.Queue(maxsize=batch_size * QUEUE_BATCHES)
    inferred: queue.Queue[Any] = queue.Queue(maxsize=QUEUE_BATCHES)
    seams = [
        _SeamCollector(seg.seam_left, unit.seam_left_path),
        _SeamCollector(seg.seam_right, unit.seam_right_path),
    ]
    video = unit.video
    out_size_wh = unit.out_size_wh
    shrink_to = model_input_size_wh(video.size_wh, unit.scale) if unit.down_sample else None

    def decode() -> None:
        for decoded_frame in read_frames(
            unit.source, video, read_start, read_end, identity=unit.source_identity
        ):
            frame = decoded_frame
            if shrink_to is not None:
                frame = replace(frame, image=resize_rgb(frame.image, shrink_to))
            if not _put(decoded, frame, stop):
                return
        _put(decoded, _END, stop)

    def encode() -> None:
        tmp = unit.core_path.with_name(unit.core_path.stem + ".partial" + unit.core_path.suffix)
        done, half = 0, max(1, seg.frames // 2)
        with SegmentWriter(
            tmp, unit.settings, out_size_wh, video.time_base, video.avg_rate, source=video
        ) as w:
            while (item := _get(inferred, stop)) is not _END:
                indices, images = item
                for index, image in zip(indices, images, strict=True):
                    if core_start <= index < core_end:
                        w.write(image, video.pts[index])
                    for seam in seams:
                        seam.offer(index, image)
                own = sum(1 for i in indices if seg.start <= i < seg.end)
                progress(own)
                if done < half <= done + own:
                    checkpoint("mid")
                done += own
            if stop.is_set():  # another stage failed: leave no partial file behind
                w.abort()
                return
            for seam in seams:  # inside: if a save fails, the writer removes the partial core
                seam.save()
        _checked(tmp, video.pts[core_start:core_end], video.time_base)
        checkpoint("encode")
        tmp.replace(unit.core_path)

    stages = [_Stage("decode", decode, stop), _Stage("encode", encode, stop)]
    for stage in stages:
        stage.start()
    try:
        _infer_loop(
            decoded,
            inferred,
            model,
            unit.scale,
            batch_size,
            stop,
            cancel,
            unit.unit_id,
            out_size_wh if unit.down_sample else None,
        )
    except BaseException:
        stop.set()
        raise
    finally:
        for stage in stages:  # every stage, before any error is raised: none outlives the unit
            stage.join()
    for stage in stages:
        stage.join_checked()  # the first stage error, if any
    return UnitResult(
        unit_id=unit.unit_id,
        slot_label="",
        frames=read_end - read_start,
        seconds=time.monotonic() - started,
        outputs=tuple(p for p in (unit.core_path, unit.seam_left_path, unit.seam_right_path) if p),
    )


def _batches(q: queue.Queue[Any], batch_size: int, stop: threading.Event) -> Iterator[list[Any]]:
    batch: list[Any] = []
    while (item := _get(q, stop)) is not _END:
        batch.append(item)
        if len(batch) == batch_size:
            yield batch
            batch = []
    if batch and not stop.is_set():
        yield batch


def _infer_loop(
    decoded: queue.Queue[Any],
    inferred: queue.Queue[Any],
    model: Model,
    scale: int,
    batch_size: int,
    stop: threading.Event,
    cancel: threading.Event | None = None,
    unit_id: str = "",
    fit_to_wh: tuple[int, int] | None = None,
) -> None:
    for batch in _batches(decoded, batch_size, stop):
        _check_cancel(cancel, unit_id)
        images = np.stack([f.image for f in batch])
        outputs = check_output(images, model.run(images), scale, model.spec.name)
        if fit_to_wh is not None and outputs.shape[2:0:-1] != fit_to_wh:
            outputs = np.stack([resize_rgb(image, fit_to_wh) for image in outputs])
        if not _put(inferred, ([f.index for f in batch], list(outputs)), stop):
            return
    if not stop.is_set():
        _put(inferred, _END, stop)


def model_input_size_wh(size_wh: tuple[int, int], scale: int) -> tuple[int, int]:
    """What ``down_sample`` shrinks a frame to: its size over the scale, rounded, so the
    model's output is the input's size (or within a pixel of it, then fitted)."""
    width, height = size_wh
    return (max(1, round(width / scale)), max(1, round(height / scale)))


def resize_rgb(image: np.ndarray, size_wh: tuple[int, int]) -> np.ndarray:
    """An (H, W, 3) uint8 picture resampled to ``size_wh`` with antialiased bicubic, the
    degradation most super-resolution models are trained to undo."""
    if image.shape[1::-1] == size_wh:
        return image
    resized = Image.fromarray(image).resize(size_wh, Image.Resampling.BICUBIC)
    return np.asarray(resized)


def crossfade(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Blend two (N, H, W, 3) uint8 stacks from all-left to all-right, deterministically."""
    n = left.shape[0]
    weights = ((np.arange(n, dtype=np.float32) + 0.5) / n).reshape(n, 1, 1, 1)
    mixed = left.astype(np.float32) * (1.0 - weights) + right.astype(np.float32) * weights
    blended: np.ndarray = np.clip(np.rint(mixed), 0, 255).astype(np.uint8)
    return blended


def _checked(piece: Path, expected_pts: Sequence[int], time_base: Fraction) -> None:
    """The piece holds its frames at their times, or it is removed and the unit fails."""
    try:
        check_piece(piece, expected_pts, time_base)
    except BaseException:
        piece.unlink(missing_ok=True)
        raise


def run_seam(
    unit: SeamUnit, progress: ProgressFn, cancel: threading.Event | None = None
) -> UnitResult:
    """Crossfade a seam's two halves and encode it as its own piece."""
    _check_cancel(cancel, unit.unit_id)
    started = time.monotonic()
    left = np.load(unit.left_path)
    right = np.load(unit.right_path)
    if left.shape != right.shape:
        raise RuntimeError(f"seam {unit.unit_id}: halves differ: {left.shape} vs {right.shape}")
    blended = crossfade(left, right)
    start, _ = unit.frame_range
    video = unit.video
    tmp = unit.out_path.with_name(unit.out_path.stem + ".partial" + unit.out_path.suffix)
    with SegmentWriter(
        tmp, unit.settings, unit.size_wh, video.time_base, video.avg_rate, source=video
    ) as w:
        for offset, image in enumerate(blended):
            w.write(image, video.pts[start + offset])
    _checked(tmp, video.pts[start : start + len(blended)], video.time_base)
    tmp.replace(unit.out_path)
    progress(0)
    return UnitResult(
        unit_id=unit.unit_id,
        slot_label="",
        frames=unit.frames,
        seconds=time.monotonic() - started,
        outputs=(unit.out_path,),
    )
