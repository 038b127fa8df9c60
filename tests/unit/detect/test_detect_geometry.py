"""box_iou: known values, shapes, and no NaN on degenerate boxes."""

from __future__ import annotations

import numpy as np
import pytest

from vidshard.detection.geometry import box_area, box_iou


@pytest.mark.parametrize(
    ("a", "b", "iou"),
    [
        # identical
        ([0, 0, 10, 10], [0, 0, 10, 10], 1.0),
        # disjoint
        ([0, 0, 10, 10], [20, 20, 30, 30], 0.0),
        # touching edges: no area in common
        ([0, 0, 10, 10], [10, 0, 20, 10], 0.0),
        # half of a shifted box: 50 / (100 + 100 - 50)
        ([0, 0, 10, 10], [5, 0, 15, 10], 50 / 150),
        # one inside the other: 25 / 100
        ([0, 0, 10, 10], [2, 2, 7, 7], 0.25),
        # two identical zero-area boxes: 0, not NaN
        ([3, 3, 3, 3], [3, 3, 3, 3], 0.0),
    ],
)
def test_known_values(a: list[float], b: list[float], iou: float) -> None:
    out = box_iou([a], [b])
    assert out.shape == (1, 1)
    assert out[0, 0] == pytest.approx(iou)
    assert box_iou([b], [a])[0, 0] == pytest.approx(iou)  # symmetric


def test_matrix_shape_and_order() -> None:
    a = np.array([[0, 0, 10, 10], [100, 100, 110, 110]], dtype=np.float32)
    b = np.array([[100, 100, 110, 110], [0, 0, 10, 10], [0, 0, 5, 10]], dtype=np.float32)
    out = box_iou(a, b)
    assert out.shape == (2, 3) and out.dtype == np.float64
    np.testing.assert_allclose(out, [[0, 1, 0.5], [1, 0, 0]])


def test_empty_sides() -> None:
    assert box_iou(np.zeros((0, 4)), [[0, 0, 1, 1]]).shape == (0, 1)
    assert box_iou([[0, 0, 1, 1]], []).shape == (1, 0)


def test_area_and_bad_shapes() -> None:
    np.testing.assert_array_equal(box_area([[0, 0, 2, 3], [5, 5, 4, 4]]), [6, 0])
    with pytest.raises(ValueError, match=r"box_iou: a: expected shape \(N, 4\)"):
        box_iou([[0, 0, 1]], [[0, 0, 1, 1]])
    with pytest.raises(ValueError, match=r"box_iou: b: expected shape \(N, 4\)"):
        box_iou([[0, 0, 1, 1]], [0, 0, 1, 1])
