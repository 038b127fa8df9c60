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


def test_discount_and_worker_down():
    tracker = ProgressTracker(frames_total=10, clock=FakeClock())
    tracker.handle(UnitProgress("u0", "cpu#0", 6))
    tracker.handle(UnitProgress("u1", "cpu#1", 3))
    tracker.handle(WorkerDown("cpu#0", "killed"))
    tracker.restart_unit("u0")  # the unit runs again elsewhere: only its own frames go
    snap = tracker.snapshot()
    assert snap.frames_done == 3
    assert not snap.slots[0].alive
    assert snap.eta_s is None  # no speed measured yet
