"""Inside a worker: detection and tracking over a part of a video, and drawing results.

``run_track`` decodes the unit's frames in order, runs the detect pipeline (detector in
batches, tracker frame by frame) and writes the per-frame results to the unit's file,
atomically. ``run_annotate`` draws given results on a segment and encodes it as a piece
that the coordinator joins, with the source's audio, like an upscaled segment.
"""

from __future__ import annotations

import pickle
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from vidshard.detection.annotate import EMPTY, FrameDrawing, draw
from vidshard.detection.pipeline import DetectPipeline
from vidshard.detection.rle import mask_to_rle
from vidshard.detection.types import Detections
from vidshard.errors import Cancelled
from vidshard.media.reader import read_frames
from vidshard.media.writer import SegmentWriter

from .units import AnnotateUnit, TrackUnit, UnitResult

ProgressFn = Callable[[int], None]


@dataclass(frozen=True)
class TrackedFrame:
    """One processed frame: detections without masks, masks as RLE (when kept)."""

    index: int
    pts_time: float
    detections: Detections
    masks: tuple[dict[str, Any], ...] | None = None


def _check(cancel: threading.Event | None, unit_id: str) -> None:
    if cancel is not None and cancel.is_set():
        raise Cancelled(f"{unit_id} was cancelled")


def run_track(
    unit: TrackUnit,
    pipeline: DetectPipeline,
    progress: ProgressFn,
    cancel: threading.Event | None = None,
) -> UnitResult:
    started = time.monotonic()
    video = unit.video
    wanted = set(unit.indices)
    first, last = unit.indices[0], unit.indices[-1]
    base = video.pts[0]

    def frames() -> Iterator[tuple[int, np.ndarray]]:
        for n, frame in enumerate(
            read_frames(unit.source, video, first, last + 1, identity=unit.source_identity)
        ):
            if n % 16 == 0:
                _check(cancel, unit.unit_id)
            if frame.index in wanted:
                yield frame.index, frame.image

    results: list[TrackedFrame] = []
    for index, dets in pipeline.run(frames(), fps=_rate(video, unit.indices)):
        masks = None
        if unit.masks and dets.masks is not None:
            masks = tuple(mask_to_rle(m) for m in dets.masks)
        kept = Detections(dets.boxes, dets.scores, dets.class_ids, dets.class_names, dets.track_ids)
        pts_time = float((video.pts[index] - base) * video.time_base)
        results.append(TrackedFrame(index, pts_time, kept, masks))
        progress(1)
    if len(results) != len(unit.indices):
        raise RuntimeError(f"{unit.unit_id}: {len(results)} of {len(unit.indices)} frames")
    tmp = unit.out_path.with_name(unit.out_path.name + ".partial")
    with tmp.open("wb") as out:
        pickle.dump(results, out, protocol=pickle.HIGHEST_PROTOCOL)
    tmp.replace(unit.out_path)
    return UnitResult(
        unit_id=unit.unit_id,
        slot_label="",
        frames=len(results),
        seconds=time.monotonic() - started,
        outputs=(unit.out_path,),
    )


def _rate(video: Any, indices: tuple[int, ...]) -> float | None:
    """Frames per second of the frames processed (the video's own rate, or the sampled)."""
    if len(indices) < 2:
        return float(video.avg_rate) if video.avg_rate else None
    span = float((video.pts[indices[-1]] - video.pts[indices[0]]) * video.time_base)
    return (len(indices) - 1) / span if span > 0 else None


def load_tracked(path: Any) -> list[TrackedFrame]:
    """The results a ``run_track`` unit wrote (a file this job's workers made)."""
    with open(path, "rb") as file:
        frames: list[TrackedFrame] = pickle.load(file)
    return frames


def run_annotate(
    unit: AnnotateUnit, progress: ProgressFn, cancel: threading.Event | None = None
) -> UnitResult:
    started = time.monotonic()
    video = unit.video
    start, end = unit.frame_range
    tmp = unit.out_path.with_name(unit.out_path.stem + ".partial" + unit.out_path.suffix)
    with SegmentWriter(
        tmp, unit.settings, video.size_wh, video.time_base, video.avg_rate, source=video
    ) as w:
        for n, frame in enumerate(
            read_frames(unit.source, video, start, end, identity=unit.source_identity)
        ):
            if n % 16 == 0:
                _check(cancel, unit.unit_id)
            drawing = unit.drawings[frame.index - start]
            assert drawing is EMPTY or isinstance(drawing, FrameDrawing)
            w.write(draw(frame.image, drawing), video.pts[frame.index])
            progress(1)
    tmp.replace(unit.out_path)
    return UnitResult(
        unit_id=unit.unit_id,
        slot_label="",
        frames=end - start,
        seconds=time.monotonic() - started,
        outputs=(unit.out_path,),
    )
