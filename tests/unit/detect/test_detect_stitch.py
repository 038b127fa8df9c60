"""Stitching segment-local track ids into one video's ids."""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import pytest

from vidshard.detection.geometry import box_iou
from vidshard.detection.stitch import SegmentTracks, stitch_segments
from vidshard.detection.types import Detections

SIZE = 40.0


class Obj:
    """An object moving linearly, present in frames [first, last]."""

    def __init__(self, x0: float, y0: float, vx: float, vy: float, first: int, last: int):
        self.x0, self.y0, self.vx, self.vy, self.first, self.last = x0, y0, vx, vy, first, last

    def present(self, f: int) -> bool:
        return self.first <= f <= self.last

    def box(self, f: int) -> list[float]:
        x, y = self.x0 + self.vx * f, self.y0 + self.vy * f
        return [x, y, x + SIZE, y + SIZE]


# three objects far apart, crossing the frame over 300 frames
SCENE = [
    Obj(0, 0, 1.0, 0.5, 0, 299),
    Obj(600, 100, -1.0, 0.2, 0, 299),
    Obj(100, 500, 0.5, -1.0, 0, 299),
]


def segment(
    objs: list[Obj], k: int, start: int, end: int, seed: int, hidden: dict[int, range] | None = None
) -> SegmentTracks:
    """Segment ``k`` over [start, end) tracked on its own: shuffled local ids offset by
    100*k, objects in a shuffled order in each frame, a little box jitter, and a score
    that tells which segment a frame came from."""
    rng = np.random.default_rng(seed)
    local = {o: 100 * k + int(i) + 1 for o, i in enumerate(rng.permutation(len(objs)))}
    frames = []
    for f in range(start, end):
        here = [o for o, obj in enumerate(objs) if obj.present(f)]
        here = [o for o in here if not (hidden and o in hidden and f in hidden[o])]
        rng.shuffle(here)
        if not here:
            frames.append(Detections.empty())
            continue
        boxes = np.array([objs[o].box(f) for o in here]) + rng.normal(0, 0.5, (len(here), 4))
        boxes[:, 2:] = np.maximum(boxes[:, 2:], boxes[:, :2])
        frames.append(
            Detections(
                boxes=boxes,
                scores=np.full(len(here), 0.1 * (k + 1)),
                class_ids=np.zeros(len(here)),
                class_names=("person",) * len(here),
                track_ids=[local[o] for o in here],
            )
        )
    return SegmentTracks(start, frames)


def ids_per_object(out: list[tuple[int, Detections]], objs: list[Obj]) -> dict[int, set[int]]:
    """Object index → the global ids its boxes carried, identifying objects by box."""
    seen: dict[int, set[int]] = defaultdict(set)
    for f, dets in out:
        if not len(dets):
            continue
        truth_idx = [o for o, obj in enumerate(objs) if obj.present(f)]
        iou = box_iou(dets.boxes, [objs[o].box(f) for o in truth_idx])
        assert dets.track_ids is not None
        for row, tid in enumerate(dets.track_ids.tolist()):
            assert iou[row].max() > 0.8
            seen[truth_idx[int(iou[row].argmax())]].add(tid)
    return seen


STARTS = [0, 75, 150, 225]
ENDS = [83, 158, 233, 300]  # each overlaps the next by 8 frames


def test_three_objects_over_four_segments_keep_one_id_each() -> None:
    segs = [
        segment(SCENE, k, s, e, seed=k) for k, (s, e) in enumerate(zip(STARTS, ENDS, strict=True))
    ]
    out = stitch_segments(segs)
    # every frame exactly once, in order
    assert [f for f, _ in out] == list(range(300))
    assert all(len(d) == 3 for _, d in out)
    # one id per object across every join, and three distinct ids 1..3
    seen = ids_per_object(out, SCENE)
    assert all(len(ids) == 1 for ids in seen.values()), seen
    assert sorted(next(iter(ids)) for ids in seen.values()) == [1, 2, 3]
    # overlap frames: the previous segment's first half, the next one's second half
    source = {f: round(float(d.scores[0]) * 10) - 1 for f, d in out}
    assert [source[f] for f in range(75, 83)] == [0, 0, 0, 0, 1, 1, 1, 1]
    assert [source[f] for f in range(150, 158)] == [1, 1, 1, 1, 2, 2, 2, 2]
    assert [source[f] for f in range(225, 233)] == [2, 2, 2, 2, 3, 3, 3, 3]


def test_ids_follow_first_appearance() -> None:
    # segment 0's objects numbered in order of first appearance: by frame, then position
    objs = [Obj(0, 0, 0, 0, 5, 20), Obj(300, 0, 0, 0, 2, 20), Obj(600, 0, 0, 0, 2, 20)]
    seg = segment(objs, 0, 0, 21, seed=3)
    out = stitch_segments([seg])
    first_tracked = next(d for _, d in out if len(d))
    assert out[2][0] == 2 and first_tracked is out[2][1]
    assert first_tracked.track_ids is not None
    assert sorted(first_tracked.track_ids.tolist()) == [1, 2]
    assert ids_per_object(out, objs)[0] == {3}  # the late object gets the next id


def test_an_object_only_in_a_later_segment_gets_a_new_id() -> None:
    newcomer = Obj(300, 300, 0.2, 0.2, 190, 299)  # first seen in segment 2, kept in 3
    objs = [*SCENE, newcomer]
    segs = [
        segment(objs, k, s, e, seed=10 + k)
        for k, (s, e) in enumerate(zip(STARTS, ENDS, strict=True))
    ]
    out = stitch_segments(segs)
    assert [f for f, _ in out] == list(range(300))
    seen = ids_per_object(out, objs)
    assert all(len(ids) == 1 for ids in seen.values()), seen
    assert seen[3] == {4}  # a fresh id, kept across the join of segments 2 and 3
    assert {i for ids in seen.values() for i in ids} == {1, 2, 3, 4}


@pytest.mark.parametrize(
    ("prev_last", "next_first", "same_id"),
    [
        # the object leaves before the overlap; a newcomer appears on the spot: new id
        (8, 13, False),
        # it leaves in the overlap's second frame; the newcomer appears on that frame and
        # stays: one frame together of the 8 either is seen in -> not the same object
        (13, 13, False),
        # the same object, tracked late by the next segment (warm-up): 6 of 8 frames
        # together -> the same object
        (29, 14, True),
        # the same object, lost by the previous segment's tracker near the end of the
        # overlap: 5 frames together of 8
        (16, 12, True),
    ],
)
def test_matching_needs_the_pair_seen_together(
    prev_last: int, next_first: int, same_id: bool
) -> None:
    # segment A: frames 0..19, segment B: frames 12..29; overlap 12..19 (8 frames)
    spot = [Obj(100, 100, 0, 0, 0, prev_last)]  # what A sees, standing still
    arrival = [Obj(100, 100, 0, 0, next_first, 29)]  # what B sees, on the very same spot
    a = segment(spot, 0, 0, 20, seed=1)
    b = segment(arrival, 1, 12, 30, seed=2)
    out = stitch_segments([a, b])
    assert [f for f, _ in out] == list(range(30))
    ids = {int(t) for _, d in out if d.track_ids is not None for t in d.track_ids}
    assert ids == ({1} if same_id else {1, 2})


def test_a_segment_without_detections() -> None:
    empty = SegmentTracks(75, [Detections.empty() for _ in range(75, 158)])
    segs = [
        segment(SCENE, 0, 0, 83, seed=0),
        empty,
        segment(SCENE, 2, 150, 233, seed=2),
    ]
    out = stitch_segments(segs)
    assert [f for f, _ in out] == list(range(233))
    # frames from the empty segment: no objects, still tracked (empty ids, not None)
    for f, d in out[79:154]:
        assert len(d) == 0 and d.track_ids is not None, f
    seen = ids_per_object(out, SCENE)
    # nothing links the two sides: the objects come back with new ids
    assert sorted(len(ids) for ids in seen.values()) == [2, 2, 2]
    assert {i for ids in seen.values() for i in ids} == {1, 2, 3, 4, 5, 6}


def test_masks_and_fields_pass_through() -> None:
    m = np.zeros((1, 4, 4), bool)
    m[0, 1, 1] = True
    d = Detections([[0, 0, 2, 2]], [0.7], [3], ("cat",), track_ids=[55], masks=m)
    out = stitch_segments([SegmentTracks(0, [d, d]), SegmentTracks(1, [d, d])])
    assert [f for f, _ in out] == [0, 1, 2]
    for _, got in out:
        assert got.class_names == ("cat",) and got.class_ids.tolist() == [3]
        assert got.track_ids is not None and got.track_ids.tolist() == [1]
        assert got.masks is not None and np.array_equal(got.masks, m)


def test_no_segments() -> None:
    assert stitch_segments([]) == []


def _tracked(n_frames: int) -> list[Detections]:
    d = Detections([[0, 0, 1, 1]], [1.0], [0], ("a",), track_ids=[1])
    return [d] * n_frames


@pytest.mark.parametrize(
    ("segments", "message"),
    [
        # a gap between segments: frames 10..11 would be missing
        (
            [SegmentTracks(0, _tracked(10)), SegmentTracks(12, _tracked(10))],
            "frames would be missing",
        ),
        # a segment inside its predecessor
        ([SegmentTracks(0, _tracked(10)), SegmentTracks(2, _tracked(5))], "not after segment 0"),
        # a segment overlapping two predecessors
        (
            [
                SegmentTracks(0, _tracked(10)),
                SegmentTracks(5, _tracked(10)),
                SegmentTracks(8, _tracked(10)),
            ],
            "may overlap only its predecessor",
        ),
        # boxes that were never tracked
        (
            [SegmentTracks(0, [Detections([[0, 0, 1, 1]], [1.0], [0], ("a",))])],
            "segment 0, frame 0: detections without track ids",
        ),
    ],
)
def test_bad_layouts_are_refused(segments: list[SegmentTracks], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        stitch_segments(segments)


@pytest.mark.parametrize("threshold", [0.0, -0.1, 1.5])
def test_threshold_range(threshold: float) -> None:
    with pytest.raises(ValueError, match="iou_threshold"):
        stitch_segments([SegmentTracks(0, _tracked(2))], iou_threshold=threshold)


@pytest.mark.parametrize(
    ("start", "frames", "message"),
    [
        # before the video
        (-1, _tracked(2), "start_frame >= 0"),
        # no frames
        (0, [], "expected frames"),
    ],
)
def test_segment_tracks_checks(start: int, frames: list[Detections], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SegmentTracks(start, frames)
