"""Starting a worker on vidshard's own entry point: what the child gets from the
coordinator (path, environment, descriptors) and what the coordinator keeps of it
(sentinel, exit code, kill), and how a start that cannot happen fails."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any

import psutil
import pytest

from vidshard.devices import Device, DeviceSlot
from vidshard.errors import ConfigError, WorkerError
from vidshard.executors import boot
from vidshard.executors.local import LocalExecutor
from vidshard.models.registry import resolve_model

CPU = DeviceSlot(0, Device(kind="cpu", index=0), cpu_threads=1)
GPU = DeviceSlot(1, Device(kind="cuda", index=2))
TIMEOUT_S = 60

PROBE_MODEL = '''\
"""Records, when a worker imports it, what the worker was started with."""

import json
import os
import sys

from vidshard.models import ModelSpec


def inheritable(fd):
    try:
        return os.get_inheritable(fd)
    except OSError:  # the folder listing's own descriptor, closed by now
        return False


fds = [int(fd) for fd in os.listdir("/proc/self/fd")] if os.path.isdir("/proc/self/fd") else []
record = {{
    "path": sys.path,
    "main_file": getattr(sys.modules["__main__"], "__file__", None),
    "env": {{k: os.environ.get(k) for k in ("CUDA_VISIBLE_DEVICES", "OMP_NUM_THREADS")}},
    "stdin": os.path.realpath("/proc/self/fd/0") if fds else None,
    "inheritable": [fd for fd in fds if fd > 2 and inheritable(fd)],
    "torch": "torch" in sys.modules,
}}
with open({record!r}, "w") as out:
    json.dump(record, out)


class Probe:
    spec = ModelSpec(name="probe")

    def load(self, device):
        pass

    def run(self, batch):
        return batch
'''


def start(slot: DeviceSlot, model: object = None) -> tuple[boot.WorkerProcess, Connection, Any]:
    """A worker, its connection, and its first answer (ready, or what came instead)."""
    process, conn = boot.launch(slot)
    conn.send(("model", model, logging.WARNING))
    assert conn.poll(TIMEOUT_S), "the worker did not answer"
    return process, conn, conn.recv()


@contextlib.contextmanager
def stdin_from_a_pipe() -> Iterator[None]:
    """This process's descriptor 0 is a pipe for a moment, as in ``python - < job.py``."""
    read_end, write_end = os.pipe()
    saved = os.dup(0)
    os.dup2(read_end, 0)
    try:
        yield
    finally:
        os.dup2(saved, 0)
        for fd in (saved, read_end, write_end):
            os.close(fd)


def stop(process: boot.WorkerProcess) -> None:
    process.kill()
    process.join(TIMEOUT_S)


def test_a_worker_says_ready_and_its_sentinel_fires_when_it_dies() -> None:
    process, conn, ready = start(CPU)
    try:
        assert ready[0] == "ready" and ready[1] == process.pid
        assert process.is_alive() and process.exitcode is None
        assert wait([process.sentinel], timeout=0.2) == []  # alive: nothing to read
        os.kill(process.pid, signal.SIGKILL)
        assert wait([process.sentinel], timeout=TIMEOUT_S) == [process.sentinel]
        process.join(TIMEOUT_S)
        assert not process.is_alive()
        assert process.exitcode == -signal.SIGKILL  # as multiprocessing reports it
        with pytest.raises(EOFError):  # its messages so far (heartbeats), then the end
            while True:
                conn.recv()
    finally:
        stop(process)


def test_a_stopped_worker_exits_zero() -> None:
    process, conn, ready = start(CPU)
    assert ready[0] == "ready"
    conn.send(("stop",))
    process.join(TIMEOUT_S)
    assert process.exitcode == 0


@pytest.mark.parametrize(
    ("slot", "visible", "threads"),
    [
        (CPU, "", "1"),  # a CPU slot sees no GPU, and its share of the cores
        (GPU, "2", None),  # a GPU slot sees its own device only
    ],
)
def test_the_worker_starts_with_the_coordinators_path_and_its_own_visibility(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, slot: DeviceSlot, visible: str, threads: str
) -> None:
    record = tmp_path / "record.json"
    (tmp_path / "probe_model.py").write_text(PROBE_MODEL.format(record=str(record)))
    extra = tmp_path / "only-the-coordinator-has-this"
    extra.mkdir()
    monkeypatch.syspath_prepend(str(extra))  # a fresh interpreter would not have it
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1,2,3")
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)  # set by a library another test loaded
    model = resolve_model(f"{tmp_path / 'probe_model.py'}:Probe")
    expected_path = list(sys.path)
    with stdin_from_a_pipe():  # as ``python - < job.py`` has it
        process, _conn, ready = start(slot, model)
    try:
        assert ready[0] == "ready", ready
        # in its environment from the first instruction, not only set by worker_main
        assert psutil.Process(process.pid).environ()["CUDA_VISIBLE_DEVICES"] == visible
    finally:
        stop(process)
    seen = json.loads(record.read_text())
    assert seen["path"] == expected_path
    assert seen["main_file"] is None  # the bootstrap, not the caller's main module
    assert seen["env"] == {"CUDA_VISIBLE_DEVICES": visible, "OMP_NUM_THREADS": threads}
    assert not seen["torch"]  # nothing imported a framework before the model did
    if os.path.isdir("/proc/self/fd"):
        assert seen["stdin"] == os.devnull  # a job read from stdin is not the worker's
        assert seen["inheritable"] == []  # no descriptor passes to a model's processes


@pytest.mark.parametrize(
    ("executable", "frozen", "error", "message"),
    [
        # no interpreter at that path: the executor cannot start any worker
        ("/nonexistent/python3", False, WorkerError, "cannot start a worker for cpu#0"),
        # an embedded Python without an executable
        ("", False, ConfigError, "workers need a Python interpreter"),
        # a frozen application: sys.executable is the application, not Python
        (sys.executable, True, ConfigError, "a frozen application"),
    ],
)
def test_a_worker_that_cannot_start_fails_the_start_clearly(
    monkeypatch: pytest.MonkeyPatch,
    executable: str,
    frozen: bool,
    error: type[Exception],
    message: str,
) -> None:
    monkeypatch.setattr(sys, "executable", executable)
    if frozen:
        monkeypatch.setattr(sys, "frozen", True, raising=False)
    before = set(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else set()
    executor = LocalExecutor()
    with pytest.raises(error, match=message):
        executor.start([CPU, DeviceSlot(1, Device(kind="cpu", index=0))], None, lambda _e: None)
    if before:  # the pipes and sockets made for it are closed again
        assert set(os.listdir("/proc/self/fd")) <= before


def test_workers_still_loading_when_the_caller_exits_are_killed(tmp_path: Path) -> None:
    # No heartbeat runs while a model loads; the exit hook ends such workers.
    (tmp_path / "slow_model.py").write_text(
        textwrap.dedent(
            """\
            import time
            from vidshard.models import ModelSpec

            class Slow:
                spec = ModelSpec(name="slow")

                def load(self, device):
                    time.sleep(120)

                def run(self, batch):
                    return batch
            """
        )
    )
    code = textwrap.dedent(
        f"""\
        from vidshard.devices import Device, DeviceSlot
        from vidshard.executors.slot import SlotWorker
        from vidshard.models.registry import resolve_model

        model = resolve_model({str(tmp_path / "slow_model.py")!r} + ":Slow")
        worker = SlotWorker(DeviceSlot(0, Device(kind="cpu", index=0)), model, print)
        worker.spawn()
        print(worker.process.pid, flush=True)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=TIMEOUT_S, check=True
    )
    pid = int(done.stdout.split()[-1])
    try:
        worker = psutil.Process(pid)
    except psutil.NoSuchProcess:
        return  # gone already
    _gone, alive = psutil.wait_procs([worker], timeout=30)
    assert not alive, "a loading worker outlived the process that started it"
