"""Trackers: ByteTrack over detections, SAM2 mask propagation between detection frames.

:func:`build_tracker` constructs one by name (a
:class:`~vidshard.detection.pipeline.DetectRecipe` calls it); nothing heavy is imported
until :meth:`load` (ultralytics for ByteTrack, transformers for SAM2), so importing this
module never imports torch.

Both trackers take an optional ``set_fps(fps)``: the engine may call it (check with
``hasattr``) so that "how long a lost object is remembered" is in seconds of video, not
frames. Without it 30 fps is assumed.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from vidshard.detection.base import Tracker
from vidshard.detection.geometry import box_iou
from vidshard.detection.types import Detections
from vidshard.errors import ConfigError, ModelError

from .sam2 import TransformersSam2Propagator
from .ultralytics_env import import_yolo

logger = logging.getLogger(__name__)

__all__ = [
    "ByteTrackSettings",
    "ByteTracker",
    "MaskPropagator",
    "Sam2Settings",
    "Sam2Tracker",
    "TransformersSam2Propagator",
    "build_tracker",
    "greedy_match",
    "mask_boxes",
]

DEFAULT_FPS = 30.0


def _frames_for(seconds: float, fps: float) -> int:
    return max(1, round(seconds * fps))


def _check_fps(fps: float) -> float:
    if not (math.isfinite(fps) and fps > 0):
        raise ConfigError(f"set_fps: expected a finite frame rate > 0, got {fps}")
    return float(fps)


def _check_frame(frame: np.ndarray) -> tuple[int, int]:
    if not isinstance(frame, np.ndarray) or frame.ndim != 3 or frame.shape[2] != 3:
        got = f"{frame.shape} {frame.dtype}" if isinstance(frame, np.ndarray) else type(frame)
        raise ModelError(f"tracker: expected an (H, W, 3) uint8 frame, got {got}")
    if frame.dtype != np.uint8:
        raise ModelError(
            f"tracker: expected an (H, W, 3) uint8 frame, got {frame.shape} {frame.dtype}"
        )
    return int(frame.shape[0]), int(frame.shape[1])


def _take(dets: Detections, rows: NDArray[np.intp], track_ids: NDArray[np.int64]) -> Detections:
    """The detections at ``rows``, in that order, with ``track_ids``."""
    return Detections(
        boxes=dets.boxes[rows],
        scores=dets.scores[rows],
        class_ids=dets.class_ids[rows],
        class_names=tuple(dets.class_names[i] for i in rows.tolist()),
        track_ids=track_ids,
        masks=None if dets.masks is None else dets.masks[rows],
    )


# -- ByteTrack ------------------------------------------------------------------------


@dataclass(frozen=True)
class ByteTrackSettings:
    """Ultralytics' ``bytetrack.yaml`` defaults; the buffer is in seconds of video."""

    track_high_thresh: float = 0.25  # first association: detections at or above
    track_low_thresh: float = 0.1  # second association: between low and high
    new_track_thresh: float = 0.25  # an unmatched detection starts a track at or above
    track_buffer_s: float = 1.0  # a lost track can come back within this long
    match_thresh: float = 0.8  # max association cost (1 - IoU, fused with the score)
    fuse_score: bool = True

    def validate(self) -> None:
        for name in ("track_high_thresh", "track_low_thresh", "new_track_thresh", "match_thresh"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"bytetrack {name}: expected a value in 0..1, got {value}")
        if not (math.isfinite(self.track_buffer_s) and self.track_buffer_s > 0):
            raise ConfigError(f"bytetrack track_buffer_s: expected > 0, got {self.track_buffer_s}")


class _BoxesView:
    """What ``BYTETracker.update`` reads from a results object: ``conf``, ``cls``,
    ``xywh`` (``xyxy`` for motion compensation), ``len`` and boolean indexing. It must not
    have ``xywhr``: that attribute switches Ultralytics to oriented boxes."""

    __slots__ = ("cls", "conf", "xywh", "xyxy")

    def __init__(self, xyxy: np.ndarray, conf: np.ndarray, cls: np.ndarray) -> None:
        self.xyxy = xyxy
        self.conf = conf
        self.cls = cls
        wh = xyxy[:, 2:] - xyxy[:, :2]
        self.xywh = np.concatenate([xyxy[:, :2] + wh / 2, wh], axis=1)

    @classmethod
    def of(cls, dets: Detections) -> _BoxesView:
        return cls(
            dets.boxes.astype(np.float32),
            dets.scores.astype(np.float32),
            dets.class_ids.astype(np.float32),
        )

    def __len__(self) -> int:
        return int(self.conf.shape[0])

    def __getitem__(self, keep: np.ndarray) -> _BoxesView:
        return _BoxesView(self.xyxy[keep], self.conf[keep], self.cls[keep])


class ByteTracker:
    """ByteTrack (Ultralytics' implementation) over the detector's boxes.

    Only confirmed tracks are returned; each keeps the box, score, class and mask of the
    detection it matched in this frame (not the Kalman-smoothed box), so a box and its mask
    always agree. A track first seen after the first frame is confirmed on its second hit.
    """

    name = "bytetrack"
    needs_detections_every_frame = True

    def __init__(self, settings: ByteTrackSettings | None = None) -> None:
        self.settings = settings or ByteTrackSettings()
        self.settings.validate()
        self._fps = DEFAULT_FPS
        self._factory: Any = None  # ultralytics' BYTETracker class, set by load
        self._tracker: Any = None

    @property
    def buffer_frames(self) -> int:
        """Frames a lost track is kept: ``track_buffer_s`` at the current frame rate."""
        return _frames_for(self.settings.track_buffer_s, self._fps)

    def set_fps(self, fps: float) -> None:
        """The video's frame rate, to turn ``track_buffer_s`` into frames (default 30)."""
        self._fps = _check_fps(fps)
        if self._tracker is not None:
            self._tracker.max_frames_lost = self.buffer_frames

    def load(self, device: str) -> None:
        """Import Ultralytics' tracker; ByteTrack runs on the CPU whatever ``device`` is."""
        import_yolo()  # ultralytics imported offline, its settings out of the user's home
        try:
            from ultralytics.trackers.byte_tracker import BYTETracker
        except ImportError as exc:
            raise ModelError(f"--tracker bytetrack needs ultralytics (and lap): {exc}") from exc
        self._factory = BYTETracker
        self.reset()

    def reset(self) -> None:
        if self._factory is None:
            return  # not loaded yet: nothing to forget
        s = self.settings
        args = SimpleNamespace(
            tracker_type="bytetrack",
            track_high_thresh=s.track_high_thresh,
            track_low_thresh=s.track_low_thresh,
            new_track_thresh=s.new_track_thresh,
            track_buffer=self.buffer_frames,
            match_thresh=s.match_thresh,
            fuse_score=s.fuse_score,
        )
        self._tracker = self._factory(args)  # a fresh tracker: ids start at 1 again

    def update(self, frame: np.ndarray, detections: Detections | None) -> Detections:
        if self._tracker is None:
            raise ModelError("bytetrack: load() must be called before update()")
        _check_frame(frame)
        dets = detections if detections is not None else Detections.empty()
        rows = np.asarray(self._tracker.update(_BoxesView.of(dets), None))
        if rows.size == 0:
            nothing = np.zeros(0, dtype=np.intp)
            return _take(dets, nothing, np.zeros(0, dtype=np.int64))
        # rows: x1, y1, x2, y2, track_id, score, cls, index of the matched detection
        return _take(
            dets, np.rint(rows[:, 7]).astype(np.intp), np.rint(rows[:, 4]).astype(np.int64)
        )


# -- SAM2 -----------------------------------------------------------------------------


class MaskPropagator(Protocol):
    """The model half of :class:`Sam2Tracker`: follows prompted objects frame by frame.

    The tracker keeps the ids and decides what to prompt and forget; a propagator only
    segments. Frames come in order, ``frame_index`` counting from 0 after :meth:`start`.
    """

    def load(self, device: str) -> None: ...

    def start(self) -> None:
        """Forget every object: a new segment starts."""
        ...

    def step(
        self,
        frame: np.ndarray,
        frame_index: int,
        prompts: Mapping[int, NDArray[np.float32]],
        forget: Collection[int],
    ) -> tuple[list[int], NDArray[np.bool_]]:
        """Drop ``forget``, (re)prompt each id in ``prompts`` with its xyxy box on this
        frame, segment every object: (ids, (N, H, W) bool masks at frame size)."""
        ...


def mask_boxes(masks: NDArray[np.bool_]) -> tuple[NDArray[np.float32], NDArray[np.bool_]]:
    """xyxy pixel boxes around ``(N, H, W)`` masks (``x2``, ``y2`` exclusive: a one-pixel
    mask is 1 wide), and which masks are non-empty (empty ones get a zero box)."""
    n, h, w = masks.shape
    rows: NDArray[np.bool_] = np.any(masks, axis=2)
    cols: NDArray[np.bool_] = np.any(masks, axis=1)
    nonempty: NDArray[np.bool_] = np.any(rows, axis=1)
    boxes = np.stack(
        [
            cols.argmax(axis=1),
            rows.argmax(axis=1),
            w - cols[:, ::-1].argmax(axis=1),
            h - rows[:, ::-1].argmax(axis=1),
        ],
        axis=1,
    ).astype(np.float32)
    boxes[~nonempty] = 0.0
    return boxes.reshape(n, 4), nonempty


def greedy_match(
    det_boxes: np.ndarray, obj_boxes: np.ndarray, min_iou: float
) -> list[tuple[int, int]]:
    """One-to-one (detection row, object row) pairs with IoU >= ``min_iou``, highest first."""
    iou = box_iou(det_boxes, obj_boxes)
    if iou.size == 0:
        return []
    pairs: list[tuple[int, int]] = []
    used_d: set[int] = set()
    used_o: set[int] = set()
    order = np.argsort(-iou, axis=None, kind="stable")
    for d, o in zip(*np.unravel_index(order, iou.shape), strict=True):
        if iou[d, o] < min_iou:
            break
        if d in used_d or o in used_o:
            continue
        pairs.append((int(d), int(o)))
        used_d.add(d)
        used_o.add(o)
    return pairs


@dataclass(frozen=True)
class Sam2Settings:
    match_iou: float = 0.5  # a detection keeps an object's id at this IoU with its mask box
    reprompt_matched: bool = True  # re-seed matched objects with the fresh detection box
    forget_after_missed: int = 2  # consecutive detection frames without a match...
    forget_after_s: float = 1.0  # ...and at least this long since the last match
    max_conditioning_frames: int = 4  # prompted frames kept in each object's memory

    def validate(self) -> None:
        if not 0.0 < self.match_iou <= 1.0:
            raise ConfigError(f"sam2 match_iou: expected a value in (0, 1], got {self.match_iou}")
        if self.forget_after_missed < 1:
            raise ConfigError(
                f"sam2 forget_after_missed: expected 1 or more, got {self.forget_after_missed}"
            )
        if not (math.isfinite(self.forget_after_s) and self.forget_after_s >= 0):
            raise ConfigError(f"sam2 forget_after_s: expected >= 0, got {self.forget_after_s}")
        if self.max_conditioning_frames < 1:
            raise ConfigError(
                "sam2 max_conditioning_frames: expected 1 or more, "
                f"got {self.max_conditioning_frames}"
            )


@dataclass
class _Object:
    class_id: int
    class_name: str
    score: float  # of the last detection that matched it
    box: NDArray[np.float32]  # last non-empty mask box (or prompt box): what detections match
    last_matched: int  # frame index
    missed: int = 0  # consecutive detection frames without a match


class Sam2Tracker:
    """Detections seed objects, SAM2 follows them between detection frames (seed 004).

    On a detection frame each detection is matched (greedy, IoU >= ``match_iou``) with the
    box of an object's latest mask, from the previous frame: a match keeps the object's id
    (and, by default, re-prompts it with the detection box), an unmatched detection becomes
    a new object prompted with its box. An object no detection matched for
    ``forget_after_missed`` detection frames and ``forget_after_s`` seconds is forgotten.
    On every frame the output is the objects with a non-empty mask: boxes around the masks,
    the last matching detection's score, the class of the detection that created the
    object, and the masks themselves when ``masks`` is True.
    """

    name = "sam2"
    needs_detections_every_frame = False

    def __init__(
        self,
        propagator: MaskPropagator,
        *,
        masks: bool = False,
        settings: Sam2Settings | None = None,
    ) -> None:
        self.propagator = propagator
        self.masks = masks
        self.settings = settings or Sam2Settings()
        self.settings.validate()
        self._fps = DEFAULT_FPS
        self._objects: dict[int, _Object] = {}
        self._next_id = 1
        self._frame_index = 0
        self._frame_hw: tuple[int, int] | None = None

    def set_fps(self, fps: float) -> None:
        """The video's frame rate, to turn ``forget_after_s`` into frames (default 30)."""
        self._fps = _check_fps(fps)

    def load(self, device: str) -> None:
        self.propagator.load(device)

    def reset(self) -> None:
        self.propagator.start()
        self._objects.clear()
        self._next_id = 1
        self._frame_index = 0
        self._frame_hw = None

    def update(self, frame: np.ndarray, detections: Detections | None) -> Detections:
        hw = _check_frame(frame)
        if self._frame_hw is None:
            self._frame_hw = hw
        elif hw != self._frame_hw:
            raise ModelError(
                f"sam2: expected frames of {self._frame_hw[1]}x{self._frame_hw[0]} in one "
                f"segment, got {hw[1]}x{hw[0]}"
            )
        index = self._frame_index
        self._frame_index += 1
        prompts: dict[int, NDArray[np.float32]] = {}
        forget: list[int] = []
        if detections is not None:
            prompts, forget = self._associate(detections.clip(hw[1], hw[0]), index)
        if not self._objects and not forget:
            return self._output([], np.zeros((0, *hw), dtype=np.bool_))
        ids, masks = self.propagator.step(frame, index, prompts, forget)
        if masks.shape != (len(ids), *hw):
            raise ModelError(
                f"sam2: expected masks of shape ({len(ids)}, {hw[0]}, {hw[1]}), got {masks.shape}"
            )
        return self._output(ids, masks.astype(np.bool_, copy=False))

    def _associate(
        self, dets: Detections, index: int
    ) -> tuple[dict[int, NDArray[np.float32]], list[int]]:
        """Match ``dets`` to objects; returns the boxes to prompt and the ids to forget."""
        ids = list(self._objects)
        obj_boxes = np.array([self._objects[i].box for i in ids], dtype=np.float32)
        pairs = greedy_match(dets.boxes, obj_boxes.reshape(-1, 4), self.settings.match_iou)
        prompts: dict[int, NDArray[np.float32]] = {}
        matched = {ids[o] for _, o in pairs}
        for d, o in pairs:
            obj = self._objects[ids[o]]
            obj.score = float(dets.scores[d])
            obj.missed = 0
            obj.last_matched = index
            if self.settings.reprompt_matched:
                obj.box = dets.boxes[d].copy()
                prompts[ids[o]] = obj.box
        forget: list[int] = []
        patience = _frames_for(self.settings.forget_after_s, self._fps)
        for oid in ids:
            if oid in matched:
                continue
            obj = self._objects[oid]
            obj.missed += 1
            if (
                obj.missed >= self.settings.forget_after_missed
                and index - obj.last_matched >= patience
            ):
                del self._objects[oid]
                forget.append(oid)
        taken = {d for d, _ in pairs}
        for d in range(len(dets)):
            box = dets.boxes[d]
            if d in taken or box[2] <= box[0] or box[3] <= box[1]:
                continue  # matched, or a zero-area box SAM2 cannot be prompted with
            oid = self._next_id
            self._next_id += 1
            self._objects[oid] = _Object(
                class_id=int(dets.class_ids[d]),
                class_name=dets.class_names[d],
                score=float(dets.scores[d]),
                box=box.copy(),
                last_matched=index,
            )
            prompts[oid] = self._objects[oid].box
        return prompts, forget

    def _output(self, ids: list[int], masks: NDArray[np.bool_]) -> Detections:
        boxes, nonempty = mask_boxes(masks)
        keep: list[int] = []
        for k, oid in enumerate(ids):
            obj = self._objects.get(oid)
            if obj is None or not nonempty[k]:
                continue  # forgotten (the backend may lag), or not visible on this frame
            obj.box = boxes[k]
            keep.append(k)
        rows = np.asarray(keep, dtype=np.intp)
        objs = [self._objects[ids[k]] for k in keep]
        return Detections(
            boxes=boxes[rows],
            scores=np.array([o.score for o in objs], dtype=np.float32),
            class_ids=np.array([o.class_id for o in objs], dtype=np.int32),
            class_names=tuple(o.class_name for o in objs),
            track_ids=np.array([ids[k] for k in keep], dtype=np.int64),
            masks=masks[rows] if self.masks else None,
        )


def build_tracker(
    kind: str, sam2: str | None = None, *, half: bool = False, masks: bool = False
) -> Tracker:
    """The tracker ``kind`` names (``bytetrack``, or ``sam2`` on the ``sam2`` model folder,
    fp16 with ``half``, keeping masks with ``masks``), constructed: call ``load`` on the
    device next."""
    if kind == "bytetrack":
        return ByteTracker()
    if kind == "sam2":
        if not sam2:
            raise ConfigError("--tracker sam2 needs --sam2 MODEL_DIR")
        settings = Sam2Settings()
        propagator = TransformersSam2Propagator(
            sam2, half=half, max_conditioning_frames=settings.max_conditioning_frames
        )
        return Sam2Tracker(propagator, masks=masks, settings=settings)
    raise ConfigError(f"--tracker: expected bytetrack or sam2, got {kind!r}")
