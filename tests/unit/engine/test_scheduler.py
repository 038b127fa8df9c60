from concurrent.futures import Future
from pathlib import Path

import pytest

from vidshard.engine.scheduler import run_units
from vidshard.engine.units import UnitResult
from vidshard.errors import MediaError, WorkerError
from vidshard.executors.base import Executor, WorkerLost


class Unit:
    def __init__(self, unit_id: str) -> None:
        self.unit_id = unit_id


class FakeExecutor(Executor):
    """Completes units synchronously; ``failures`` maps unit id → errors to raise first."""

    def __init__(self, failures=None):
        self.failures = {k: list(v) for k, v in (failures or {}).items()}
        self.order: list[str] = []

    def start(self, slots, model, on_event):
        pass

    def submit(self, unit):
        self.order.append(unit.unit_id)
        future: Future[UnitResult] = Future()
        pending = self.failures.get(unit.unit_id)
        if pending:
            future.set_exception(pending.pop(0))
        else:
            future.set_result(UnitResult(unit.unit_id, "cpu#0", 1, 0.1, (Path(unit.unit_id),)))
        return future

    def live_slots(self):
        return ["cpu#0"]

    def shutdown(self):
        pass


def test_dependencies_run_after_their_inputs():
    units = [Unit("a"), Unit("seam"), Unit("b")]
    executor = FakeExecutor()
    done = run_units(executor, units, depends_on={"seam": ("a", "b")})
    assert set(done) == {"a", "b", "seam"}
    assert executor.order.index("seam") > max(executor.order.index("a"), executor.order.index("b"))


def test_lost_worker_is_retried():
    retried = []
    executor = FakeExecutor({"a": [WorkerLost("killed")]})
    done = run_units(executor, [Unit("a")], on_retry=lambda u, e: retried.append(u.unit_id))
    assert "a" in done
    assert retried == ["a"]
    assert executor.order == ["a", "a"]


def test_gives_up_after_max_attempts():
    executor = FakeExecutor({"a": [WorkerLost("x")] * 5})
    with pytest.raises(WorkerError, match="failed 3 times"):
        run_units(executor, [Unit("a")], max_attempts=3)


def test_other_errors_are_not_retried():
    executor = FakeExecutor({"a": [MediaError("corrupt frame 7")]})
    with pytest.raises(MediaError, match="corrupt"):
        run_units(executor, [Unit("a"), Unit("b")])
    assert executor.order.count("a") == 1


def test_a_retry_is_resubmitted_ahead_of_the_rest():
    class Recording(FakeExecutor):
        def __init__(self, failures):
            super().__init__(failures)
            self.resubmitted: list[str] = []

        def resubmit(self, unit):
            self.resubmitted.append(unit.unit_id)
            return self.submit(unit)

    executor = Recording({"b": [WorkerLost("killed")]})
    run_units(executor, [Unit("a"), Unit("b"), Unit("c")])
    assert executor.resubmitted == ["b"]  # first tries go through submit, the retry not
