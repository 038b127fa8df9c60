"""Live streams on real workers: the manager, the local pool and the real stream host.

Streams read a small clip (160x120, 25 fps) looped in real time; the detector is a fake
class detector from a ``file.py`` (``stream_fixtures.DETECTORS``). Bounds are generous
(CI's two cores are shared): the 5 s failover aim is the benchmark's to measure.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from clips import ClipSpec, write_clip
from helpers import slow_model_source
from stream_fixtures import wait_for, write_detectors
from vidshard.detection.pipeline import DetectRecipe
from vidshard.devices.spec import parse_device_spec
from vidshard.devices.types import Device, DeviceStatus
from vidshard.engine.events import DeviceQuarantined, Event, UnitStarted
from vidshard.engine.upscale import UpscaleOptions, run_upscale
from vidshard.executors.local import LocalExecutor, Supervision
from vidshard.streams.manager import StreamManager, StreamNotFound, StreamView
from vidshard.streams.options import StreamOptions
from vidshard.streams.types import StreamRecord, StreamState

WAIT_S = 60.0
CPU = Device("cpu", 0, name="cpu")
FAST_RESTARTS = Supervision(restart_backoff_s=0.1, max_backoff_s=0.5)


class NoReadings:
    """The machine's CPU load moves with the other tests: placement here is by count."""

    def snapshot(self) -> list[DeviceStatus]:
        return []


class Seen:
    """What the manager's callbacks were given, thread-safe."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.records: list[StreamRecord] = []
        self.views: list[StreamView] = []

    def record(self, record: StreamRecord) -> None:
        with self.lock:
            self.records.append(record)

    def status(self, view: StreamView) -> None:
        with self.lock:
            self.views.append(view)

    def on(self, stream_id: str, slot: str | None = None) -> list[StreamRecord]:
        with self.lock:
            return [
                r
                for r in self.records
                if r.stream_id == stream_id and (slot is None or r.slot == slot)
            ]


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, DetectRecipe, StreamOptions]:
    folder = tmp_path_factory.mktemp("streams")
    clip = write_clip(folder / "clip.mp4", ClipSpec(size_wh=(160, 120), frames=50, gop=5))
    detectors = write_detectors(folder)
    recipe = DetectRecipe(detector="class", weights=f"{detectors}:Counting")
    options = StreamOptions(model=f"{detectors}:Counting", loop=True, realtime=True)  # type: ignore[call-arg]
    return clip, recipe, options


def start_pool(
    spec: str, supervision: Supervision | None = None, events: list[Event] | None = None
) -> LocalExecutor:
    pool = LocalExecutor(supervision)
    sink = events.append if events is not None else (lambda _event: None)
    pool.start(parse_device_spec(spec, [CPU]), None, sink)
    return pool


@pytest.fixture(scope="module")
def shared_pool() -> Iterator[LocalExecutor]:
    pool = start_pool("cpu:2")
    yield pool
    pool.shutdown()


@pytest.fixture
def manage() -> Iterator[Callable[..., tuple[StreamManager, Seen]]]:
    made: list[StreamManager] = []

    def make(pool: LocalExecutor, **kwargs: object) -> tuple[StreamManager, Seen]:
        seen = Seen()
        manager = StreamManager(
            pool,
            on_record=seen.record,
            on_status=seen.status,
            monitor=NoReadings(),  # type: ignore[arg-type]
            **kwargs,  # type: ignore[arg-type]
        )
        made.append(manager)
        return manager, seen

    yield make
    for manager in made:
        manager.close()


def add(
    manager: StreamManager,
    media: tuple[Path, DetectRecipe, StreamOptions],
    *ids: str,
    **options: object,
) -> None:
    clip, recipe, base = media
    stream_options = base.model_copy(update=options) if options else base
    for stream_id in ids:
        manager.add(str(clip), stream_options, recipe, stream_id=stream_id)


def slot_of(pool: LocalExecutor, label: str) -> object:
    return next(s for s in pool.slot_states() if s.label == label)


def test_streams_are_added_and_removed_at_run_time(
    shared_pool: LocalExecutor, manage: Callable[..., tuple[StreamManager, Seen]], media: tuple
) -> None:
    manager, seen = manage(shared_pool)
    add(manager, media, "a", "b")
    wait_for(lambda: seen.on("a") and seen.on("b"), WAIT_S)
    assert manager.get("a").slot != manager.get("b").slot  # one each: the most headroom
    add(manager, media, "c")  # while the others run
    wait_for(lambda: seen.on("c"), WAIT_S)
    assert manager.get("c").status.state == StreamState.LIVE
    b_slot = manager.get("b").slot
    final = manager.remove("b")
    assert final.status.state == StreamState.STOPPED
    assert final.status.frames_processed > 0
    with pytest.raises(StreamNotFound):
        manager.get("b")
    # the others go on
    count_a, count_c = len(seen.on("a")), len(seen.on("c"))
    wait_for(lambda: len(seen.on("a")) > count_a + 5 and len(seen.on("c")) > count_c + 5, WAIT_S)
    # a slot whose last stream was removed is free again (its host ended)
    if b_slot not in {manager.get("a").slot, manager.get("c").slot}:
        wait_for(lambda: slot_of(shared_pool, b_slot).state == "idle", WAIT_S)  # type: ignore[attr-defined]
    for stream_id in ("a", "c"):
        manager.remove(stream_id)
    wait_for(lambda: all(s.state == "idle" for s in shared_pool.slot_states()), WAIT_S)
    assert manager.list() == []


def test_eight_streams_on_two_slots_are_placed_four_and_four(
    shared_pool: LocalExecutor, manage: Callable[..., tuple[StreamManager, Seen]], media: tuple
) -> None:
    manager, seen = manage(shared_pool)
    ids = [f"cam{i}" for i in range(8)]
    add(manager, media, *ids)
    per_slot: dict[str | None, int] = {}
    for view in manager.list():
        per_slot[view.slot] = per_slot.get(view.slot, 0) + 1
    assert per_slot == {"cpu#0": 4, "cpu#1": 4}
    wait_for(lambda: all(seen.on(i) for i in ids), WAIT_S)
    # every stream's results come from the slot it was placed on
    for stream_id in ids:
        assert {r.slot for r in seen.on(stream_id)} == {manager.get(stream_id).slot}
    # each slot runs one host for its four streams
    hosts = [s for s in shared_pool.slot_states() if s.pinned]
    assert len(hosts) == 2 and {s.model for s in hosts} == {"stream_detectors.py:Counting"}


def test_file_jobs_and_streams_share_one_pool(
    shared_pool: LocalExecutor,
    manage: Callable[..., tuple[StreamManager, Seen]],
    media: tuple,
    tmp_path: Path,
) -> None:
    manager, seen = manage(shared_pool)
    add(manager, media, "live")
    wait_for(lambda: seen.on("live"), WAIT_S)
    stream_slot = manager.get("live").slot
    model = tmp_path / "slow_model.py"
    model.write_text(slow_model_source("SlowNearest", 0.01))
    source = write_clip(tmp_path / "in.mp4", ClipSpec(frames=40, size_wh=(48, 32), gop=10))
    started: list[str] = []

    def make(ref):  # type: ignore[no-untyped-def]
        handle = shared_pool.job("files", ref)
        original = handle.start

        def start(slots, model_ref, on_event):  # type: ignore[no-untyped-def]
            def sink(event: Event) -> None:
                if isinstance(event, UnitStarted):
                    started.append(event.slot_label)
                on_event(event)

            original(slots, model_ref, sink)

        handle.start = start  # type: ignore[method-assign]
        return handle

    before = len(seen.on("live"))
    options = UpscaleOptions(
        model=f"{model}:SlowNearest", segment_seconds=0.4, crf=0, preset="ultrafast"
    )
    result = run_upscale(source, tmp_path / "out.mp4", options, executor=make)
    assert result.output.exists() and result.segments > 1
    # every unit of the job ran on the free slot; the stream kept its own all along
    assert started and set(started) == {"cpu#0", "cpu#1"} - {stream_slot}
    assert manager.get("live").slot == stream_slot
    assert len(seen.on("live")) > before  # results went on while the job ran
    assert manager.get("live").status.state == StreamState.LIVE


def test_a_stream_s_host_is_the_next_thing_a_busy_slot_takes(
    shared_pool: LocalExecutor,
    manage: Callable[..., tuple[StreamManager, Seen]],
    media: tuple,
    tmp_path: Path,
) -> None:
    manager, seen = manage(shared_pool)
    model = tmp_path / "slow_model.py"
    model.write_text(slow_model_source("SlowNearest", 0.05))
    source = write_clip(tmp_path / "in.mp4", ClipSpec(frames=60, size_wh=(48, 32), gop=10))
    started: list[tuple[str, float]] = []
    lock = threading.Lock()

    def make(ref):  # type: ignore[no-untyped-def]
        handle = shared_pool.job("files", ref)
        original = handle.start

        def start(slots, model_ref, on_event):  # type: ignore[no-untyped-def]
            def sink(event: Event) -> None:
                if isinstance(event, UnitStarted):
                    with lock:
                        started.append((event.slot_label, time.monotonic()))
                on_event(event)

            original(slots, model_ref, sink)

        handle.start = start  # type: ignore[method-assign]
        return handle

    options = UpscaleOptions(
        model=f"{model}:SlowNearest", segment_seconds=0.4, crf=0, preset="ultrafast"
    )
    job = threading.Thread(
        target=run_upscale, args=(source, tmp_path / "out.mp4", options), kwargs={"executor": make}
    )
    job.start()
    # both slots run a unit of the job: the stream has to wait for one of them
    wait_for(lambda: len({label for label, _ in started}) == 2, WAIT_S)
    added_at = time.monotonic()
    add(manager, media, "late")
    stream_slot = manager.get("late").slot
    wait_for(lambda: seen.on("late"), WAIT_S)
    job.join(WAIT_S)
    with lock:
        after = [label for label, at in started if at > added_at]
    # the job went on, on the other slot alone: the host was the next thing its slot took
    assert after and stream_slot not in after
    assert (tmp_path / "out.mp4").exists()


def test_a_killed_worker_s_streams_move_to_the_other_slot(
    manage: Callable[..., tuple[StreamManager, Seen]], media: tuple
) -> None:
    pool = start_pool("cpu:2", FAST_RESTARTS)
    try:
        manager, seen = manage(pool)
        clip, recipe, _options = media
        tracked = DetectRecipe(detector="class", weights=recipe.weights, tracker="bytetrack")
        for stream_id in ("a", "b", "c", "d"):
            manager.add(
                str(clip), media[2].model_copy(update={"track": True}), tracked, stream_id=stream_id
            )
        wait_for(lambda: all(seen.on(i) for i in "abcd"), WAIT_S)
        victims = {v.stream_id for v in manager.list() if v.slot == "cpu#1"}
        assert len(victims) == 2
        pid = slot_of(pool, "cpu#1").pid  # type: ignore[attr-defined]
        os.kill(pid, signal.SIGKILL)
        # results resume on cpu#0, within a generous bound; ids start over there
        wait_for(lambda: all(seen.on(i, "cpu#0") for i in victims), 30.0)
        for stream_id in victims:
            first_there = seen.on(stream_id, "cpu#0")[0]
            assert first_there.tracker_started
            view = manager.get(stream_id)
            assert view.slot == "cpu#0" and view.failovers == 1
        assert any(
            v.status.reason.startswith("moved from cpu#1: worker lost")
            for v in seen.views
            if v.stream_id in victims
        )
        # the others never moved
        assert all(manager.get(i).failovers == 0 for i in set("abcd") - victims)
        # the dead slot's worker restarts: a slot that came back gets new streams first
        wait_for(lambda: slot_of(pool, "cpu#1").state == "idle", WAIT_S)  # type: ignore[attr-defined]
        add(manager, media, "e")
        assert manager.get("e").slot == "cpu#1"
        wait_for(lambda: seen.on("e", "cpu#1"), WAIT_S)
    finally:
        pool.shutdown()


def test_a_quarantined_device_gets_no_streams(
    manage: Callable[..., tuple[StreamManager, Seen]], media: tuple
) -> None:
    pool = start_pool("cpu:2", Supervision(restart_backoff_s=0.1, max_consecutive_failures=2))
    try:
        manager, seen = manage(pool)
        add(manager, media, "a", "b")
        wait_for(lambda: seen.on("a") and seen.on("b"), WAIT_S)
        first, second = manager.get("a").slot, manager.get("b").slot
        assert first and second and first != second
        # one death on the device "cpu" (both slots are on it): a moves to b's slot
        os.kill(slot_of(pool, first).pid, signal.SIGKILL)  # type: ignore[attr-defined]
        wait_for(lambda: manager.get("a").slot == second, WAIT_S)
        # the dead slot comes back and takes the next stream
        wait_for(lambda: slot_of(pool, first).state == "idle", WAIT_S)  # type: ignore[attr-defined]
        add(manager, media, "c")
        assert manager.get("c").slot == first
        wait_for(lambda: seen.on("c", first), WAIT_S)
        # a second death in a row: the device is quarantined, and the stream host still
        # running on its other slot is taken off it too
        os.kill(slot_of(pool, second).pid, signal.SIGKILL)  # type: ignore[attr-defined]
        wait_for(lambda: pool.quarantined() == ["cpu"], WAIT_S)
        wait_for(lambda: all(v.slot is None for v in manager.list()), WAIT_S)
        add(manager, media, "d")  # a new stream gets no slot either
        for view in manager.list():
            assert view.slot is None
            assert view.status.state == StreamState.CONNECTING
            assert "no slot is up" in view.status.reason
        assert all(not s.pinned for s in pool.slot_states())
        assert manager.get("c").failovers == 1
    finally:
        pool.shutdown()


def test_a_pool_that_shuts_down_stops_its_streams_and_blames_no_device(
    manage: Callable[..., tuple[StreamManager, Seen]], media: tuple
) -> None:
    events: list[Event] = []
    pool = start_pool("cpu:2", Supervision(max_consecutive_failures=1), events)
    try:
        manager, seen = manage(pool)
        add(manager, media, "a", "b")
        wait_for(lambda: seen.on("a") and seen.on("b"), WAIT_S)
    finally:
        pool.shutdown()  # kills both hosting workers: its own doing, not theirs
    assert pool.quarantined() == []
    assert not [e for e in events if isinstance(e, DeviceQuarantined)]
    wait_for(lambda: all(v.status.state == StreamState.STOPPED for v in manager.list()), WAIT_S)
    assert {v.status.reason for v in manager.list()} == {"the pool shut down"}


def test_a_stream_its_host_failed_stays_failed_and_frees_its_place(
    shared_pool: LocalExecutor,
    manage: Callable[..., tuple[StreamManager, Seen]],
    media: tuple,
    tmp_path: Path,
) -> None:
    manager, _seen = manage(shared_pool, per_slot_limit=1)
    _clip, recipe, options = media
    manager.add(str(tmp_path / "missing.mp4"), options, recipe, stream_id="bad")
    wait_for(lambda: manager.get("bad").status.state == StreamState.FAILED, WAIT_S)
    view = manager.get("bad")
    assert "missing.mp4" in view.status.reason and view.failovers == 0
    # taken off its host: that host ended, and its slot counts no stream
    wait_for(lambda: all(s.state == "idle" for s in shared_pool.slot_states()), WAIT_S)
    add(manager, media, "x", "y")  # one per slot: the failed one holds no place
    assert {manager.get("x").slot, manager.get("y").slot} == {"cpu#0", "cpu#1"}
    assert manager.get("bad").status.state == StreamState.FAILED
    removed = manager.remove("bad")  # removing it keeps why it failed
    assert removed.status.state == StreamState.FAILED and "missing.mp4" in removed.status.reason
    with pytest.raises(StreamNotFound):
        manager.get("bad")
