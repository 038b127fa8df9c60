"""The worker entry point, in-process: the order of its steps, progress batching, serving.

A fake pipe stands in for the coordinator; the real worker runs in
``test_executor_local.py``.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.reduction import ForkingPickler
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from vidshard.devices import Device, DeviceSlot
from vidshard.engine.units import SeamUnit, SegmentUnit, UnitResult
from vidshard.errors import ModelError
from vidshard.executors import worker
from vidshard.models import ModelSpec
from vidshard.models.registry import ModelRef

SLOT = DeviceSlot(0, Device(kind="cpu"))


@dataclass
class FakeConn:
    """Hands out ``incoming`` in order (EOFError when empty); records what is sent."""

    incoming: list[Any]
    log: list[tuple[str, Any]] = field(default_factory=list)

    def recv(self) -> Any:
        if not self.incoming:
            raise EOFError
        message = self.incoming.pop(0)
        self.log.append(("recv", message[0]))
        return message

    def recv_bytes(self) -> bytes:  # the inbox reads bytes and unpickles them itself
        return bytes(ForkingPickler.dumps(self.recv()))

    def send(self, message: tuple[Any, ...]) -> None:
        self.log.append(("send", message))

    def sent(self) -> list[tuple[Any, ...]]:
        return [m for kind, m in self.log if kind == "send"]


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def monotonic(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr(worker, "time", clock)  # only the worker module's clock
    return clock


# --- progress batching -------------------------------------------------------------


@pytest.mark.parametrize(
    ("calls", "sent_before_flush", "sent_by_flush"),
    [
        # all within one interval: nothing sent until the flush, which sends the sum
        ([(0.0, 3), (0.05, 4), (0.1, 1)], [], [8]),
        # one interval passes: what is pending goes out with the call that crosses it
        ([(0.0, 3), (0.25, 4), (0.3, 2)], [7], [2]),
        # every call an interval apart: each is sent at once, nothing left to flush
        ([(0.25, 5), (0.5, 5), (0.75, 5)], [5, 5, 5], []),
        # zero-frame reports (a seam) never make a message
        ([(0.0, 0), (0.5, 0)], [], []),
    ],
)
def test_progress_is_batched(
    clock: Clock,
    calls: list[tuple[float, int]],
    sent_before_flush: list[int],
    sent_by_flush: list[int],
) -> None:
    conn = FakeConn([])
    channel = worker._Channel(conn)  # type: ignore[arg-type]
    report = channel.progress_fn("segment-00003")
    start = clock.now
    for at_s, frames in calls:
        clock.now = start + at_s
        report(frames)
    before = [m[2] for m in conn.sent()]
    report.flush()
    after = [m[2] for m in conn.sent()][len(before) :]
    assert before == sent_before_flush
    assert after == sent_by_flush
    assert all(m[:2] == ("progress", "segment-00003") for m in conn.sent())
    # nothing is lost or counted twice
    assert sum(before + after) == sum(frames for _, frames in calls)


# --- worker_main: visibility, then the model, then serving ---------------------------


class RecordingModel:
    def __init__(self, log: list[tuple[str, Any]], fail: BaseException | None = None) -> None:
        self.spec = ModelSpec(name="recording")
        self._log = log
        self._fail = fail

    def load(self, device: str) -> None:
        self._log.append(("load", device))
        if self._fail is not None:
            raise self._fail

    def run(self, batch: np.ndarray) -> np.ndarray:
        return batch


def run_worker_main(
    monkeypatch: pytest.MonkeyPatch,
    incoming: list[Any],
    fail: BaseException | None = None,
) -> FakeConn:
    """Run ``worker_main`` in this process with the side effects recorded, not applied."""
    conn = FakeConn(incoming)
    log = conn.log
    monkeypatch.setattr(
        worker,
        "signal",
        SimpleNamespace(
            SIGINT="SIGINT",
            SIG_IGN="SIG_IGN",
            signal=lambda sig, handler: log.append(("signal", (sig, handler))),
        ),
    )
    monkeypatch.setattr(
        "vidshard.devices.visibility.apply_visibility",
        lambda slot: log.append(("apply_visibility", slot.label)),
    )
    monkeypatch.setattr(
        "vidshard.devices.visibility.configure_torch_threads",
        lambda slot: log.append(("configure_torch_threads", slot.label)),
    )

    def build_model(ref: ModelRef) -> RecordingModel:
        log.append(("build_model", ref.target))
        return RecordingModel(log, fail)

    monkeypatch.setattr("vidshard.models.registry.build_model", build_model)
    worker.worker_main(SLOT, conn)  # type: ignore[arg-type]
    return conn


REF = ModelRef("class", "/models/m.py:M", ModelSpec(name="m"))


@pytest.mark.parametrize(
    "model_uses_torch",
    [
        True,  # the model imported torch: its threads are set to the slot's share
        False,  # it did not: torch is never imported for it
    ],
)
def test_worker_sets_visibility_before_it_reads_the_model(
    monkeypatch: pytest.MonkeyPatch, model_uses_torch: bool
) -> None:
    if model_uses_torch:
        monkeypatch.setitem(sys.modules, "torch", sys.modules.get("torch", object()))
    else:
        monkeypatch.delitem(sys.modules, "torch", raising=False)
    conn = run_worker_main(monkeypatch, [("model", REF), ("stop",)])
    steps = [kind if kind != "send" else f"send {value[0]}" for kind, value in conn.log]
    threads = ["configure_torch_threads"] if model_uses_torch else []
    assert steps == [
        "signal",  # Ctrl-C is the coordinator's to handle
        "apply_visibility",  # before anything can import a framework ...
        "recv",  # ... including unpickling the model recipe
        "build_model",
        "load",
        *threads,
        "send ready",
        "recv",  # stop
    ]
    assert ("signal", ("SIGINT", "SIG_IGN")) in conn.log
    assert ("load", "cpu") in conn.log
    (ready,) = conn.sent()
    assert isinstance(ready[1], int)  # pid
    assert ready[2] >= 0  # load seconds


@pytest.mark.parametrize(
    ("fail", "type_name", "text"),
    [
        # a user error in load: reported by type name, message as written
        (ModelError("weights missing"), "ModelError", "weights missing"),
        # a bug in load
        (RuntimeError("no memory"), "RuntimeError", "no memory"),
        # even a BaseException (a model calling sys.exit) is reported, not lost
        (SystemExit(3), "SystemExit", "3"),
    ],
)
def test_load_failure_is_reported_and_ends_the_worker(
    monkeypatch: pytest.MonkeyPatch, fail: BaseException, type_name: str, text: str
) -> None:
    # a unit waiting in the pipe is never served: the worker returns after reporting
    conn = run_worker_main(monkeypatch, [("model", REF), ("unit", object())], fail)
    (message,) = conn.sent()
    assert message[:3] == ("load_failed", type_name, text)
    assert type_name in message[3]  # the traceback, for the coordinator's debug log
    assert conn.incoming  # the unit was not read


# --- serving units -----------------------------------------------------------------


def seam_unit(unit_id: str) -> SeamUnit:
    return SeamUnit(unit_id, None, (0, 2), Path("l"), Path("r"), Path("o"), None, (2, 2))  # type: ignore[arg-type]


def fake_segment(unit_id: str) -> SegmentUnit:
    unit = SegmentUnit.__new__(SegmentUnit)
    object.__setattr__(unit, "unit_id", unit_id)
    return unit


@pytest.mark.parametrize(
    ("units", "expected"),
    [
        # a segment then a seam: each done, in order, progress flushed before "done"
        (
            [fake_segment("segment-0"), seam_unit("seam-0")],
            [
                ("progress", "segment-0", 5),
                ("done", "segment-0"),
                ("done", "seam-0"),
            ],
        ),
        # a failing unit is reported and the worker goes on to the next
        (
            [fake_segment("segment-bad"), fake_segment("segment-1")],
            [
                ("failed", "segment-bad", "ValueError", "boom"),
                ("progress", "segment-1", 5),
                ("done", "segment-1"),
            ],
        ),
    ],
)
def test_serve_runs_units_until_stop(
    monkeypatch: pytest.MonkeyPatch, units: list[Any], expected: list[tuple[Any, ...]]
) -> None:
    def run_segment(
        unit: SegmentUnit,
        model: object,
        progress: Callable[[int], None],
        checkpoint: Callable[[str], None] | None = None,
        cancel: object = None,
    ) -> Any:
        if unit.unit_id.endswith("bad"):
            raise ValueError("boom")
        progress(5)  # within the batching interval: only the flush sends it
        return UnitResult(unit.unit_id, "", 5, 0.1)

    def run_seam(unit: SeamUnit, progress: Callable[[int], None], cancel: object = None) -> Any:
        progress(0)
        return UnitResult(unit.unit_id, "", 2, 0.1)

    monkeypatch.setattr("vidshard.engine.segment.run_segment", run_segment)
    monkeypatch.setattr("vidshard.engine.segment.run_seam", run_seam)
    conn = FakeConn([*(("unit", u) for u in units), ("stop",), ("unit", units[0])])
    worker._serve(worker._Inbox(conn), worker._Channel(conn), model=object())  # type: ignore[arg-type]
    got = [
        (m[0], m[1].unit_id) if m[0] == "done" else m[:4] if m[0] == "failed" else m
        for m in conn.sent()
    ]
    assert got == expected
    assert len(conn.incoming) == 1  # nothing read after "stop"


def test_serve_ends_when_the_coordinator_is_gone() -> None:
    conn = FakeConn([])  # recv raises EOFError at once
    worker._serve(worker._Inbox(conn), worker._Channel(conn), model=None)  # type: ignore[arg-type]
    assert conn.sent() == []


class _Refuses:
    """Unpickles only after ``fails`` tries (an import racing another thread's fails once)."""

    fails = 0

    def __reduce__(self) -> tuple[Any, ...]:
        return (_Refuses._load, ())

    @staticmethod
    def _load() -> str:
        if _Refuses.fails > 0:
            _Refuses.fails -= 1
            raise RuntimeError("deadlock detected by _ModuleLock('vidshard.media.reader')")
        return "read"


def test_a_message_that_fails_to_unpickle_once_is_read_on_a_retry(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_Refuses, "fails", 1)
    assert worker._unpickle(bytes(ForkingPickler.dumps(("unit", _Refuses())))) == ("unit", "read")


def test_a_message_that_cannot_be_read_ends_the_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    # Dropping it would leave the coordinator waiting for its unit forever; a worker
    # that exits is a lost worker, and the unit runs again.
    monkeypatch.setattr(_Refuses, "fails", worker.UNPICKLE_ATTEMPTS)
    exits: list[int] = []

    def exit_(code: int) -> None:
        exits.append(code)
        raise SystemExit(code)

    monkeypatch.setattr(worker.os, "_exit", exit_)
    with pytest.raises(SystemExit):
        worker._unpickle(bytes(ForkingPickler.dumps(("unit", _Refuses()))))
    assert exits == [4]


# --- imports ---------------------------------------------------------------------------


def test_importing_the_worker_does_not_import_torch() -> None:
    # What a worker imports before worker_main runs: its entry point (boot), its own
    # module and the slot's type (its first message). None may pull in a framework.
    code = (
        "import sys\n"
        "import vidshard.executors.boot, vidshard.executors.worker, vidshard.devices.types\n"
        "import vidshard.engine.segment, vidshard.engine.units\n"
        "print(sorted(m for m in ('torch', 'torch_npu', 'tensorflow') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "[]"
