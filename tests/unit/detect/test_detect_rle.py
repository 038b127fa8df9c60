"""COCO uncompressed RLE: pycocotools' ordering, exact round trips, malformed input refused."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from vidshard.detection.rle import mask_to_rle, rle_to_mask, validate_rle


@pytest.mark.parametrize(
    ("rows", "counts"),
    [
        # column-major: column 0 reads 0 1 0, column 1 reads 1 1 0 -> 0 1 0 1 1 0
        # (row-major would give 0 1 1 1 0 0 -> [1, 3, 2])
        ([[0, 1], [1, 1], [0, 0]], [1, 1, 1, 2, 1]),
        # first pixel set: counts start with an empty run of zeros
        ([[1, 0], [1, 0]], [0, 2, 2]),
        # only the last pixel (bottom right) set
        ([[0, 0, 0], [0, 0, 1]], [5, 1]),
        # a 1x3 row: each column is one pixel
        ([[1, 0, 1]], [0, 1, 1, 1]),
        # all zeros: one run
        ([[0, 0, 0], [0, 0, 0]], [6]),
        # all ones
        ([[1, 1, 1], [1, 1, 1]], [0, 6]),
    ],
)
def test_known_encodings(rows: list[list[int]], counts: list[int]) -> None:
    mask = np.array(rows, dtype=bool)
    rle = mask_to_rle(mask)
    assert rle == {"size": [mask.shape[0], mask.shape[1]], "counts": counts}
    np.testing.assert_array_equal(rle_to_mask(rle), mask)


def _masks() -> list[np.ndarray]:
    rng = np.random.default_rng(7)
    out = [
        np.zeros((0, 0), bool),  # no pixels at all
        np.zeros((0, 5), bool),  # no rows
        np.zeros((3, 0), bool),  # no columns
        np.zeros((1, 1), bool),
        np.ones((1, 1), bool),
        np.zeros((48, 64), bool),
        np.ones((48, 64), bool),
        np.indices((9, 11)).sum(axis=0) % 2 == 0,  # checkerboard: every run of length 1
    ]
    out += [rng.random((h, w)) < p for h, w, p in [(17, 23, 0.5), (64, 48, 0.05), (5, 200, 0.9)]]
    blob = np.zeros((120, 160), bool)
    blob[30:90, 40:100] = True  # a filled rectangle, as segmentation masks mostly are
    out.append(blob)
    # a non-contiguous view (a slice with a step) must encode as its values
    out.append((rng.random((40, 40)) < 0.3)[::2, 1::3])
    return out


@pytest.mark.parametrize("mask", _masks(), ids=lambda m: f"{m.shape}")
def test_round_trip_is_exact(mask: np.ndarray) -> None:
    rle = mask_to_rle(mask)
    assert sum(rle["counts"]) == mask.size
    assert all(c > 0 for c in rle["counts"][1:])  # no empty runs but the first
    assert all(type(c) is int for c in rle["counts"])  # plain ints: JSON-serialisable
    back = rle_to_mask(json.loads(json.dumps(rle)))
    assert back.dtype == np.bool_ and back.shape == mask.shape
    np.testing.assert_array_equal(back, mask)


@pytest.mark.parametrize(
    "mask",
    [
        # integers, not bool
        np.zeros((3, 3), np.uint8),
        # a stack of masks
        np.zeros((2, 3, 3), bool),
        # one row as a vector
        np.zeros(5, bool),
    ],
)
def test_mask_to_rle_refuses_non_bool_2d(mask: np.ndarray) -> None:
    with pytest.raises(ValueError, match=r"mask_to_rle: expected a bool \(H, W\) array"):
        mask_to_rle(mask)


@pytest.mark.parametrize(
    ("rle", "message"),
    [
        # not a dict
        ([3, 3], "RLE: expected a dict"),
        # no size
        ({"counts": [4]}, r"RLE: missing key\(s\) \['size'\]"),
        # no counts
        ({"size": [2, 2]}, r"RLE: missing key\(s\) \['counts'\]"),
        # an unknown key
        ({"size": [1, 1], "counts": [1], "area": 1}, "RLE: unknown key"),
        # size with three numbers
        ({"size": [1, 1, 1], "counts": [1]}, "RLE size: expected"),
        # negative size
        ({"size": [-1, 2], "counts": [0]}, "RLE size: expected"),
        # a float in size
        ({"size": [2.0, 2], "counts": [4]}, "RLE size: expected"),
        # bools are not integers
        ({"size": [True, True], "counts": [1]}, "RLE size: expected"),
        # compressed COCO counts (a string)
        ({"size": [2, 2], "counts": "04"}, "RLE counts: compressed"),
        # empty counts
        ({"size": [0, 0], "counts": []}, "RLE counts: expected a non-empty list"),
        # a negative run
        ({"size": [2, 2], "counts": [5, -1]}, r"RLE counts\[1\]: expected an integer >= 0"),
        # a fractional run
        ({"size": [2, 2], "counts": [1.5, 2.5]}, r"RLE counts\[0\]"),
        # runs that do not cover the mask
        (
            {"size": [2, 2], "counts": [1, 2]},
            "RLE counts: expected runs summing to H\\*W = 4, got 3",
        ),
        # runs that overflow it
        ({"size": [2, 2], "counts": [3, 2]}, "got 5"),
    ],
)
def test_bad_rle_is_refused(rle: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        rle_to_mask(rle)
    with pytest.raises(ValueError, match=message):
        validate_rle(rle)


def test_validate_rle_returns_the_size() -> None:
    assert validate_rle({"size": [3, 2], "counts": [1, 1, 1, 2, 1]}) == (3, 2)
    # numpy integers (e.g. from an array's tolist-free path) are integers too
    assert validate_rle({"size": [np.int64(1), 2], "counts": [np.int32(2)]}) == (1, 2)
