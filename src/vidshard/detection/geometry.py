"""Box geometry shared by stitching and the trackers. Pure numpy, no per-box Python."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray


def _as_boxes(name: str, value: ArrayLike) -> NDArray[np.float64]:
    arr = np.asarray(value, dtype=np.float64)
    if arr.size == 0:
        arr = arr.reshape(0, 4)
    if arr.ndim != 2 or arr.shape[1] != 4:
        raise ValueError(f"box_iou: {name}: expected shape (N, 4) xyxy, got {arr.shape}")
    return arr


def box_area(boxes: ArrayLike) -> NDArray[np.float64]:
    """Areas of ``(N, 4)`` xyxy boxes; an inverted box counts as 0."""
    b = _as_boxes("boxes", boxes)
    width = np.clip(b[:, 2] - b[:, 0], 0, None)
    height = np.clip(b[:, 3] - b[:, 1], 0, None)
    return width * height


def box_iou(a: ArrayLike, b: ArrayLike) -> NDArray[np.float64]:
    """Intersection over union of every box in ``a`` ``(N, 4)`` with every box in ``b``
    ``(M, 4)``, both xyxy: an ``(N, M)`` float64 array. Two zero-area boxes give 0, not NaN.
    """
    aa = _as_boxes("a", a)
    bb = _as_boxes("b", b)
    top_left = np.maximum(aa[:, None, :2], bb[None, :, :2])
    bottom_right = np.minimum(aa[:, None, 2:], bb[None, :, 2:])
    wh = np.clip(bottom_right - top_left, 0, None)
    inter = wh[..., 0] * wh[..., 1]
    union = box_area(aa)[:, None] + box_area(bb)[None, :] - inter
    out: NDArray[np.float64] = np.zeros_like(inter)
    np.divide(inter, union, out=out, where=union > 0)
    return out
