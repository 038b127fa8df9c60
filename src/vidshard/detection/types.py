"""The one detection type: every detector produces it, every tracker, annotator and sink
takes it. Model-specific conversion (YOLO results, Grounding DINO outputs) lives in each
model's module, never here.

A :class:`Detections` holds ONE frame's objects as aligned arrays. It is validated on
construction, so a detector that returns NaN boxes, scores above 1 or ragged arrays fails
at the model boundary with a :class:`~vidshard.errors.ModelError` naming the field, not
three stages later in a sink.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from vidshard.errors import ModelError

_INT32 = np.iinfo(np.int32)
_INT64 = np.iinfo(np.int64)


def _describe(arr: NDArray[Any]) -> str:
    return f"{tuple(arr.shape)} {arr.dtype}"


def _as_numeric(name: str, value: ArrayLike) -> NDArray[Any]:
    """``value`` as an array of real numbers (bool excluded), or a ModelError."""
    try:
        arr = np.asarray(value)
    except ValueError as exc:  # ragged nested sequences
        raise ModelError(f"{name}: expected an array of numbers, got a ragged sequence") from exc
    if arr.dtype.kind not in "fiu":
        raise ModelError(f"{name}: expected numbers, got {_describe(arr)}")
    return arr


def _readonly(arr: NDArray[Any]) -> NDArray[Any]:
    """A read-only view: the frozen dataclass is frozen all the way down, without a copy
    (the caller's own array keeps its flags)."""
    view = arr.view()
    view.flags.writeable = False
    return view


def _as_int(name: str, value: ArrayLike, n: int, dtype: type[np.integer[Any]]) -> NDArray[Any]:
    arr = _as_numeric(name, value)
    if arr.size == 0 and n == 0:
        arr = arr.reshape(0)
    if arr.shape != (n,):
        raise ModelError(f"{name}: expected shape ({n},), got {_describe(arr)}")
    info = np.iinfo(dtype)
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)):
            raise ModelError(f"{name}: expected finite integers, got NaN or inf")
        if not np.all(arr == np.round(arr)):
            raise ModelError(f"{name}: expected integers, got fractional values")
    if n and (arr.min() < info.min or arr.max() > info.max):
        raise ModelError(f"{name}: values outside the {np.dtype(dtype).name} range")
    return arr.astype(dtype, copy=False)


def _as_boxes(value: ArrayLike) -> NDArray[np.float32]:
    boxes = _as_numeric("boxes", value)
    if boxes.size == 0 and boxes.ndim <= 2:
        boxes = boxes.reshape(0, 4)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ModelError(f"boxes: expected shape (N, 4), got {_describe(boxes)}")
    with np.errstate(over="ignore"):  # beyond float32 becomes inf, refused just below
        boxes = boxes.astype(np.float32, copy=False)
    if not np.all(np.isfinite(boxes)):
        row = int(np.flatnonzero(~np.all(np.isfinite(boxes), axis=1))[0])
        raise ModelError(f"boxes[{row}]: expected finite values, got {boxes[row].tolist()}")
    inverted = (boxes[:, 2] < boxes[:, 0]) | (boxes[:, 3] < boxes[:, 1])
    if np.any(inverted):
        row = int(np.flatnonzero(inverted)[0])
        raise ModelError(
            f"boxes[{row}]: expected x2 >= x1 and y2 >= y1 (xyxy), got {boxes[row].tolist()}"
        )
    return boxes


def _as_scores(value: ArrayLike, n: int) -> NDArray[np.float32]:
    scores = _as_numeric("scores", value)
    if scores.size == 0 and n == 0:
        scores = scores.reshape(0)
    if scores.shape != (n,):
        raise ModelError(f"scores: expected shape ({n},), got {_describe(scores)}")
    with np.errstate(over="ignore"):
        scores = scores.astype(np.float32, copy=False)
    bad = ~(np.isfinite(scores) & (scores >= 0) & (scores <= 1))
    if np.any(bad):
        i = int(np.flatnonzero(bad)[0])
        raise ModelError(f"scores[{i}]: expected a value in [0, 1], got {scores[i]}")
    return scores


def _as_track_ids(value: ArrayLike, n: int) -> NDArray[np.int64]:
    track_ids = _as_int("track_ids", value, n, np.int64)
    values, counts = np.unique(track_ids, return_counts=True)
    if len(values) != n:
        raise ModelError(
            f"track_ids: expected unique ids in a frame, got {values[counts > 1].tolist()}"
            " more than once"
        )
    return track_ids


def _as_masks(value: ArrayLike, n: int) -> NDArray[np.bool_]:
    try:
        arr = np.asarray(value)
    except ValueError as exc:
        raise ModelError("masks: expected an (N, H, W) bool array, got a ragged sequence") from exc
    if arr.ndim != 3 or arr.shape[0] != n:
        raise ModelError(f"masks: expected shape ({n}, H, W), got {_describe(arr)}")
    if arr.dtype.kind == "b":
        return arr
    # 0/1 integer or float masks are accepted; probabilities are not silently thresholded.
    if arr.dtype.kind not in "fiu" or not np.all((arr == 0) | (arr == 1)):
        raise ModelError(f"masks: expected bool (or 0/1) values, got {_describe(arr)}")
    return arr.astype(np.bool_)


@dataclass(frozen=True, eq=False)
class Detections:
    """One frame's detected (and maybe tracked) objects, as aligned arrays of length N.

    ``boxes`` are ``x1, y1, x2, y2`` in pixels of the frame the detector saw; ``class_names``
    holds the name of each box's class (so a sink needs no model to write it);
    ``track_ids`` is None until a tracker assigns ids; ``masks`` is None for box-only models.
    Array-likes are coerced to the stored dtypes; anything else raises ModelError.
    """

    boxes: NDArray[np.float32]
    scores: NDArray[np.float32]
    class_ids: NDArray[np.int32]
    class_names: tuple[str, ...]
    track_ids: NDArray[np.int64] | None = None
    masks: NDArray[np.bool_] | None = None

    def __post_init__(self) -> None:
        boxes = _as_boxes(self.boxes)
        n = boxes.shape[0]
        scores = _as_scores(self.scores, n)
        class_ids = _as_int("class_ids", self.class_ids, n, np.int32)
        if n and class_ids.min() < 0:
            i = int(np.flatnonzero(class_ids < 0)[0])
            raise ModelError(f"class_ids[{i}]: expected >= 0, got {class_ids[i]}")
        class_names = self._check_names(self.class_names, class_ids, n)
        track_ids = None if self.track_ids is None else _as_track_ids(self.track_ids, n)
        masks = None if self.masks is None else _as_masks(self.masks, n)

        set_ = object.__setattr__
        set_(self, "boxes", _readonly(boxes))
        set_(self, "scores", _readonly(scores))
        set_(self, "class_ids", _readonly(class_ids))
        set_(self, "class_names", class_names)
        set_(self, "track_ids", None if track_ids is None else _readonly(track_ids))
        set_(self, "masks", None if masks is None else _readonly(masks))

    @staticmethod
    def _check_names(value: object, class_ids: NDArray[np.int32], n: int) -> tuple[str, ...]:
        if isinstance(value, str) or not isinstance(value, Sequence | np.ndarray):
            raise ModelError(f"class_names: expected a sequence of {n} str, got {type(value)}")
        names = tuple(value)
        if len(names) != n:
            raise ModelError(f"class_names: expected {n} names, got {len(names)}")
        seen: dict[int, str] = {}
        for i, (name, cid) in enumerate(zip(names, class_ids.tolist(), strict=True)):
            if not isinstance(name, str):
                raise ModelError(f"class_names[{i}]: expected str, got {type(name).__name__}")
            if seen.setdefault(cid, name) != name:
                raise ModelError(
                    f"class_names[{i}]: class_id {cid} is named {seen[cid]!r} in an earlier box,"
                    f" got {name!r}"
                )
        return names

    # -- construction -----------------------------------------------------------------

    @classmethod
    def empty(cls, with_masks_hw: tuple[int, int] | None = None) -> Detections:
        """No objects; with ``(H, W)``, an empty ``(0, H, W)`` mask array too."""
        masks = None
        if with_masks_hw is not None:
            h, w = with_masks_hw
            masks = np.zeros((0, h, w), dtype=np.bool_)
        return cls(
            boxes=np.zeros((0, 4), dtype=np.float32),
            scores=np.zeros(0, dtype=np.float32),
            class_ids=np.zeros(0, dtype=np.int32),
            class_names=(),
            masks=masks,
        )

    @classmethod
    def concat(cls, parts: Sequence[Detections]) -> Detections:
        """All objects of ``parts``, in order (e.g. several prompts' results for one frame).

        Empty parts are ignored when deciding whether the result has masks and track ids;
        the non-empty ones must agree (all or none, and masks of one size).
        """
        if not parts:
            return cls.empty()
        full = [p for p in parts if len(p)]
        if not full:
            return parts[0]
        with_tracks = {p.track_ids is not None for p in full}
        with_masks = {p.masks is not None for p in full}
        if len(with_tracks) > 1:
            raise ValueError("concat: some parts have track_ids and some do not")
        if len(with_masks) > 1:
            raise ValueError("concat: some parts have masks and some do not")
        masks = None
        if with_masks == {True}:
            sizes = {p.masks.shape[1:] for p in full if p.masks is not None}
            if len(sizes) > 1:
                raise ValueError(f"concat: masks of different sizes {sorted(sizes)}")
            masks = np.concatenate([p.masks for p in full if p.masks is not None])
        track_ids = None
        if with_tracks == {True}:
            track_ids = np.concatenate([p.track_ids for p in full if p.track_ids is not None])
        return cls(
            boxes=np.concatenate([p.boxes for p in full]),
            scores=np.concatenate([p.scores for p in full]),
            class_ids=np.concatenate([p.class_ids for p in full]),
            class_names=tuple(name for p in full for name in p.class_names),
            track_ids=track_ids,
            masks=masks,
        )

    # -- queries and derived copies ----------------------------------------------------

    def __len__(self) -> int:
        return int(self.boxes.shape[0])

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Detections):
            return NotImplemented

        def same(a: NDArray[Any] | None, b: NDArray[Any] | None) -> bool:
            if a is None or b is None:
                return a is b
            return a.shape == b.shape and bool(np.array_equal(a, b))

        return (
            self.class_names == other.class_names
            and same(self.boxes, other.boxes)
            and same(self.scores, other.scores)
            and same(self.class_ids, other.class_ids)
            and same(self.track_ids, other.track_ids)
            and same(self.masks, other.masks)
        )

    __hash__ = None  # type: ignore[assignment]

    def filter(self, keep: NDArray[np.bool_]) -> Detections:
        """The objects where ``keep`` (a bool array of length N) is True."""
        keep = np.asarray(keep)
        if keep.dtype != np.bool_ or keep.shape != (len(self),):
            raise ValueError(f"filter: expected a ({len(self)},) bool array, got {_describe(keep)}")
        return Detections(
            boxes=self.boxes[keep],
            scores=self.scores[keep],
            class_ids=self.class_ids[keep],
            class_names=tuple(n for n, k in zip(self.class_names, keep.tolist(), strict=True) if k),
            track_ids=None if self.track_ids is None else self.track_ids[keep],
            masks=None if self.masks is None else self.masks[keep],
        )

    def with_track_ids(self, ids: ArrayLike | None) -> Detections:
        """The same objects with ``ids`` as their track ids (None: untracked)."""
        return Detections(
            boxes=self.boxes,
            scores=self.scores,
            class_ids=self.class_ids,
            class_names=self.class_names,
            track_ids=None if ids is None else np.asarray(ids),
            masks=self.masks,
        )

    def scaled(self, sx: float, sy: float) -> Detections:
        """Boxes multiplied by ``sx`` (x) and ``sy`` (y): maps boxes from a resized frame
        back to the original. Masks are left as they are (they keep their own size)."""
        if not (np.isfinite(sx) and np.isfinite(sy) and sx > 0 and sy > 0):
            raise ValueError(f"scaled: expected finite factors > 0, got sx={sx}, sy={sy}")
        factors = np.array([sx, sy, sx, sy], dtype=np.float32)
        return self._with_boxes(self.boxes * factors)

    def clip(self, width: int, height: int) -> Detections:
        """Boxes clipped to the frame ``[0, width] x [0, height]``; a box wholly outside
        becomes a zero-area box on the border (use :meth:`filter` to drop those)."""
        if width < 0 or height < 0:
            raise ValueError(f"clip: expected width, height >= 0, got {width}x{height}")
        limits = np.array([width, height, width, height], dtype=np.float32)
        return self._with_boxes(np.clip(self.boxes, 0, limits))

    def _with_boxes(self, boxes: NDArray[np.float32]) -> Detections:
        return Detections(
            boxes=boxes,
            scores=self.scores,
            class_ids=self.class_ids,
            class_names=self.class_names,
            track_ids=self.track_ids,
            masks=self.masks,
        )
