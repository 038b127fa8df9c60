import pytest

from vidshard.engine.events import UnitFinished, UnitProgress, UnitStarted, WorkerDown
from vidshard.engine.progress import ProgressTracker


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_fps_eta_and_slot_rates():
    clock = FakeClock()
    tracker = ProgressTracker(frames_total=100, clock=clock)
    tracker.handle(UnitStarted("u0", "cpu#0"))
    tracker.handle(UnitStarted("u1", "cpu#1"))
    tracker.handle(UnitProgress("u0", "cpu#0", 30))
    tracker.handle(UnitProgress("u1", "cpu#1", 10))
    clock.now += 1.5
    tracker.handle(UnitFinished("u0", "cpu#0", 30, seconds=1.4))
    clock.now += 0.5
    snap = tracker.snapshot()
    assert snap.frames_done == 40
    assert snap.fps == 20.0
    assert snap.eta_s == 3.0
    assert snap.fraction == 0.4
    # cpu#0: 30 frames in its 1.5 s unit; cpu#1: 10 frames, still running after 2 s
    rates = {s.label: s.fps for s in snap.slots}
    assert rates == {"cpu#0": 20.0, "cpu#1": 5.0}


def test_worker_down_and_a_rerun_keep_the_frames_done():
    tracker = ProgressTracker(frames_total=10, clock=FakeClock())
    tracker.handle(UnitProgress("u0", "cpu#0", 6))
    tracker.handle(UnitProgress("u1", "cpu#1", 3))
    tracker.handle(WorkerDown("cpu#0", "killed"))
    tracker.restart_unit("u0")  # the unit runs again elsewhere: its 6 frames stay counted
    snap = tracker.snapshot()
    assert snap.frames_done == 9
    assert not snap.slots[0].alive
    assert snap.eta_s is None  # no speed measured yet


# Each step: ("progress", unit, frames) or ("restart", unit); then the frames done it
# must show. Frames done never go down, and a rerun counts only what it adds.
@pytest.mark.parametrize(
    ("steps", "expected"),
    [
        # a rerun repeats its first 6 frames (nothing new), then goes on to the unit's end
        (
            [
                ("progress", "u0", 6),
                ("restart", "u0"),
                ("progress", "u0", 4),
                ("progress", "u0", 4),
                ("progress", "u0", 2),
            ],
            [6, 6, 6, 8, 10],
        ),
        # two deaths in a row: the best attempt so far is what counts
        (
            [
                ("progress", "u0", 5),
                ("restart", "u0"),
                ("progress", "u0", 3),
                ("restart", "u0"),
                ("progress", "u0", 7),
            ],
            [5, 5, 5, 5, 7],
        ),
        # a unit that died before reporting anything
        ([("restart", "u0"), ("progress", "u0", 3)], [0, 3]),
        # a restart of one unit leaves the others alone
        (
            [
                ("progress", "u0", 4),
                ("progress", "u1", 2),
                ("restart", "u1"),
                ("progress", "u0", 1),
                ("progress", "u1", 3),
            ],
            [4, 6, 6, 7, 8],
        ),
        # more frames than the total (a part's overlap): clamped at the total
        ([("progress", "u0", 8), ("progress", "u1", 8)], [8, 10]),
    ],
)
def test_frames_done_never_go_down(steps, expected):
    tracker = ProgressTracker(frames_total=10, clock=FakeClock())
    seen = []
    for step in steps:
        if step[0] == "progress":
            tracker.handle(UnitProgress(step[1], "cpu#0", step[2]))
        else:
            tracker.restart_unit(step[1])
        seen.append(tracker.snapshot().frames_done)
    assert seen == expected


def test_a_rerun_still_counts_for_its_slots_rate():
    clock = FakeClock()
    tracker = ProgressTracker(frames_total=10, clock=clock)
    tracker.handle(UnitStarted("u0", "cpu#0"))
    tracker.handle(UnitProgress("u0", "cpu#0", 6))
    tracker.handle(WorkerDown("cpu#0", "killed"))
    tracker.restart_unit("u0")
    tracker.handle(UnitStarted("u0", "cpu#1"))
    tracker.handle(UnitProgress("u0", "cpu#1", 10))
    clock.now += 2.0
    snap = tracker.snapshot()
    assert snap.frames_done == 10
    # cpu#1 did all 10 frames of its attempt in 2 s, whatever was counted before
    assert {s.label: s.frames for s in snap.slots} == {"cpu#0": 6, "cpu#1": 10}
    assert snap.slots[1].fps == 5.0
