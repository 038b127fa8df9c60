"""Detections: validation names the bad field; helpers keep the arrays aligned."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from vidshard.detection.types import Detections
from vidshard.errors import ModelError


def fields(**over: Any) -> dict[str, Any]:
    """Two valid objects; ``over`` replaces fields."""
    base: dict[str, Any] = {
        "boxes": [[0, 0, 10, 10], [5, 5, 20, 30]],
        "scores": [0.9, 0.5],
        "class_ids": [0, 1],
        "class_names": ("person", "car"),
    }
    base.update(over)
    return base


def make(n: int = 3, masks: bool = False, tracks: bool = False) -> Detections:
    rng = np.random.default_rng(n)
    xy = rng.uniform(0, 100, (n, 2))
    wh = rng.uniform(1, 50, (n, 2))
    return Detections(
        boxes=np.hstack([xy, xy + wh]),
        scores=rng.uniform(0, 1, n),
        class_ids=np.arange(n) % 2,
        class_names=tuple("ab"[i % 2] for i in range(n)),
        track_ids=np.arange(10, 10 + n) if tracks else None,
        masks=rng.uniform(size=(n, 6, 8)) > 0.5 if masks else None,
    )


@pytest.mark.parametrize(
    ("over", "message"),
    [
        # boxes with 3 coordinates
        ({"boxes": [[0, 0, 1], [0, 0, 1]]}, "boxes: expected shape (N, 4)"),
        # boxes flat
        ({"boxes": [0, 0, 1, 1, 2, 2, 3, 3]}, "boxes: expected shape (N, 4)"),
        # boxes of text
        ({"boxes": [["a", "b", "c", "d"]] * 2}, "boxes: expected numbers"),
        # boxes ragged
        ({"boxes": [[0, 0, 1, 1], [0, 0, 1]]}, "boxes: expected an array of numbers"),
        # boxes as bools
        ({"boxes": np.ones((2, 4), bool)}, "boxes: expected numbers"),
        # a NaN coordinate, in the second box
        ({"boxes": [[0, 0, 1, 1], [0, np.nan, 1, 1]]}, "boxes[1]: expected finite"),
        # an infinite coordinate
        ({"boxes": [[0, 0, np.inf, 1], [0, 0, 1, 1]]}, "boxes[0]: expected finite"),
        # a float64 beyond float32's range becomes inf: refused, not stored as inf
        ({"boxes": [[0, 0, 1e39, 1], [0, 0, 1, 1]]}, "boxes[0]: expected finite"),
        # x2 < x1 (an xywh box read as xyxy)
        ({"boxes": [[0, 0, 1, 1], [50, 0, 10, 1]]}, "boxes[1]: expected x2 >= x1"),
        # y2 < y1
        ({"boxes": [[0, 9, 1, 1], [0, 0, 1, 1]]}, "boxes[0]: expected x2 >= x1 and y2 >= y1"),
        # one score for two boxes
        ({"scores": [0.5]}, "scores: expected shape (2,)"),
        # scores as a column
        ({"scores": [[0.5], [0.5]]}, "scores: expected shape (2,)"),
        # a logit, not a probability
        ({"scores": [0.5, 1.5]}, "scores[1]: expected a value in [0, 1]"),
        # a negative score
        ({"scores": [-0.1, 0.5]}, "scores[0]: expected a value in [0, 1]"),
        # a NaN score
        ({"scores": [0.1, np.nan]}, "scores[1]: expected a value in [0, 1]"),
        # text scores
        ({"scores": ["high", "low"]}, "scores: expected numbers"),
        # class ids for three boxes
        ({"class_ids": [0, 1, 2]}, "class_ids: expected shape (2,)"),
        # fractional class ids
        ({"class_ids": [0.0, 1.5]}, "class_ids: expected integers"),
        # NaN class id
        ({"class_ids": [0.0, np.nan]}, "class_ids: expected finite integers"),
        # negative class id
        ({"class_ids": [0, -1]}, "class_ids[1]: expected >= 0"),
        # beyond int32
        ({"class_ids": [0, 2**40]}, "class_ids: values outside the int32 range"),
        # one name for two boxes
        ({"class_names": ("person",)}, "class_names: expected 2 names"),
        # a name that is not a string
        ({"class_names": ("person", 7)}, "class_names[1]: expected str"),
        # a bare string instead of a sequence of names
        ({"class_names": "ab"}, "class_names: expected a sequence"),
        # not a sequence at all
        ({"class_names": None}, "class_names: expected a sequence"),
        # one class id with two names in the same frame
        ({"class_ids": [3, 3]}, "class_names[1]: class_id 3 is named 'person'"),
        # track ids of the wrong length
        ({"track_ids": [1]}, "track_ids: expected shape (2,)"),
        # the same track id twice in one frame
        ({"track_ids": [4, 4]}, "track_ids: expected unique ids in a frame, got [4]"),
        # fractional track ids
        ({"track_ids": [1.0, 2.5]}, "track_ids: expected integers"),
        # masks for one object
        ({"masks": np.zeros((1, 4, 4), bool)}, "masks: expected shape (2, H, W)"),
        # a mask without the object axis
        ({"masks": np.zeros((4, 4), bool)}, "masks: expected shape (2, H, W)"),
        # probabilities, not masks: never thresholded silently
        ({"masks": np.full((2, 4, 4), 0.3)}, "masks: expected bool (or 0/1) values"),
        # ragged masks
        ({"masks": [np.zeros((4, 4)), np.zeros((3, 4))]}, "masks: expected an (N, H, W)"),
    ],
)
def test_bad_field_names_itself(over: dict[str, Any], message: str) -> None:
    with pytest.raises(ModelError) as info:
        Detections(**fields(**over))
    assert str(info.value).startswith(message), str(info.value)


def test_coerces_array_likes_to_the_stored_dtypes() -> None:
    masks = np.zeros((2, 3, 4), dtype=np.uint8)
    masks[1, 0, 0] = 1
    dets = Detections(**fields(track_ids=[7.0, 8.0], masks=masks, class_names=["p", "c"]))
    assert dets.boxes.dtype == np.float32 and dets.boxes.shape == (2, 4)
    assert dets.scores.dtype == np.float32
    assert dets.class_ids.dtype == np.int32
    assert dets.track_ids is not None and dets.track_ids.dtype == np.int64
    assert dets.track_ids.tolist() == [7, 8]
    assert dets.masks is not None and dets.masks.dtype == np.bool_
    assert dets.masks.sum() == 1 and dets.masks[1, 0, 0]
    assert dets.class_names == ("p", "c")
    assert len(dets) == 2


def test_arrays_are_read_only_but_the_callers_are_not_touched() -> None:
    boxes = np.array([[0, 0, 1, 1]], dtype=np.float32)
    dets = Detections(boxes=boxes, scores=[1.0], class_ids=[0], class_names=("a",))
    with pytest.raises(ValueError, match="read-only"):
        dets.boxes[0, 0] = 5
    assert boxes.flags.writeable
    with pytest.raises(AttributeError):
        dets.scores = np.zeros(1, np.float32)  # type: ignore[misc]


def test_zero_area_and_empty_inputs_are_valid() -> None:
    # a point box (x1 == x2, y1 == y2) is allowed
    assert len(Detections(boxes=[[3, 3, 3, 3]], scores=[0], class_ids=[0], class_names=("a",)))
    # plain empty lists for every field
    dets = Detections(boxes=[], scores=[], class_ids=[], class_names=(), track_ids=[])
    assert len(dets) == 0 and dets.boxes.shape == (0, 4)
    assert dets.track_ids is not None and dets.track_ids.shape == (0,)


@pytest.mark.parametrize("hw", [None, (4, 6)])
def test_empty(hw: tuple[int, int] | None) -> None:
    dets = Detections.empty(with_masks_hw=hw)
    assert len(dets) == 0
    assert dets.boxes.shape == (0, 4) and dets.track_ids is None
    if hw is None:
        assert dets.masks is None
    else:
        assert dets.masks is not None and dets.masks.shape == (0, *hw)


def test_filter_keeps_every_field_aligned() -> None:
    dets = make(4, masks=True, tracks=True)
    keep = np.array([True, False, False, True])
    kept = dets.filter(keep)
    assert len(kept) == 2
    np.testing.assert_array_equal(kept.boxes, dets.boxes[[0, 3]])
    np.testing.assert_array_equal(kept.scores, dets.scores[[0, 3]])
    np.testing.assert_array_equal(kept.class_ids, dets.class_ids[[0, 3]])
    assert kept.class_names == (dets.class_names[0], dets.class_names[3])
    assert kept.track_ids is not None and kept.track_ids.tolist() == [10, 13]
    assert kept.masks is not None and dets.masks is not None
    np.testing.assert_array_equal(kept.masks, dets.masks[[0, 3]])
    # nothing kept
    assert len(dets.filter(np.zeros(4, bool))) == 0


@pytest.mark.parametrize(
    "keep",
    [
        # integer indices instead of a bool mask
        np.array([0, 1]),
        # wrong length
        np.array([True, False]),
    ],
)
def test_filter_refuses_a_bad_mask(keep: np.ndarray) -> None:
    with pytest.raises(ValueError, match=r"filter: expected a \(4,\) bool array"):
        make(4).filter(keep)


def test_with_track_ids() -> None:
    dets = make(3)
    tracked = dets.with_track_ids([5, 6, 7])
    assert tracked.track_ids is not None and tracked.track_ids.tolist() == [5, 6, 7]
    assert dets.track_ids is None  # the original is unchanged
    assert tracked.with_track_ids(None).track_ids is None
    with pytest.raises(ModelError, match="track_ids"):
        dets.with_track_ids([1, 1, 2])


def test_scaled_maps_boxes_and_leaves_masks() -> None:
    dets = make(3, masks=True)
    big = dets.scaled(2.0, 0.5)
    np.testing.assert_allclose(big.boxes, dets.boxes * np.array([2, 0.5, 2, 0.5]), rtol=1e-6)
    assert big.masks is not None and dets.masks is not None
    np.testing.assert_array_equal(big.masks, dets.masks)
    assert big.boxes.dtype == np.float32
    for sx, sy in [(0, 1), (1, -1), (float("nan"), 1), (1, float("inf"))]:
        with pytest.raises(ValueError, match="scaled: expected finite factors > 0"):
            dets.scaled(sx, sy)


def test_clip() -> None:
    dets = Detections(
        boxes=[[-5, -5, 10, 10], [90, 40, 120, 70], [200, 200, 300, 300]],
        scores=[1, 1, 1],
        class_ids=[0, 0, 0],
        class_names=("a", "a", "a"),
    )
    clipped = dets.clip(100, 50)
    assert clipped.boxes.tolist() == [
        [0, 0, 10, 10],  # inside after clipping its negative corner
        [90, 40, 100, 50],  # cut at the right and bottom edges
        [100, 50, 100, 50],  # wholly outside: a zero-area box on the corner
    ]
    with pytest.raises(ValueError, match="clip"):
        dets.clip(-1, 10)


def test_concat() -> None:
    a, b = make(2, masks=True, tracks=True), make(3, masks=True, tracks=False)
    b = b.with_track_ids([50, 51, 52])
    both = Detections.concat([a, Detections.empty(), b])  # an empty part is ignored
    assert len(both) == 5
    np.testing.assert_array_equal(both.boxes, np.vstack([a.boxes, b.boxes]))
    assert both.class_names == a.class_names + b.class_names
    assert both.track_ids is not None and both.track_ids.tolist() == [10, 11, 50, 51, 52]
    assert both.masks is not None and both.masks.shape == (5, 6, 8)
    assert len(Detections.concat([])) == 0
    only_empty = Detections.empty((2, 2))
    assert Detections.concat([only_empty]) is only_empty


@pytest.mark.parametrize(
    ("parts", "message"),
    [
        # tracked and untracked
        ([make(2, tracks=True), make(2)], "some parts have track_ids"),
        # with and without masks
        ([make(2, masks=True), make(2)], "some parts have masks"),
    ],
)
def test_concat_refuses_mixed_parts(parts: list[Detections], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Detections.concat(parts)


def test_concat_refuses_masks_of_two_sizes() -> None:
    a = make(1, masks=True)
    b = Detections(a.boxes, a.scores, a.class_ids, a.class_names, masks=np.ones((1, 2, 2)))
    with pytest.raises(ValueError, match="masks of different sizes"):
        Detections.concat([a, b])


def test_equality_compares_contents() -> None:
    assert make(3, masks=True) == make(3, masks=True)
    assert make(3) != make(3, masks=True)
    assert make(3) != make(3).with_track_ids([1, 2, 3])
    assert make(3) != make(4)
    assert make(2) != "not detections"
