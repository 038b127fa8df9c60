"""One pool of slots shared by several jobs (the service's engine).

The pool starts empty workers; each job's units carry its model, a worker holding
another model restarts with the job's; concurrent jobs share the slots; a cancelled job
stops within a batch, frees its slots and leaves nothing; the pool goes on.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from tests.clips import ClipSpec, write_clip
from tests.helpers import frame_hashes, slow_model_source

from vidshard.devices.spec import parse_device_spec
from vidshard.devices.types import Device
from vidshard.engine.events import Event, UnitStarted
from vidshard.engine.upscale import UpscaleOptions, run_upscale, work_dir_for
from vidshard.errors import Cancelled, ModelError
from vidshard.executors.local import LocalExecutor

SLOW_MODEL = slow_model_source("SlowNearest", 0.03)

OPTIONS = {"segment_seconds": 0.4, "crf": 0, "preset": "ultrafast"}


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    folder = tmp_path_factory.mktemp("pool")
    (folder / "slow_model.py").write_text(SLOW_MODEL)
    source = write_clip(folder / "in.mp4", ClipSpec(frames=60, size_wh=(48, 32), gop=10))
    return folder, source, f"{folder / 'slow_model.py'}:SlowNearest"


@pytest.fixture
def pool():
    events: list[Event] = []
    executor = LocalExecutor()
    cpu = Device(kind="cpu", index=0, name="cpu")
    executor.start(parse_device_spec("cpu:2", [cpu]), None, events.append)
    yield executor
    executor.shutdown()


def upscale_on(pool: LocalExecutor, job: str, source: Path, output: Path, **options):
    opts = UpscaleOptions(**{**OPTIONS, **options})
    return run_upscale(source, output, opts, executor=lambda model: pool.job(job, model))


def test_jobs_with_different_models_share_the_pool_and_match_solo_runs(
    pool: LocalExecutor, clips: tuple[Path, Path, str], tmp_path: Path
) -> None:
    _folder, source, slow = clips
    # the same jobs, each alone with its own workers: the reference
    solo = {
        name: run_upscale(source, tmp_path / f"solo-{name}.mp4", UpscaleOptions(**options))
        for name, options in {
            "slow": {**OPTIONS, "model": slow, "devices": "cpu:2"},
            "lanczos": {**OPTIONS, "model": "lanczos", "scale": 2, "devices": "cpu:2"},
        }.items()
    }
    started: dict[str, list[str]] = {"a": [], "b": []}
    results = {}

    def run(job: str, model: str, **extra: object) -> None:
        opts = UpscaleOptions(**{**OPTIONS, "model": model, **extra})  # type: ignore[arg-type]

        def make(ref):  # type: ignore[no-untyped-def]
            handle = pool.job(job, ref)
            original = handle.start

            def start(slots, model_ref, on_event):  # type: ignore[no-untyped-def]
                def sink(event: Event) -> None:
                    if isinstance(event, UnitStarted):
                        started[job].append(event.slot_label)
                    on_event(event)

                original(slots, model_ref, sink)

            handle.start = start  # type: ignore[method-assign]
            return handle

        results[job] = run_upscale(source, tmp_path / f"{job}.mp4", opts, executor=make)

    threads = [
        threading.Thread(target=run, args=("a", slow)),
        threading.Thread(target=run, args=("b", "lanczos"), kwargs={"scale": 2}),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert frame_hashes(results["a"].output) == frame_hashes(solo["slow"].output)
    assert frame_hashes(results["b"].output) == frame_hashes(solo["lanczos"].output)
    # both jobs ran on the pool's slots, and on both of them: shared, not one slot each
    assert len(set(started["a"])) == 2
    assert started["b"]
    states = pool.slot_states()
    assert {s.state for s in states} == {"idle"}
    assert sum(s.units for s in states) == results["a"].segments + results["b"].segments
    assert pool.live_slots() and pool.queued_units() == 0


def test_cancel_stops_a_running_job_within_a_batch_and_frees_its_slots(
    pool: LocalExecutor, clips: tuple[Path, Path, str], tmp_path: Path
) -> None:
    _folder, source, slow = clips
    output = tmp_path / "cancelled.mp4"
    outcome: list[BaseException] = []

    def run() -> None:
        try:
            upscale_on(pool, "victim", source, output, model=slow)
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=run)
    thread.start()

    def all_busy() -> bool:  # every slot runs a unit of the job, with the job's model loaded
        return all(s.job == "victim" and s.state == "busy" for s in pool.slot_states())

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not all_busy():
        time.sleep(0.02)
    assert all_busy(), f"the job never ran on every slot: {pool.slot_states()}"
    pids = {s.label: s.pid for s in pool.slot_states()}
    restarts = pool.restarts
    pool.cancel_job("victim")
    # the workers stopped at the next batch (4 frames x 30 ms) by themselves: none was
    # killed or restarted, each slot has the same process, idle and ready for more
    assert all(s.job != "victim" for s in pool.slot_states())
    assert {s.label: s.pid for s in pool.slot_states()} == pids
    assert pool.restarts == restarts
    assert all(s.state == "idle" for s in pool.slot_states())
    thread.join(30)
    assert len(outcome) == 1 and isinstance(outcome[0], Cancelled)
    assert not output.exists()
    assert not work_dir_for(output).exists()  # no partial segments left
    assert pool.restarts == 0  # the workers were asked, not killed
    # the freed slots take the next job at once; the same model, so the same worker
    # processes, and units of the same names as the cancelled ones: none is cancelled
    pool.release_job("victim")
    result = upscale_on(pool, "next", source, tmp_path / "next.mp4", model=slow)
    assert result.frames == 60
    assert pool.restarts == 0


def test_a_model_that_cannot_load_fails_its_job_only(
    pool: LocalExecutor, clips: tuple[Path, Path, str], tmp_path: Path
) -> None:
    folder, source, _slow = clips
    broken = folder / "broken_model.py"
    broken.write_text(
        "from vidshard.models import ModelSpec\n"
        "from vidshard.errors import ModelError\n"
        "class Broken:\n"
        "    def __init__(self):\n"
        "        self.spec = ModelSpec(name='broken', scale=2)\n"
        "    def load(self, device):\n"
        "        raise ModelError('weights are corrupt')\n"
        "    def run(self, batch):\n"
        "        return batch\n"
    )
    output = tmp_path / "broken.mp4"
    with pytest.raises(ModelError, match="weights are corrupt"):
        upscale_on(pool, "broken", source, output, model=f"{broken}:Broken")
    assert not output.exists()
    assert pool.quarantined() == []  # a bad model is not a bad device
    result = upscale_on(pool, "fine", source, tmp_path / "fine.mp4", model="lanczos", scale=2)
    assert result.frames == 60


def test_a_cancel_never_reaches_a_later_unit_of_the_same_name(
    clips: tuple[Path, Path, str], tmp_path: Path
) -> None:
    """Two jobs have units of the same names; on one worker, cancelling the first job's
    ``segment-00000`` must not stop the second job's ``segment-00000``."""
    _folder, source, slow = clips
    pool = LocalExecutor()
    pool.start(parse_device_spec("cpu:1", [Device(kind="cpu", name="cpu")]), None, print)
    try:
        done: list[BaseException | int] = []

        def run() -> None:
            try:
                upscale_on(pool, "first", source, tmp_path / "first.mp4", model=slow)
            except BaseException as exc:
                done.append(exc)

        thread = threading.Thread(target=run)
        thread.start()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not any(
            s.state == "busy" for s in pool.slot_states()
        ):
            time.sleep(0.02)
        time.sleep(0.1)  # inside segment-00000
        pool.cancel_job("first")
        thread.join(30)
        assert len(done) == 1 and isinstance(done[0], Cancelled)
        pool.release_job("first")
        result = upscale_on(pool, "second", source, tmp_path / "second.mp4", model=slow)
        assert result.frames == 60
    finally:
        pool.shutdown()


CHATTY_MODEL = """
import logging
from vidshard.models import ModelSpec

log = logging.getLogger("chatty")


class Chatty:
    def __init__(self):
        self.spec = ModelSpec(name="chatty", scale=1)

    def load(self, device):
        log.warning("loading on %s", device)

    def run(self, batch):
        log.warning("a batch of %d", len(batch))
        return batch
"""


def test_worker_log_lines_reach_the_coordinators_logging(
    clips: tuple[Path, Path, str], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """So they print above a progress bar (rich redirects this process's output), and
    carry the slot they came from."""
    folder, source, _slow = clips
    (folder / "chatty.py").write_text(CHATTY_MODEL)
    caplog.set_level("WARNING", logger="chatty")
    options = UpscaleOptions(**{**OPTIONS, "model": f"{folder / 'chatty.py'}:Chatty"})
    run_upscale(
        source, tmp_path / "out.mp4", UpscaleOptions(**{**vars(options), "devices": "cpu:1"})
    )
    lines = [r.getMessage() for r in caplog.records if r.name == "chatty"]
    assert "[cpu#0] loading on cpu" in lines
    assert any(line.startswith("[cpu#0] a batch of ") for line in lines)
