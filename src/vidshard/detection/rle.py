"""COCO-style uncompressed run-length encoding of one mask, as pycocotools writes it.

``{"size": [H, W], "counts": [c0, c1, ...]}``: the mask is read in column-major (Fortran)
order, top to bottom then left to right; ``counts`` are alternating run lengths starting
with a run of zeros (0 when the first pixel is set), and they sum to ``H * W``. So
``[[0, 1], [1, 1], [0, 0]]`` reads ``0 1 0 1 1 0`` and encodes as ``[1, 1, 1, 2, 1]``.
Tools that read COCO annotations (pycocotools ``frPyObjects``, CVAT, FiftyOne) take it as is.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray


def mask_to_rle(mask: NDArray[np.bool_]) -> dict[str, list[int]]:
    """Encode a bool ``(H, W)`` mask; :func:`rle_to_mask` gives it back exactly."""
    arr = np.asarray(mask)
    if arr.dtype != np.bool_ or arr.ndim != 2:
        raise ValueError(f"mask_to_rle: expected a bool (H, W) array, got {arr.shape} {arr.dtype}")
    h, w = arr.shape
    flat = arr.ravel(order="F")
    if flat.size == 0:
        return {"size": [h, w], "counts": [0]}
    # Run boundaries: 0, every index where the value changes, and the end.
    changes = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    bounds = np.concatenate(([0], changes, [flat.size]))
    runs = np.diff(bounds).tolist()
    if flat[0]:
        runs.insert(0, 0)  # counts always start with the zeros' run
    return {"size": [h, w], "counts": runs}


def _is_int(value: object) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool | np.bool_)


def validate_rle(rle: object) -> tuple[int, int]:
    """Check an uncompressed RLE dict without decoding it; its ``(H, W)``, or ValueError."""
    if not isinstance(rle, dict):
        raise ValueError(f"RLE: expected a dict with size and counts, got {type(rle).__name__}")
    missing = {"size", "counts"} - rle.keys()
    if missing:
        raise ValueError(f"RLE: missing key(s) {sorted(missing)}")
    unknown = rle.keys() - {"size", "counts"}
    if unknown:
        raise ValueError(f"RLE: unknown key(s) {sorted(map(str, unknown))}")
    size, counts = rle["size"], rle["counts"]
    if (
        not isinstance(size, list | tuple)
        or len(size) != 2
        or not all(_is_int(v) and v >= 0 for v in size)
    ):
        raise ValueError(f"RLE size: expected [H, W], two integers >= 0, got {size!r}")
    if isinstance(counts, str | bytes):
        raise ValueError("RLE counts: compressed (string) counts are not supported")
    if not isinstance(counts, list | tuple) or not counts:
        raise ValueError(f"RLE counts: expected a non-empty list of integers, got {counts!r}")
    total = 0
    for i, c in enumerate(counts):
        if not _is_int(c) or c < 0:
            raise ValueError(f"RLE counts[{i}]: expected an integer >= 0, got {c!r}")
        total += int(c)
    h, w = int(size[0]), int(size[1])
    if total != h * w:
        raise ValueError(f"RLE counts: expected runs summing to H*W = {h * w}, got {total}")
    return h, w


def rle_to_mask(rle: dict[str, Any]) -> NDArray[np.bool_]:
    """Decode an uncompressed RLE dict into a bool ``(H, W)`` mask; ValueError if malformed."""
    h, w = validate_rle(rle)
    runs = np.asarray(rle["counts"], dtype=np.int64)
    values = np.arange(len(runs)) % 2 == 1  # the zeros' run first, then alternating
    return np.repeat(values, runs).reshape((h, w), order="F")
