"""The stream manager's bookkeeping on a stand-in pool: placement, hosts per slot,
failover, waiting for a slot, final states, counters, rebalance, records. The stand-in
runs nothing: each test plays the hosts' part (statuses, deaths) by hand. Real workers
and the real host: tests/integration/test_stream_manager.py."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import pytest

from vidshard.detection.pipeline import DetectRecipe
from vidshard.devices.types import Device, DeviceStatus
from vidshard.engine.units import StreamHostUnit, UnitResult
from vidshard.errors import Cancelled, ConfigError, ModelError
from vidshard.executors.base import PinnedRun, SlotState, WorkerLost
from vidshard.streams.manager import StreamExists, StreamManager, StreamNotFound, StreamView
from vidshard.streams.options import StreamOptions
from vidshard.streams.types import StreamRecord, StreamState, StreamStatus

RECIPE = DetectRecipe(detector="class", weights="det.py:Det")
OTHER = DetectRecipe(detector="class", weights="other.py:Other")
OPTIONS = StreamOptions(model="det.py:Det")  # type: ignore[call-arg]


@dataclass
class FakeRun:
    """One host the manager submitted: what it was sent, and the host's voice."""

    slot: str
    unit: StreamHostUnit
    run: PinnedRun
    on_message: Callable[[tuple[Any, ...]], None]
    commands: list[tuple[Any, ...]] = field(default_factory=list)
    auto_stop: bool = True  # answer a stream_remove with a final "stopped" status
    counters: dict[str, int] = field(default_factory=dict)

    def deliver(self, message: tuple[Any, ...]) -> None:
        self.commands.append(message)
        if message[0] == "stream_remove" and self.auto_stop:
            self.status(message[1], StreamState.STOPPED, "removed")

    def status(self, stream_id: str, state: StreamState, reason: str = "", **fields: Any) -> None:
        processed = self.counters.get(stream_id, 0)
        fields.setdefault("frames_processed", processed)
        status = StreamStatus(stream_id, state, reason, time.time(), slot=self.slot, **fields)
        self.on_message(("stream_status", status))

    def records(self, stream_id: str, frames: int) -> None:
        records = [StreamRecord(stream_id, i, None, 0.0, 0.0) for i in range(frames)]
        self.on_message(("stream_records", records))

    @property
    def hosted(self) -> list[str]:
        """The streams this host holds now, by what it was sent."""
        ids = [spec.stream_id for spec in self.unit.specs]
        for kind, argument in self.commands:
            if kind == "stream_add":
                ids.append(argument.stream_id)
            elif argument in ids:
                ids.remove(argument)
        return ids

    def die(self, reason: str) -> None:
        self.run.end()
        self.run.future.set_exception(WorkerLost(reason))


class FakePool:
    """What the manager uses of a LocalExecutor (and of its job handle)."""

    def __init__(self, labels: list[str]) -> None:
        self.states = {label: _state(label, "idle") for label in labels}
        self.quarantine: set[str] = set()
        self.runs: list[FakeRun] = []
        self.released: list[str] = []
        self.shut_down = False
        self._lock = threading.Lock()

    def job(self, job_id: str, model: object) -> FakePool:
        self.job_id = job_id
        return self

    def release_job(self, job_id: str) -> None:
        self.released.append(job_id)

    def submit_pinned(
        self, slot: str, unit: StreamHostUnit, on_message: Callable[[tuple[Any, ...]], None]
    ) -> PinnedRun:
        run = PinnedRun(slot)
        fake = FakeRun(slot, unit, run, on_message)
        with self._lock:
            self.runs.append(fake)
        if self.states[slot].state == "down":
            run.end()
            run.future.set_exception(WorkerLost(f"slot {slot} is down"))
        else:
            run.attach(fake.deliver)
            self.states[slot] = replace(
                self.states[slot], state="busy", pinned=True, job=self.job_id
            )
        return run

    def slot_states(self) -> list[SlotState]:
        return list(self.states.values())

    def quarantined(self) -> list[str]:
        return sorted(self.quarantine)

    def shutdown(self) -> None:
        self.shut_down = True
        for fake in self.runs:
            if not fake.run.future.done():
                fake.run.future.set_exception(Cancelled("job cancelled"))

    # --- what tests do to it ---

    def on(self, slot: str) -> list[FakeRun]:
        return [f for f in self.runs if f.slot == slot and not f.run.future.done()]

    def kill(self, slot: str, reason: str = "worker cpu#1 died running the host") -> None:
        self.states[slot] = _state(slot, "down")
        for fake in self.on(slot):
            fake.die(reason)

    def back(self, slot: str) -> None:
        self.states[slot] = _state(slot, "idle")


def _state(label: str, state: str) -> SlotState:
    device = label.split("#", maxsplit=1)[0]
    return SlotState(label, device, state, None, None, None, 0, 0, 0.0)


class NoReadings:
    def snapshot(self) -> list[DeviceStatus]:
        return []


def wait_for(condition: Callable[[], object], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "not true in time"
        time.sleep(0.01)


@pytest.fixture
def make() -> Iterator[Callable[..., tuple[StreamManager, FakePool]]]:
    managers: list[StreamManager] = []

    def build(labels: list[str], **kwargs: Any) -> tuple[StreamManager, FakePool]:
        pool = FakePool(labels)
        kwargs.setdefault("monitor", NoReadings())
        manager = StreamManager(pool, **kwargs)  # type: ignore[arg-type]
        managers.append(manager)
        return manager, pool

    yield build
    for manager in managers:
        manager.close()


def add(manager: StreamManager, *ids: str, recipe: DetectRecipe = RECIPE) -> list[StreamView]:
    return [manager.add(f"file:{i}.mp4", OPTIONS, recipe, stream_id=i) for i in ids]


def slots_of(manager: StreamManager) -> dict[str, str | None]:
    return {view.stream_id: view.slot for view in manager.list()}


def test_eight_streams_on_two_slots_share_one_host_each_four_and_four(make: Any) -> None:
    manager, pool = make(["cpu#0", "cpu#1"])
    add(manager, *[f"s{i}" for i in range(8)])
    placed = slots_of(manager)
    assert sorted(placed.values()) == ["cpu#0"] * 4 + ["cpu#1"] * 4
    assert len(pool.runs) == 2  # one host per slot: later streams were added to it
    for fake in pool.runs:
        assert sorted(fake.hosted) == sorted(i for i, s in placed.items() if s == fake.slot)


def test_a_stream_of_another_model_goes_to_another_slot(make: Any) -> None:
    manager, _pool = make(["cpu#0", "cpu#1"])
    add(manager, "a", "b")
    add(manager, "c", recipe=OTHER)
    # a and b went one to each slot; c's model is neither host's, and no slot is free
    assert manager.get("c").slot is None
    assert "another model" in manager.get("c").status.reason
    manager.remove("b")  # its slot's host ends with it: the slot is free for c's model
    wait_for(lambda: manager.get("c").slot is not None)
    assert manager.get("c").slot != manager.get("a").slot


def test_a_dead_worker_s_streams_move_to_the_other_slot(make: Any) -> None:
    manager, pool = make(["cpu#0", "cpu#1"])
    add(manager, "a", "b", "c", "d")
    victims = {i for i, s in slots_of(manager).items() if s == "cpu#1"}
    survivor = pool.on("cpu#0")[0]
    pool.kill("cpu#1", "worker cpu#1 died running the host (exit code -9)")
    wait_for(lambda: all(manager.get(i).slot == "cpu#0" for i in victims))
    for stream_id in victims:
        view = manager.get(stream_id)
        assert view.failovers == 1
        assert view.status.state == StreamState.CONNECTING
        assert view.status.reason.startswith("moved from cpu#1: worker lost: worker cpu#1 died")
    # added to the running host of cpu#0 (no new host), each as its next generation
    moved = [c[1] for c in survivor.commands if c[0] == "stream_add" and c[1].stream_id in victims]
    assert {spec.stream_id for spec in moved} == victims
    assert all(spec.generation == 1 for spec in moved)
    assert len(pool.runs) == 2
    # the others stayed where they were
    assert all(manager.get(i).failovers == 0 for i in {"a", "b", "c", "d"} - victims)


def test_with_no_slot_left_streams_wait_then_go_to_the_slot_that_comes_back(make: Any) -> None:
    manager, pool = make(["cpu#0"])
    add(manager, "a")
    pool.kill("cpu#0")
    wait_for(lambda: manager.get("a").slot is None)
    view = manager.get("a")
    assert view.status.state == StreamState.CONNECTING
    assert "no slot is up" in view.status.reason
    assert view.failovers == 1
    pool.back("cpu#0")
    wait_for(lambda: manager.get("a").slot == "cpu#0")
    assert pool.on("cpu#0")[0].unit.specs[0].generation == 1


def test_a_slot_that_comes_back_gets_new_streams_first(make: Any) -> None:
    manager, pool = make(["cpu#0", "cpu#1"])
    add(manager, "a", "b")
    pool.kill("cpu#1")
    wait_for(lambda: slots_of(manager) == {"a": "cpu#0", "b": "cpu#0"})
    pool.back("cpu#1")
    add(manager, "c", "d")
    assert slots_of(manager)["c"] == "cpu#1"
    assert slots_of(manager)["d"] == "cpu#1"  # 2 and 2 now


def test_a_failed_stream_is_not_moved(make: Any) -> None:
    manager, pool = make(["cpu#0", "cpu#1"])
    add(manager, "a", "b")
    fake = pool.on(manager.get("a").slot)[0]
    fake.status("a", StreamState.FAILED, "connection refused")
    wait_for(lambda: manager.get("a").status.state == StreamState.FAILED)
    assert ("stream_remove", "a") in fake.commands  # the host lets it go
    pool.kill(fake.slot)
    time.sleep(0.3)  # the control thread has handled the death by now (it runs at once)
    view = manager.get("a")
    assert (view.status.state, view.status.reason, view.failovers) == (
        StreamState.FAILED,
        "connection refused",
        0,
    )


def test_a_host_that_cannot_load_fails_its_streams(make: Any) -> None:
    manager, pool = make(["cpu#0"])
    add(manager, "a")
    fake = pool.on("cpu#0")[0]
    fake.run.end()
    fake.run.future.set_exception(ModelError("det.py: no class Det"))
    wait_for(lambda: manager.get("a").status.state == StreamState.FAILED)
    assert "no class Det" in manager.get("a").status.reason
    assert len(pool.runs) == 1  # not placed again: it would fail anywhere


def test_remove_returns_the_final_counters_and_forgets_the_stream(make: Any) -> None:
    manager, pool = make(["cpu#0"])
    add(manager, "a", "b")
    fake = pool.on("cpu#0")[0]
    fake.status("a", StreamState.LIVE, frames_processed=10)
    wait_for(lambda: manager.get("a").status.frames_processed == 10)
    fake.counters["a"] = 12  # the host's final report counts two more
    view = manager.remove("a")
    assert view.status.state == StreamState.STOPPED
    assert view.status.frames_processed == 12
    with pytest.raises(StreamNotFound):
        manager.get("a")
    assert [v.stream_id for v in manager.list()] == ["b"]


def test_counters_add_up_over_the_slots_a_stream_was_on(make: Any) -> None:
    manager, pool = make(["cpu#0", "cpu#1"])
    add(manager, "a")
    first = pool.on(manager.get("a").slot)[0]
    first.status("a", StreamState.LIVE, frames_processed=40, reconnects=1)
    wait_for(lambda: manager.get("a").status.frames_processed == 40)
    pool.kill(first.slot)
    wait_for(lambda: manager.get("a").failovers == 1)
    second = pool.on(manager.get("a").slot)[0]
    second.status("a", StreamState.LIVE, frames_processed=5)
    wait_for(lambda: manager.get("a").status.frames_processed == 45)
    assert manager.get("a").status.reconnects == 1
    assert manager.get("a").status.slot == second.slot


def test_records_come_from_the_stream_s_current_host_only(make: Any) -> None:
    got: list[StreamRecord] = []
    manager, pool = make(["cpu#0", "cpu#1"], on_record=got.append)
    add(manager, "a")
    first = pool.on(manager.get("a").slot)[0]
    first.records("a", 2)
    wait_for(lambda: len(got) == 2)
    assert {r.slot for r in got} == {first.slot}
    pool.kill(first.slot)
    wait_for(lambda: manager.get("a").failovers == 1)
    first.records("a", 3)  # late records of the host it left
    second = pool.on(manager.get("a").slot)[0]
    second.records("a", 1)
    wait_for(lambda: len(got) == 3)
    time.sleep(0.1)
    assert len(got) == 3 and got[-1].slot == second.slot


def test_rebalance_moves_streams_to_a_slot_that_came_back(make: Any) -> None:
    manager, pool = make(["cpu#0", "cpu#1"])
    pool.states["cpu#1"] = _state("cpu#1", "down")
    add(manager, "a", "b", "c", "d")
    assert set(slots_of(manager).values()) == {"cpu#0"}
    pool.back("cpu#1")
    moves = manager.rebalance()
    assert len(moves) == 2 and all((m[1], m[2]) == ("cpu#0", "cpu#1") for m in moves)
    assert sorted(slots_of(manager).values()) == ["cpu#0", "cpu#0", "cpu#1", "cpu#1"]
    for stream_id, _, _ in moves:
        view = manager.get(stream_id)
        assert view.failovers == 0  # a move, not a failover
        assert view.status.reason == "moved from cpu#0: rebalance"
    old = pool.on("cpu#0")[0]
    assert {c[1] for c in old.commands if c[0] == "stream_remove"} == {m[0] for m in moves}
    assert manager.rebalance() == []  # even now


def test_a_quarantined_device_gets_no_streams(make: Any) -> None:
    manager, pool = make(["cuda:0#0", "cuda:1#1"])
    pool.quarantine.add("cuda:0")
    add(manager, "a", "b", "c")
    assert set(slots_of(manager).values()) == {"cuda:1#1"}


def test_device_readings_steer_placement(make: Any) -> None:
    class Busy0:
        def snapshot(self) -> list[DeviceStatus]:
            return [
                DeviceStatus(Device("cuda", 0), utilization_pct=95.0),
                DeviceStatus(Device("cuda", 1), utilization_pct=5.0),
            ]

    manager, _pool = make(["cuda:0#0", "cuda:1#1"], monitor=Busy0())
    wait_for(lambda: manager._readings)  # read by the control thread
    add(manager, "a", "b", "c")
    assert set(slots_of(manager).values()) == {"cuda:1#1"}


def test_the_per_slot_limit_holds_streams_back(make: Any) -> None:
    manager, _pool = make(["cpu#0"], per_slot_limit=2)
    add(manager, "a", "b", "c")
    view = manager.get("c")
    assert view.slot is None and "per-slot limit" in view.status.reason
    manager.remove("a")
    wait_for(lambda: manager.get("c").slot == "cpu#0")


@pytest.mark.parametrize(
    ("stream_id", "error"),
    [
        ("../etc", ConfigError),  # not a name a file can be made from
        ("", ConfigError),
        ("a" * 65, ConfigError),
    ],
)
def test_bad_stream_ids_are_refused(make: Any, stream_id: str, error: type[Exception]) -> None:
    manager, _pool = make(["cpu#0"])
    with pytest.raises(error, match="stream id"):
        add(manager, stream_id)


def test_a_duplicate_id_and_a_closed_manager_are_refused(make: Any) -> None:
    manager, pool = make(["cpu#0"])
    add(manager, "a")
    with pytest.raises(StreamExists, match="exists already"):
        add(manager, "a")
    manager.close()
    assert pool.shut_down and pool.released == [pool.job_id]
    with pytest.raises(ConfigError, match="closed"):
        add(manager, "b")
    with pytest.raises(StreamNotFound):
        manager.get("a")


def test_close_stops_every_stream(make: Any) -> None:
    seen: list[StreamView] = []
    manager, _pool = make(["cpu#0", "cpu#1"], on_status=seen.append)
    add(manager, "a", "b", "c")
    manager.close()
    final = {v.stream_id: v.status.state for v in seen if v.status.state.is_final}
    assert final == dict.fromkeys("abc", StreamState.STOPPED)
    assert manager.list() == []


def test_close_leaves_a_failed_stream_failed(make: Any) -> None:
    seen: list[StreamView] = []
    manager, pool = make(["cpu#0", "cpu#1"], on_status=seen.append)
    add(manager, "a", "b")
    pool.on(manager.get("a").slot)[0].status("a", StreamState.FAILED, "connection refused")
    wait_for(lambda: manager.get("a").status.state == StreamState.FAILED)
    manager.close()
    last = {v.stream_id: (v.status.state, v.status.reason) for v in seen}
    assert last["a"] == (StreamState.FAILED, "connection refused")
    assert last["b"][0] == StreamState.STOPPED


def test_a_host_that_ends_by_itself_has_its_streams_placed_again(make: Any) -> None:
    manager, pool = make(["cpu#0"])
    add(manager, "a")
    fake = pool.on("cpu#0")[0]
    fake.run.end()
    pool.states["cpu#0"] = _state("cpu#0", "idle")
    fake.run.future.set_result(UnitResult(fake.unit.unit_id, "cpu#0", 0, 1.0))
    wait_for(lambda: len(pool.runs) == 2)
    assert manager.get("a").slot == "cpu#0"
    assert manager.get("a").failovers == 0


def test_a_cpu_reading_s_memory_is_ram_and_not_counted(make: Any) -> None:
    gib = 1 << 30

    class Readings:
        def snapshot(self) -> list[DeviceStatus]:
            return [
                # the machine's RAM nearly full: not a device's memory
                DeviceStatus(
                    Device("cpu", 0),
                    memory_total_bytes=100 * gib,
                    memory_used_bytes=99 * gib,
                    utilization_pct=0.0,
                ),
                DeviceStatus(Device("cuda", 0), utilization_pct=50.0),
            ]

    manager, _pool = make(["cuda:0#0", "cpu#1"], monitor=Readings())
    wait_for(lambda: manager._readings)
    add(manager, "a")
    assert slots_of(manager) == {"a": "cpu#1"}
