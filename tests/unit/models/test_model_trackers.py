"""Trackers: ByteTrack ids over synthetic motion; SAM2 id bookkeeping with a scripted
propagator; the transformers SAM2 backend end to end with a tiny random-weight model.

With random weights SAM2's masks are arbitrary, so the id logic (matching, re-prompting,
forgetting, hiding empty masks) is tested with :class:`FakePropagator`, whose masks are
exact; the real model is tested for shapes, the engine contract, flat session memory and
removing objects from a live session.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from track_fixtures import (
    FakePropagator,
    Mover,
    box_mask,
    build_tiny_sam2,
    detections,
    linear_tracks,
)
from vidshard.detection.pipeline import DetectorOptions, DetectPipeline, DetectRecipe
from vidshard.detection.types import Detections
from vidshard.errors import ConfigError, ModelError
from vidshard.models.trackers import (
    ByteTracker,
    Sam2Settings,
    Sam2Tracker,
    TransformersSam2Propagator,
    build_tracker,
    greedy_match,
    mask_boxes,
)

H, W = 240, 320
FRAME = np.zeros((H, W, 3), dtype=np.uint8)

THREE = (
    Mover((10, 20, 50, 60), (2.0, 0.5), class_id=0, class_name="car", score=0.9),
    Mover((200, 30, 240, 90), (-1.5, 1.0), class_id=1, class_name="person", score=0.8),
    Mover((120, 150, 170, 190), (1.0, -1.0), class_id=2, class_name="dog", score=0.7),
)


def recipe(tracker: str, **kw: object) -> DetectRecipe:
    return DetectRecipe(detector="class", weights="det.py:Det", tracker=tracker, **kw)  # type: ignore[arg-type]


def run_bytetrack(tracker: ByteTracker, frames: Sequence[Detections | None]) -> list[Detections]:
    return [tracker.update(FRAME, dets) for dets in frames]


def ids_by_class(outputs: list[Detections]) -> dict[str, set[int]]:
    seen: dict[str, set[int]] = defaultdict(set)
    for out in outputs:
        assert out.track_ids is not None
        for name, tid in zip(out.class_names, out.track_ids.tolist(), strict=True):
            seen[name].add(tid)
    return seen


@pytest.fixture
def bytetrack() -> ByteTracker:
    tracker = ByteTracker()
    tracker.load("cpu")
    return tracker


# -- ByteTrack ------------------------------------------------------------------------


def test_bytetrack_one_stable_id_per_object(bytetrack: ByteTracker) -> None:
    frames = linear_tracks(THREE, 60, noise_px=0.7)
    outputs = run_bytetrack(bytetrack, frames)
    # every object is tracked on every frame (the first frame confirms tracks at once)
    assert [len(o) for o in outputs] == [3] * 60
    seen = ids_by_class(outputs)
    assert all(len(ids) == 1 for ids in seen.values()), seen
    assert len(set().union(*seen.values())) == 3
    # the matched detection's box, score and class come through unchanged
    for dets, out in zip(frames, outputs, strict=True):
        order = [dets.class_names.index(n) for n in out.class_names]
        np.testing.assert_array_equal(out.boxes, dets.boxes[order])
        np.testing.assert_array_equal(out.scores, dets.scores[order])
        np.testing.assert_array_equal(out.class_ids, dets.class_ids[order])


@pytest.mark.parametrize(
    ("gap", "fps", "same_id"),
    [
        (5, None, True),  # 5 missing frames, default 30 fps: 30-frame buffer, comes back
        (15, None, True),  # 15 < 30: still within the buffer
        (15, 10.0, False),  # set_fps(10): the 1 s buffer is 10 frames, 15 is too long
        (8, 10.0, True),  # 8 < 10 frames at 10 fps
    ],
)
def test_bytetrack_lost_track_keeps_id_within_buffer(
    bytetrack: ByteTracker, gap: int, fps: float | None, same_id: bool
) -> None:
    if fps is not None:
        bytetrack.set_fps(fps)
        bytetrack.reset()
    absent = frozenset(range(20, 20 + gap))
    movers = (THREE[0], Mover(THREE[1].start, THREE[1].velocity, 1, "person", 0.8, absent))
    outputs = run_bytetrack(bytetrack, linear_tracks(movers, 20 + gap + 10))
    before = ids_by_class(outputs[:20])["person"]
    after = ids_by_class(outputs[20 + gap + 2 :])["person"]  # a new track confirms on hit 2
    assert len(before) == 1 and len(after) == 1
    assert (before == after) is same_id
    assert all("person" not in o.class_names for o in outputs[20 : 20 + gap])
    assert ids_by_class(outputs)["car"] == {1}  # the other object is untouched


def test_bytetrack_reset_restarts_ids(bytetrack: ByteTracker) -> None:
    frames = linear_tracks(THREE, 10)
    first = run_bytetrack(bytetrack, frames)
    bytetrack.reset()
    second = run_bytetrack(bytetrack, frames)
    assert set().union(*ids_by_class(first).values()) == {1, 2, 3}
    assert all(a == b for a, b in zip(first, second, strict=True))
    # a new object: id 4 while the tracker remembers 1..3, id 1 after a reset
    lone = linear_tracks([Mover((260, 180, 300, 220), (0.0, 0.0), 3, "cup")], 3)
    assert ids_by_class(run_bytetrack(bytetrack, lone)) == {"cup": {4}}
    bytetrack.reset()
    assert ids_by_class(run_bytetrack(bytetrack, lone)) == {"cup": {1}}


def test_bytetrack_carries_masks_and_treats_none_as_no_detections(bytetrack: ByteTracker) -> None:
    frames = linear_tracks(THREE[:2], 12, frame_hw=(H, W))
    gapped: list[Detections | None] = [*frames[:6], None, None, *frames[8:]]
    outputs = run_bytetrack(bytetrack, gapped)
    for dets, out in zip(gapped, outputs, strict=True):
        if dets is None:  # nothing to take boxes (or masks) from: no tracks on this frame
            assert len(out) == 0 and out.track_ids is not None and out.track_ids.shape == (0,)
            continue
        assert out.masks is not None and out.masks.dtype == np.bool_
        order = [dets.class_names.index(n) for n in out.class_names]
        assert dets.masks is not None
        np.testing.assert_array_equal(out.masks, dets.masks[order])
    assert ids_by_class(outputs) == {"car": {1}, "person": {2}}


@pytest.mark.parametrize(
    ("call", "error"),
    [
        ("update-before-load", ModelError),  # no tracker until load()
        ("gray-frame", ModelError),  # (H, W) instead of (H, W, 3)
        ("float-frame", ModelError),  # float32 instead of uint8
        ("fps-zero", ConfigError),  # set_fps(0)
    ],
)
def test_bytetrack_refuses(call: str, error: type[Exception]) -> None:
    tracker = ByteTracker()
    if call != "update-before-load":
        tracker.load("cpu")
    with pytest.raises(error):
        if call == "update-before-load":
            tracker.update(FRAME, detections([[0, 0, 10, 10]]))
        elif call == "gray-frame":
            tracker.update(FRAME[..., 0], detections([[0, 0, 10, 10]]))
        elif call == "float-frame":
            tracker.update(FRAME.astype(np.float32), detections([[0, 0, 10, 10]]))
        else:
            tracker.set_fps(0)


# -- SAM2 bookkeeping (scripted propagator) -------------------------------------------


def sam2(fake: FakePropagator, **kw: object) -> Sam2Tracker:
    tracker = Sam2Tracker(fake, **kw)  # type: ignore[arg-type]
    tracker.load("cpu")
    tracker.reset()
    return tracker


def test_geometry_helpers() -> None:
    masks = np.zeros((3, 6, 8), dtype=np.bool_)
    masks[0, 2, 3] = True  # one pixel: 1x1 box
    masks[1, 1:4, 2:7] = True
    boxes, nonempty = mask_boxes(masks)
    np.testing.assert_array_equal(boxes, [[3, 2, 4, 3], [2, 1, 7, 4], [0, 0, 0, 0]])
    assert nonempty.tolist() == [True, True, False]
    # one to one, highest IoU first: detection 1 fits object 0 better than detection 0 does
    dets = [[0, 0, 10, 10], [1, 0, 11, 10], [50, 50, 60, 60]]
    objs = [[1, 0, 11, 10], [0, 0, 9, 10]]
    assert greedy_match(np.array(dets), np.array(objs), 0.5) == [(1, 0), (0, 1)]
    assert greedy_match(np.zeros((0, 4)), np.array(objs), 0.5) == []


def test_sam2_ids_stable_between_detection_frames() -> None:
    # the propagator moves masks as the objects move: a well-working SAM2
    movers = (THREE[0], Mover(THREE[1].start, THREE[0].velocity, 1, "person", 0.8))
    frames = linear_tracks(movers, 12, noise_px=0.5)
    fake = FakePropagator(velocity=THREE[0].velocity)
    tracker = sam2(fake)
    outputs = [tracker.update(FRAME, dets if t % 3 == 0 else None) for t, dets in enumerate(frames)]
    for t, out in enumerate(outputs):
        assert out.track_ids is not None and out.track_ids.tolist() == [1, 2]
        assert out.class_names == ("car", "person") and out.class_ids.tolist() == [0, 1]
        np.testing.assert_allclose(out.scores, [0.9, 0.8])
        truth = np.stack([m.box(t) for m in movers])
        np.testing.assert_allclose(out.boxes, truth, atol=1.6)  # noise + rounding to pixels
        assert out.masks is None  # masks=False
    # created on frame 0, re-prompted with the fresh box on every detection frame, never more
    assert [(c.frame_index, sorted(c.prompts)) for c in fake.calls if c.prompts] == [
        (0, [1, 2]),
        (3, [1, 2]),
        (6, [1, 2]),
        (9, [1, 2]),
    ]
    np.testing.assert_allclose(fake.calls[3].prompts[1], frames[3].boxes[0])


@pytest.mark.parametrize(
    ("box", "same_id"),
    [
        ([10, 10, 30, 20], True),  # inside the object's box, IoU exactly 0.5
        ([16, 10, 36, 30], True),  # shifted 6 px: IoU 0.538
        ([17, 10, 37, 30], False),  # shifted 7 px: IoU 0.481, a new object
        ([100, 100, 120, 120], False),  # elsewhere
    ],
)
def test_sam2_match_threshold(box: list[float], same_id: bool) -> None:
    fake = FakePropagator()
    tracker = sam2(fake)
    tracker.update(FRAME, detections([[10, 10, 30, 30]]))
    out = tracker.update(FRAME, detections([box], scores=[0.6]))
    assert out.track_ids is not None
    assert out.track_ids.tolist() == ([1] if same_id else [1, 2])
    assert fake.calls[1].prompts == {(1 if same_id else 2): box}
    # the matched object takes the new score; an unmatched one keeps its own
    assert out.scores.tolist() == pytest.approx([0.6] if same_id else [0.9, 0.6])


def test_sam2_reprompt_off_keeps_following_masks() -> None:
    fake = FakePropagator(velocity=(1.0, 0.0))
    tracker = sam2(fake, settings=Sam2Settings(reprompt_matched=False))
    for t in range(7):
        dets = detections([[10 + t, 10, 30 + t, 30]]) if t % 3 == 0 else None
        out = tracker.update(FRAME, dets)
        assert out.track_ids is not None and out.track_ids.tolist() == [1]
    assert [c.prompts for c in fake.calls] == [{1: [10, 10, 30, 30]}] + [{}] * 6


def test_sam2_drops_empty_masks_and_keeps_their_ids() -> None:
    fake = FakePropagator(hidden={2: {1}, 3: {1, 2}})
    tracker = sam2(fake, masks=True)
    first = tracker.update(FRAME, detections([[10, 10, 30, 30], [50, 50, 80, 90]]))
    ids = [tracker.update(FRAME, None) for _ in range(4)]
    got = [o.track_ids.tolist() for o in [first, *ids] if o.track_ids is not None]
    assert got == [[1, 2], [1, 2], [2], [], [1, 2]]
    assert ids[2].masks is not None and ids[2].masks.shape == (0, H, W)


@pytest.mark.parametrize(
    ("missed", "seconds", "forgotten_at"),
    [
        (2, 0.5, 5),  # at 10 fps 0.5 s is 5 frames: missed on frames 1..5, forgotten on 5
        (2, 0.0, 2),  # no time limit: forgotten on the 2nd detection frame without it
        (6, 0.0, 6),  # six misses needed
        (20, 0.5, None),  # never within these 9 frames
    ],
)
def test_sam2_forgets_objects_detections_no_longer_find(
    missed: int, seconds: float, forgotten_at: int | None
) -> None:
    fake = FakePropagator()
    settings = Sam2Settings(forget_after_missed=missed, forget_after_s=seconds)
    tracker = sam2(fake, settings=settings)
    tracker.set_fps(10)
    outputs = [tracker.update(FRAME, detections([[10, 10, 30, 30]]))]
    outputs += [tracker.update(FRAME, Detections.empty()) for _ in range(8)]
    forgets = [c.frame_index for c in fake.calls if c.forget == [1]]
    assert forgets == ([] if forgotten_at is None else [forgotten_at])
    tracked = [o.track_ids.tolist() == [1] for o in outputs if o.track_ids is not None]
    end = 9 if forgotten_at is None else forgotten_at
    assert tracked == [True] * end + [False] * (9 - end)
    # a detection at the same place later: the old id if still known, else a new one
    again = tracker.update(FRAME, detections([[10, 10, 30, 30]]))
    assert again.track_ids is not None
    assert again.track_ids.tolist() == ([1] if forgotten_at is None else [2])


def test_sam2_masks_flag_and_reset() -> None:
    fake = FakePropagator()
    with_masks = sam2(fake, masks=True)
    out = with_masks.update(
        FRAME, detections([[10, 10, 30, 30]], class_ids=[5], class_names=["cup"])
    )
    assert out.masks is not None and out.masks.shape == (1, H, W) and out.masks.dtype == np.bool_
    np.testing.assert_array_equal(out.masks[0], box_mask(np.array([10, 10, 30, 30]), (H, W)))
    np.testing.assert_array_equal(out.boxes, [[10, 10, 30, 30]])
    with_masks.update(FRAME, detections([[100, 100, 130, 130]]))
    with_masks.reset()  # a new segment: ids from 1, frame indices from 0, a new session
    again = with_masks.update(FRAME, detections([[100, 100, 130, 130]]))
    assert again.track_ids is not None and again.track_ids.tolist() == [1]
    assert fake.starts == 2 and fake.calls[-1].frame_index == 0
    without = sam2(FakePropagator(), masks=False)
    assert without.update(FRAME, detections([[10, 10, 30, 30]])).masks is None


def test_sam2_without_objects_skips_the_model_and_checks_frames() -> None:
    fake = FakePropagator()
    tracker = sam2(fake)
    out = tracker.update(FRAME, Detections.empty())
    assert len(out) == 0 and out.track_ids is not None and fake.calls == []
    tracker.update(FRAME, detections([[0, 0, 0, 10]]))  # zero-area box: nothing to prompt
    assert fake.calls == []
    with pytest.raises(ModelError, match="320x240"):
        tracker.update(np.zeros((10, 10, 3), np.uint8), None)


class ListDetector:
    """Returns the detections of ``by_frame`` for each frame, keyed by its first pixel."""

    name = "list"

    def __init__(self, by_frame: list[Detections]) -> None:
        self.by_frame = by_frame
        self.seen: list[int] = []

    def load(self, device: str) -> None:
        pass

    def detect(self, frames: np.ndarray) -> list[Detections]:
        self.seen += [int(f[0, 0, 0]) for f in frames]
        return [self.by_frame[int(f[0, 0, 0])] for f in frames]


def numbered_frames(n: int, hw: tuple[int, int], seed: int = 0) -> list[tuple[int, np.ndarray]]:
    rng = np.random.default_rng(seed)
    frames = rng.integers(0, 256, (n, *hw, 3), dtype=np.uint8)
    frames[:, 0, 0, 0] = np.arange(n)  # the detector reads its frame number here
    return list(enumerate(frames))


def test_sam2_in_the_pipeline_gets_detections_every_nth_frame() -> None:
    movers = (Mover((20, 20, 60, 60), (1.0, 1.0)),)
    detector = ListDetector(linear_tracks(movers, 10, noise_px=0.0))
    fake = FakePropagator(velocity=(1.0, 1.0))
    r = recipe("sam2", sam2="unused", detection_frequency=4, options=DetectorOptions(batch_size=3))
    pipeline = DetectPipeline(detector, Sam2Tracker(fake), r)
    results = list(pipeline.run(numbered_frames(10, (H, W))))
    assert [i for i, _ in results] == list(range(10))
    assert detector.seen == [0, 4, 8]
    assert [c.frame_index for c in fake.calls if c.prompts] == [0, 4, 8]
    assert all(d.track_ids is not None and d.track_ids.tolist() == [1] for _, d in results)


@pytest.mark.parametrize(
    ("name", "kw", "expected"),
    [
        ("bytetrack", {}, ByteTracker),  # detections on every frame
        ("sam2", {"sam2": "/models/sam2", "masks": True}, Sam2Tracker),  # follows by itself
        ("sam2", {}, ConfigError),  # no --sam2 folder
        ("none", {}, ConfigError),  # the pipeline never asks for "none"
    ],
)
def test_build_tracker(name: str, kw: dict[str, object], expected: type) -> None:
    if issubclass(expected, Exception):
        with pytest.raises(expected):
            build_tracker(name, **kw)
        return
    tracker = build_tracker(name, **kw)
    assert isinstance(tracker, expected)
    assert tracker.needs_detections_every_frame is (name == "bytetrack")
    if isinstance(tracker, Sam2Tracker):
        assert tracker.masks is True
        assert isinstance(tracker.propagator, TransformersSam2Propagator)


def test_import_is_light() -> None:
    code = (
        "import sys, vidshard.models.trackers as t; t.build_tracker; "
        "print([m for m in ('torch', 'ultralytics', 'transformers') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# -- SAM2 through transformers, tiny random weights -----------------------------------


@pytest.fixture(scope="module")
def tiny_sam2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_sam2(tmp_path_factory.mktemp("sam2") / "tiny")


@pytest.mark.parametrize("masks", [True, False])
def test_sam2_real_model_end_to_end(tiny_sam2: Path, masks: bool) -> None:
    hw = (48, 64)
    movers = (Mover((5, 5, 25, 25), (1.0, 0.5)), Mover((35, 20, 60, 44), (-1.0, 0.0)))
    detector = ListDetector(linear_tracks(movers, 8))
    r = recipe("sam2", sam2=str(tiny_sam2), detection_frequency=3, masks=masks)
    pipeline = DetectPipeline(detector, build_tracker("sam2", str(tiny_sam2), masks=masks), r)
    pipeline.load("cpu")
    results = list(pipeline.run(numbered_frames(8, hw)))
    assert [i for i, _ in results] == list(range(8)) and detector.seen == [0, 3, 6]
    for _, dets in results:
        assert dets.track_ids is not None and set(dets.track_ids.tolist()) <= set(range(1, 7))
        assert np.all(dets.boxes[:, 2:] <= [hw[1], hw[0]]) and np.all(dets.boxes >= 0)
        if masks:
            assert dets.masks is not None and dets.masks.dtype == np.bool_
            assert dets.masks.shape == (len(dets), *hw)
            np.testing.assert_array_equal(dets.boxes, mask_boxes(dets.masks)[0])
        else:
            assert dets.masks is None


def test_sam2_session_memory_stays_flat(tiny_sam2: Path) -> None:
    prop = TransformersSam2Propagator(tiny_sam2, max_conditioning_frames=2)
    prop.load("cpu")
    prop.start()
    frames = numbered_frames(17, (40, 40))
    box = np.array([8, 8, 24, 24], dtype=np.float32)
    for t, frame in frames:
        ids, masks = prop.step(frame, t, {1: box} if t % 3 == 0 else {}, ())
        assert ids == [1] and masks.shape == (1, 40, 40) and masks.dtype == np.bool_
    session = prop._session
    outputs = session.output_dict_per_obj[0]
    assert list(session.processed_frames) == [16]  # only the current frame
    assert sorted(outputs["cond_frame_outputs"]) == [12, 15]  # the last 2 prompted frames
    window = max(session_config(tiny_sam2))  # num_maskmem, max_object_pointers_in_encoder
    assert min(outputs["non_cond_frame_outputs"]) >= 16 - window
    stored = [*outputs["cond_frame_outputs"].values(), *outputs["non_cond_frame_outputs"].values()]
    assert all("high_res_masks" not in out for out in stored)
    assert [list(t) for t in session.frames_tracked_per_obj.values()] == [[16]]


def session_config(folder: Path) -> tuple[int, int]:
    config = json.loads((folder / "config.json").read_text())
    return config["num_maskmem"], config["max_object_pointers_in_encoder"]


def test_sam2_forgetting_reindexes_the_live_session(tiny_sam2: Path) -> None:
    prop = TransformersSam2Propagator(tiny_sam2)
    prop.load("cpu")
    prop.start()
    (_, f0), (_, f1), (_, f2), (_, f3) = numbered_frames(4, (32, 48))
    boxes = {i: np.array([4 * i, 4, 4 * i + 12, 20], dtype=np.float32) for i in (1, 2, 3)}
    assert prop.step(f0, 0, boxes, ())[0] == [1, 2, 3]
    ids, masks = prop.step(f1, 1, {}, [2])
    assert ids == [1, 3] and masks.shape == (2, 32, 48)
    assert prop._session.obj_ids == [1, 3] and prop._session._obj_id_to_idx == {1: 0, 3: 1}
    assert prop.step(f2, 2, {4: boxes[2]}, ())[0] == [1, 3, 4]
    assert prop.step(f3, 3, {}, [1, 3, 4])[0] == []


@pytest.mark.parametrize(
    ("setup", "match"),
    [
        ("missing", "expected a transformers SAM2 model folder"),  # no such folder
        ("empty", "expected a transformers SAM2 model folder"),  # a folder, no config.json
        ("no-weights", "cannot load SAM2 video"),  # config.json but no weights
    ],
)
def test_sam2_load_refuses_bad_folders(
    tiny_sam2: Path, tmp_path: Path, setup: str, match: str
) -> None:
    folder = tmp_path / "sam2"
    if setup != "missing":
        folder.mkdir()
    if setup == "no-weights":
        (folder / "config.json").write_text((tiny_sam2 / "config.json").read_text())
    with pytest.raises(ModelError, match=match):
        TransformersSam2Propagator(folder).load("cpu")
