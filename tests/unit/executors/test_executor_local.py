"""LocalExecutor with real spawned workers on CPU slots.

Workers cost a second or two each to spawn, so the healthy-path tests share one module
executor; the tests that kill, crash or shut workers down start their own. The test
model (written to a .py file, as a user's model class would be) records what it saw
when loaded, and acts on the width of the frames it gets, so one model serves every case.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import CancelledError
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from clips import ClipSpec, write_clip
from vidshard.devices import Device, DeviceSlot
from vidshard.engine.events import (
    DeviceQuarantined,
    Event,
    UnitFinished,
    UnitProgress,
    UnitStarted,
    WorkerDown,
    WorkerUp,
)
from vidshard.engine.units import SegmentUnit, UnitResult
from vidshard.errors import InputError, MediaError, ModelError, WorkerError
from vidshard.executors.base import WorkerLost
from vidshard.executors.boot import WORKER_NAME_PREFIX
from vidshard.executors.local import LocalExecutor, Supervision
from vidshard.executors.slot import rebuild_error
from vidshard.media import EncodeSettings, probe
from vidshard.media.plan import Segment
from vidshard.models.registry import ModelRef, resolve_model

FRAMES = 8
HEIGHT = 32
BATCH = 4
SETTINGS = EncodeSettings(crf=0, preset="ultrafast", threads=1)

# What the test model does, by the width of the frames it is given.
NORMAL = 64  # returns the frames
SLOW = 32  # sleeps 0.3 s per batch (a unit takes about 0.6 s)
VERY_SLOW = 16  # sleeps 5 s per batch: outlasts a shortened stop timeout
RAISES_VALUE = 48  # raises ValueError: a bug in the model
RAISES_MODEL = 40  # raises ModelError: a VidshardError subclass
WRONG_SHAPE = 24  # returns half-width frames: the engine's output check refuses them
EXITS = 56  # the worker process exits with code 7 mid-unit

MODEL_SOURCE = '''\
"""Test models for the executor tests (a user's model file)."""

import json
import os
import sys
import time
from pathlib import Path

from vidshard.errors import ModelError
from vidshard.models import ModelSpec

PROBE_DIR = Path({probe_dir!r})
# Read when the worker imports this file, i.e. after its visibility is set.
IMPORT_ENV = os.environ.get("CUDA_VISIBLE_DEVICES")
TORCH_AT_IMPORT = "torch" in sys.modules
SLEEP_S = {{{slow}: 0.3, {very_slow}: 5.0}}


class Probe:
    """Records what it sees at load; refuses non-CPU devices; acts on the frame width."""

    def __init__(self):
        self.spec = ModelSpec(name="probe", scale=1)

    def load(self, device):
        keys = ("CUDA_VISIBLE_DEVICES", "ASCEND_RT_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER")
        seen = {{
            "device": device,
            "env": {{k: os.environ.get(k) for k in keys}},
            "import_env": IMPORT_ENV,
            "torch_at_import": TORCH_AT_IMPORT,
        }}
        (PROBE_DIR / f"{{os.getpid()}}.json").write_text(json.dumps(seen))
        if device != "cpu":
            raise ModelError(f"probe runs on cpu only, got {{device}}")

    def run(self, batch):
        width = batch.shape[2]
        if width in SLEEP_S:
            time.sleep(SLEEP_S[width])
        elif width == {raises_value}:
            raise ValueError("bad pixels")
        elif width == {raises_model}:
            raise ModelError("frames too dark")
        elif width == {wrong_shape}:
            return batch[:, :, ::2]
        elif width == {exits}:
            os._exit(7)
        return batch


class FailsToLoad(Probe):
    def load(self, device):
        raise ModelError("weights missing: /nowhere/w.pth")


class BrokenLoad(Probe):
    def load(self, device):
        raise RuntimeError("out of memory")


class CrashesOnLoad(Probe):
    def load(self, device):
        os._exit(3)


class Picky(Probe):
    """A bug on CPU slots, a user error on the others: the user error is the one to show."""

    def load(self, device):
        if device == "cpu":
            raise RuntimeError("segfault-ish")
        raise ModelError(f"no driver for {{device}}")
'''

# Records, in the worker, CUDA_VISIBLE_DEVICES at the moment torch is first imported.
TORCH_WATCH = """\
import json
import os
import sys


class _TorchWatch:
    def find_spec(self, name, path=None, target=None):
        probe_dir = os.environ.get("VIDSHARD_TEST_TORCH_WATCH")
        if name == "torch" and probe_dir and "torch" not in sys.modules:
            seen = {"CUDA_VISIBLE_DEVICES": os.environ.get("CUDA_VISIBLE_DEVICES")}
            path_ = os.path.join(probe_dir, f"{os.getpid()}.torch.json")
            with open(path_, "w") as f:
                json.dump(seen, f)
        return None


sys.meta_path.insert(0, _TorchWatch())
"""


def cpu(slot_id: int, cpu_threads: int | None = None) -> DeviceSlot:
    return DeviceSlot(slot_id, Device(kind="cpu"), cpu_threads=cpu_threads)


@dataclass
class Kit:
    """Clips by width, a model file, and a way to make units on them."""

    root: Path
    model_file: Path
    probe_dir: Path
    sources: dict[int, Path]
    counter: Iterator[int]

    def model(self, cls: str = "Probe") -> ModelRef:
        return resolve_model(f"{self.model_file}:{cls}")

    def unit(self, width: int = NORMAL) -> SegmentUnit:
        n = next(self.counter)
        source = self.sources[width]
        video = probe(source).video
        return SegmentUnit(
            unit_id=f"segment-w{width}-{n:03d}",
            source=source,
            video=video,
            segment=Segment(0, 0, FRAMES, 0, True, True, FRAMES),
            core_path=self.root / f"core-{n:03d}.mp4",
            seam_left_path=None,
            seam_right_path=None,
            settings=SETTINGS,
            scale=1,
            batch_size=BATCH,
        )


@pytest.fixture(scope="module")
def kit(tmp_path_factory: pytest.TempPathFactory) -> Kit:
    root = tmp_path_factory.mktemp("executor")
    probe_dir = root / "probes"
    probe_dir.mkdir()
    model_file = root / "test_models.py"
    model_file.write_text(
        MODEL_SOURCE.format(
            probe_dir=str(probe_dir),
            slow=SLOW,
            very_slow=VERY_SLOW,
            raises_value=RAISES_VALUE,
            raises_model=RAISES_MODEL,
            wrong_shape=WRONG_SHAPE,
            exits=EXITS,
        )
    )
    widths = (NORMAL, SLOW, VERY_SLOW, RAISES_VALUE, RAISES_MODEL, WRONG_SHAPE, EXITS)
    sources = {
        w: write_clip(root / f"w{w}.mp4", ClipSpec(size_wh=(w, HEIGHT), frames=FRAMES, gop=4))
        for w in widths
    }
    return Kit(root, model_file, probe_dir, sources, itertools.count())


class Events:
    """A thread-safe event log with waits."""

    def __init__(self) -> None:
        self.items: list[Event] = []
        self._cond = threading.Condition()

    def __call__(self, event: Event) -> None:
        with self._cond:
            self.items.append(event)
            self._cond.notify_all()

    def of(self, kind: type) -> list:
        with self._cond:
            return [e for e in self.items if isinstance(e, kind)]

    def wait_for(self, match: Callable[[Event], bool], timeout_s: float = 10.0) -> Event:
        """The first event that matches, waiting for it if need be."""

        def first() -> Event | None:
            return next((e for e in self.items if match(e)), None)

        with self._cond:
            event = self._cond.wait_for(first, timeout_s)
        assert event is not None, f"no matching event within {timeout_s} s; got {self.items}"
        return event

    def started(self, unit_id: str) -> UnitStarted:
        event = self.wait_for(lambda e: isinstance(e, UnitStarted) and e.unit_id == unit_id)
        assert isinstance(event, UnitStarted)
        return event

    def pids(self) -> dict[str, int]:
        return {e.slot_label: e.pid for e in self.of(WorkerUp)}


def is_worker(process: psutil.Process) -> bool:
    """A worker has ``vidshard-worker-SLOT`` on its command line (other children do not)."""
    return any(part.startswith(WORKER_NAME_PREFIX) for part in process.cmdline())


def our_children() -> set[int]:
    """Pids of this process's workers, and of any zombie child (one not reaped)."""
    pids = set()
    for child in psutil.Process().children(recursive=True):
        try:
            if child.status() == psutil.STATUS_ZOMBIE or is_worker(child):
                pids.add(child.pid)
        except psutil.NoSuchProcess:
            continue
    return pids


def assert_workers_gone(pids: set[int]) -> None:
    assert not pids & our_children(), "a worker process was left behind (or is a zombie)"


# --- one shared executor: two CPU workers, and one slot whose model refuses to load ----


@pytest.fixture(scope="module")
def shared(kit: Kit) -> Iterator[tuple[LocalExecutor, Events]]:
    events = Events()
    executor = LocalExecutor()
    slots = [cpu(0), cpu(1), DeviceSlot(2, Device(kind="cuda", index=3))]
    # The coordinator sees four GPUs; each worker must narrow that to its own slot.
    with pytest.MonkeyPatch.context() as mp_env:
        mp_env.setenv("CUDA_VISIBLE_DEVICES", "0,1,2,3")
        mp_env.delenv("CUDA_DEVICE_ORDER", raising=False)
        executor.start(slots, kit.model(), events)
    yield executor, events
    pids = set(events.pids().values())
    executor.shutdown()
    assert_workers_gone(pids)


def test_start_reports_each_worker(shared: tuple[LocalExecutor, Events]) -> None:
    executor, events = shared
    pids = events.pids()
    # both CPU workers said ready, from live processes of their own
    assert sorted(pids) == ["cpu#0", "cpu#1"]
    assert len(set(pids.values())) == 2
    assert all(psutil.pid_exists(pid) for pid in pids.values())
    assert all(e.load_seconds >= 0 for e in events.of(WorkerUp))
    # the slot whose load failed is reported down, with the model's own message ...
    down = events.of(WorkerDown)[0]
    assert down.slot_label == "cuda:3#2"
    assert "probe runs on cpu only, got cuda:0" in down.reason
    # ... is restarted with backoff, fails again, and its device is quarantined ...
    quarantined = events.wait_for(lambda e: isinstance(e, DeviceQuarantined), timeout_s=30)
    assert quarantined.device_label == "cuda:3"
    assert "3 failures in a row" in quarantined.reason
    assert [e.slot_label for e in events.of(WorkerDown)] == ["cuda:3#2"] * 3
    # ... while the others keep working
    deadline = time.monotonic() + 30
    while executor.live_slots() != ["cpu#0", "cpu#1"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert executor.live_slots() == ["cpu#0", "cpu#1"]


def read_probes(kit: Kit) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(kit.probe_dir.glob("*.json"))]


@pytest.mark.parametrize(
    ("cuda_visible", "expected"),
    [
        # a CPU slot: no accelerator visible, from before the model's module was imported
        (
            "",
            {
                "device": "cpu",
                "env": {
                    "CUDA_VISIBLE_DEVICES": "",
                    "ASCEND_RT_VISIBLE_DEVICES": "",
                    "CUDA_DEVICE_ORDER": None,
                },
                "import_env": "",
                "torch_at_import": False,
            },
        ),
        # a GPU slot: only its GPU, numbered as nvidia-smi does, seen as device 0
        (
            "3",
            {
                "device": "cuda:0",
                "env": {
                    "CUDA_VISIBLE_DEVICES": "3",
                    "ASCEND_RT_VISIBLE_DEVICES": None,
                    "CUDA_DEVICE_ORDER": "PCI_BUS_ID",
                },
                "import_env": "3",
                "torch_at_import": False,
            },
        ),
    ],
)
def test_model_loads_after_visibility(
    shared: tuple[LocalExecutor, Events], kit: Kit, cuda_visible: str, expected: dict
) -> None:
    seen = [p for p in read_probes(kit) if p["env"]["CUDA_VISIBLE_DEVICES"] == cuda_visible]
    assert seen, f"no worker loaded with CUDA_VISIBLE_DEVICES={cuda_visible!r}"
    # every such worker saw the same; torch_at_import False: nothing the worker imports
    # before the model (vidshard's worker, its unit types) pulls in the framework
    assert all(p == expected for p in seen)


def test_cpu_slots_each_load_once(shared: tuple[LocalExecutor, Events], kit: Kit) -> None:
    cpu_probes = [p for p in read_probes(kit) if p["device"] == "cpu"]
    assert len(cpu_probes) == 2


def test_unit_completes_with_its_slot(shared: tuple[LocalExecutor, Events], kit: Kit) -> None:
    executor, events = shared
    unit = kit.unit(NORMAL)
    result = executor.submit(unit).result(timeout=30)
    assert isinstance(result, UnitResult)
    assert result.unit_id == unit.unit_id
    assert result.slot_label in {"cpu#0", "cpu#1"}  # filled in by the coordinator
    assert result.frames == FRAMES
    assert result.outputs == (unit.core_path,)
    assert probe(unit.core_path).video.pts == unit.video.pts
    # events: started and finished on the same slot, progress adds up to the unit's frames
    started = events.started(unit.unit_id)
    (finished,) = [e for e in events.of(UnitFinished) if e.unit_id == unit.unit_id]
    progress = [e for e in events.of(UnitProgress) if e.unit_id == unit.unit_id]
    assert started.slot_label == finished.slot_label == result.slot_label
    assert finished.frames == FRAMES
    assert sum(e.frames for e in progress) == FRAMES
    assert {e.slot_label for e in progress} == {result.slot_label}


def test_idle_workers_share_the_queue(shared: tuple[LocalExecutor, Events], kit: Kit) -> None:
    executor, _ = shared
    # four units of ~0.6 s each: while one worker is busy the other pulls the next
    futures = [executor.submit(kit.unit(SLOW)) for _ in range(4)]
    results = [f.result(timeout=30) for f in futures]
    assert {r.slot_label for r in results} == {"cpu#0", "cpu#1"}
    assert all(r.outputs[0].is_file() for r in results)


@pytest.mark.parametrize(
    ("width", "error", "match"),
    [
        # a bug in the model: a WorkerError naming the unit, the slot and the error
        (RAISES_VALUE, WorkerError, r"segment-w48-\d+@cpu#[01]: ValueError: bad pixels"),
        # a VidshardError subclass raised in the worker comes back as the same type
        (RAISES_MODEL, ModelError, r"^frames too dark$"),
        # the engine's own output check in the worker, typed and saying what arrived
        (WRONG_SHAPE, ModelError, r"expected output \(4, 32, 24, 3\) uint8, got \(4, 32, 12, 3\)"),
    ],
)
def test_unit_failure_comes_back_typed(
    shared: tuple[LocalExecutor, Events],
    kit: Kit,
    width: int,
    error: type[Exception],
    match: str,
) -> None:
    executor, _ = shared
    unit = kit.unit(width)
    exc = executor.submit(unit).exception(timeout=30)
    assert type(exc) is error
    assert not isinstance(exc, WorkerLost)  # not retryable: it would fail again
    with pytest.raises(error, match=match):
        raise exc
    assert not unit.core_path.exists()
    # the worker survives a failed unit and takes the next one
    assert executor.live_slots() == ["cpu#0", "cpu#1"]
    assert executor.submit(kit.unit(NORMAL)).result(timeout=30).frames == FRAMES


def test_missing_source_is_a_media_error(shared: tuple[LocalExecutor, Events], kit: Kit) -> None:
    executor, _ = shared
    unit = kit.unit(NORMAL)
    missing = SegmentUnit(**{**unit.__dict__, "source": kit.root / "gone.mp4"})
    exc = executor.submit(missing).exception(timeout=30)
    assert isinstance(exc, MediaError)
    assert "gone.mp4" in str(exc)


# --- start: every slot fails to load -----------------------------------------------


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("cls", "slots", "error", "match"),
    [
        # the user's ModelError, typed, with the user's message
        ("FailsToLoad", [cpu(0), cpu(1)], ModelError, r"^weights missing: /nowhere/w\.pth$"),
        # a bug in load: a WorkerError saying where and what
        ("BrokenLoad", [cpu(0)], WorkerError, r"loading on cpu#0: RuntimeError: out of memory"),
        # the process dies while loading: its exit code, not a timeout
        ("CrashesOnLoad", [cpu(0)], WorkerError, r"cpu#0 exited .* \(exit code 3\)"),
        # a bug on one slot, a user error on the other: the user error is raised
        ("Picky", [cpu(0), DeviceSlot(1, Device("cuda", 1))], ModelError, "no driver for cuda:0"),
    ],
)
def test_start_raises_when_every_slot_fails(
    kit: Kit, cls: str, slots: list[DeviceSlot], error: type[Exception], match: str
) -> None:
    events = Events()
    executor = LocalExecutor()
    before = our_children()
    with pytest.raises(error, match=match) as caught:
        executor.start(slots, kit.model(cls), events)
    assert type(caught.value) is error
    assert not events.of(WorkerUp)
    assert sorted(e.slot_label for e in events.of(WorkerDown)) == sorted(s.label for s in slots)
    assert executor.live_slots() == []
    assert our_children() <= before  # every worker it spawned is gone and reaped
    # the executor is shut: later units are cancelled, not queued forever
    with pytest.raises(CancelledError):
        executor.submit(kit.unit()).result(timeout=5)


# --- workers that die --------------------------------------------------------------


@pytest.mark.timeout(60)
def test_dead_worker_fails_its_unit_and_is_restarted(kit: Kit) -> None:
    events = Events()
    executor = LocalExecutor(Supervision(restart_backoff_s=0.05))
    executor.start([cpu(0), cpu(1)], kit.model(), events)
    pids = events.pids()
    try:
        units = [kit.unit(SLOW) for _ in range(4)]
        lost, *others = [executor.submit(u) for u in units]
        # one shared FIFO queue: the first unit submitted is the first one started
        victim = events.started(units[0].unit_id).slot_label
        os.kill(pids[victim], signal.SIGKILL)
        exc = lost.exception(timeout=60)  # no hang: the death is seen, not waited out
        assert isinstance(exc, WorkerLost)
        assert f"worker {victim} died running {units[0].unit_id}" in str(exc)
        assert "exit code -9" in str(exc)
        down = events.wait_for(lambda e: isinstance(e, WorkerDown))
        assert isinstance(down, WorkerDown)
        assert down.slot_label == victim
        assert all(f.result(timeout=30).frames == FRAMES for f in others)
        # the victim's slot came back in a new process and serves again
        ups = [e for e in events.of(WorkerUp) if e.slot_label == victim]
        assert len(ups) == 2 and ups[1].pid != pids[victim]
        assert executor.live_slots() == ["cpu#0", "cpu#1"]
        assert executor.submit(kit.unit()).result(timeout=30).frames == FRAMES
    finally:
        executor.shutdown()
    assert_workers_gone(set(pids.values()))


@pytest.mark.timeout(60)
def test_device_failing_in_a_row_is_quarantined_and_the_job_told(kit: Kit) -> None:
    events = Events()
    executor = LocalExecutor(Supervision(max_consecutive_failures=2, restart_backoff_s=0.05))
    executor.start([cpu(0), cpu(1)], kit.model(), events)
    pids = events.pids()
    try:
        # every unit makes its worker exit: two failures in a row quarantine the device
        exiting = [executor.submit(kit.unit(EXITS)) for _ in range(2)]
        for future in exiting:
            exc = future.exception(timeout=10)
            assert isinstance(exc, WorkerLost)
            assert "exit code 7" in str(exc)
        quarantined = events.wait_for(lambda e: isinstance(e, DeviceQuarantined))
        assert quarantined.device_label == "cpu"
        deadline = time.monotonic() + 10
        while executor.live_slots() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert executor.live_slots() == []
        assert executor.quarantined() == ["cpu"]
        with pytest.raises(WorkerError, match="no worker is alive"):
            executor.submit(kit.unit()).result(timeout=5)
    finally:
        executor.shutdown()
    assert_workers_gone(set(pids.values()))


@pytest.mark.timeout(60)
def test_worker_dead_while_idle_fails_the_next_unit(kit: Kit) -> None:
    events = Events()
    executor = LocalExecutor(Supervision(restart_backoff_s=0.05))
    executor.start([cpu(0)], kit.model(), events)
    pid = events.pids()["cpu#0"]
    try:
        os.kill(pid, signal.SIGKILL)
        _wait_exited(pid)
        # the slot thread finds out when it hands over the unit: lost (retryable), not a hang
        exc = executor.submit(kit.unit()).exception(timeout=10)
        assert isinstance(exc, WorkerLost)
        assert "worker cpu#0" in str(exc)
        assert "exit code -9" in str(exc)
        # the slot restarts and the next unit runs
        assert executor.submit(kit.unit()).result(timeout=30).frames == FRAMES
        assert executor.live_slots() == ["cpu#0"]
    finally:
        executor.shutdown()
    assert_workers_gone({pid})


def _wait_until(condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def _wait_exited(pid: int, timeout_s: float = 10.0) -> None:
    """Wait until a killed child has let go of its files.

    Its main thread turns zombie first; the pipe closes once its other threads (OpenBLAS,
    codecs) are gone too. It stays a zombie until the executor reaps it.
    """

    def exited() -> bool:
        try:
            status = psutil.Process(pid).status()
            return status == psutil.STATUS_ZOMBIE and len(os.listdir(f"/proc/{pid}/task")) == 1
        except (psutil.NoSuchProcess, FileNotFoundError):
            return True

    _wait_until(exited, timeout_s)


# --- shutdown ----------------------------------------------------------------------


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    "width",
    [
        # a short running unit: its result is no longer wanted, the worker is killed
        SLOW,
        # a long one: the same, without waiting for it
        VERY_SLOW,
    ],
)
def test_shutdown_cancels_queued_units_and_ends_workers(kit: Kit, width: int) -> None:
    events = Events()
    executor = LocalExecutor()
    executor.start([cpu(0)], kit.model(), events)
    pid = events.pids()["cpu#0"]
    running_unit = kit.unit(width)
    running = executor.submit(running_unit)
    queued = [executor.submit(kit.unit()) for _ in range(3)]
    events.started(running_unit.unit_id)

    executor.shutdown()  # a busy worker is killed, not waited for: WorkerLost below
    for future in queued:
        with pytest.raises(CancelledError):
            future.result(timeout=5)
    assert isinstance(running.exception(timeout=10), WorkerLost)
    assert_workers_gone({pid})
    assert executor.live_slots() == []
    # shut means shut: a late unit is cancelled; a second shutdown is harmless
    with pytest.raises(CancelledError):
        executor.submit(kit.unit()).result(timeout=5)
    executor.shutdown()


# --- a registered model and torch, end to end --------------------------------------


@pytest.fixture
def torch_watch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Children record their environment at their first ``import torch`` in this folder.

    sitecustomize runs at every child's start: it watches for that import.
    """
    (tmp_path / "sitecustomize.py").write_text(textwrap.dedent(TORCH_WATCH))
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])
    )
    monkeypatch.setenv("VIDSHARD_TEST_TORCH_WATCH", str(tmp_path))
    return tmp_path


@pytest.mark.timeout(90)
def test_torch_is_imported_after_visibility(
    kit: Kit, torch_watch: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tmp_path = torch_watch
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")  # what the coordinator sees
    events = Events()
    executor = LocalExecutor()
    # a model that imports torch in load; the CPU slot's thread share is then applied
    model_file = tmp_path / "torch_identity.py"
    model_file.write_text(
        "from vidshard.models import ModelSpec\n"
        "class TorchIdentity:\n"
        "    def __init__(self):\n"
        "        self.spec = ModelSpec(name='torch-identity', scale=1)\n"
        "    def load(self, device):\n"
        "        import torch\n"
        "        self.threads = torch.get_num_threads()\n"
        "    def run(self, batch):\n"
        "        return batch\n"
    )
    executor.start([cpu(0, cpu_threads=1)], resolve_model(f"{model_file}:TorchIdentity"), events)
    pid = events.pids()["cpu#0"]
    try:
        unit = kit.unit(NORMAL)
        result = executor.submit(unit).result(timeout=60)
        assert result.slot_label == "cpu#0"
        assert probe(unit.core_path).video.frame_count == FRAMES
    finally:
        executor.shutdown()
    watched = json.loads((tmp_path / f"{pid}.torch.json").read_text())
    assert watched == {"CUDA_VISIBLE_DEVICES": ""}  # set before torch was first imported
    assert_workers_gone({pid})


@pytest.mark.timeout(90)
def test_models_without_torch_do_not_import_it(kit: Kit, torch_watch: Path) -> None:
    tmp_path = torch_watch
    events = Events()
    executor = LocalExecutor()
    executor.start([cpu(0, cpu_threads=1)], resolve_model("identity"), events)
    pid = events.pids()["cpu#0"]
    try:
        assert executor.submit(kit.unit(NORMAL)).result(timeout=60).frames == FRAMES
    finally:
        executor.shutdown()
    # identity and the resamplers spare each worker torch's ~2 s and ~300 MiB
    assert not (tmp_path / f"{pid}.torch.json").exists()


# --- rebuilding a worker's error ---------------------------------------------------


@pytest.mark.parametrize(
    ("type_name", "expected_type", "expected_message"),
    [
        # a VidshardError subclass: the same type, the message as it was
        ("ModelError", ModelError, "the message"),
        ("InputError", InputError, "the message"),
        ("WorkerError", WorkerError, "the message"),
        # anything else is a bug: a WorkerError saying where and what
        ("ValueError", WorkerError, "u@cpu#0: ValueError: the message"),
        # a name that exists in vidshard.errors but is not an error type
        ("annotations", WorkerError, "u@cpu#0: annotations: the message"),
    ],
)
def test_rebuild_error(
    type_name: str, expected_type: type[Exception], expected_message: str
) -> None:
    exc = rebuild_error(type_name, "the message", "Traceback ...", "u@cpu#0")
    assert type(exc) is expected_type
    assert str(exc) == expected_message
