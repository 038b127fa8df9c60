"""Start a worker process on vidshard's own entry point, never on the user's main module.

multiprocessing's ``spawn`` prepares each child by importing the parent's ``__main__``:
a script without an ``if __name__ == "__main__":`` guard runs its job again in every
worker, the top-level code of a guarded script or of ``python -m module`` runs again,
and code read from stdin cannot be found at all. So a worker is a fresh interpreter
running :data:`BOOTSTRAP` (``python -c``), with a socket pair for messages and a pipe
whose end closes when it exits (the sentinel), both inherited as file descriptors:
nothing of the parent runs, and no other process can reach the socket (no address, no
key to share).

The bootstrap puts the coordinator's ``sys.path`` in place before importing vidshard, as
spawn did: a model given as ``pkg.module:Class`` or ``my_model.py:Class`` imports in the
worker as it does in the coordinator.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import subprocess
import sys
import threading
import weakref
from collections.abc import Callable
from multiprocessing.connection import Connection, Pipe

from vidshard import errors
from vidshard.devices.types import DeviceSlot

WORKER_NAME_PREFIX = "vidshard-worker-"  # a worker's first argument: its slot, for ps

# Runs as the child's ``__main__``; stdlib only until sys.path is the coordinator's.
# argv: a name (for ps), the socket's fd, the sentinel pipe's fd.
BOOTSTRAP = "; ".join(
    [
        "import signal, sys",
        "signal.signal(signal.SIGINT, signal.SIG_IGN)",  # the coordinator decides what stops
        "from multiprocessing.connection import Connection",
        "conn = Connection(int(sys.argv[2]))",
        "sys.path[:] = conn.recv()",
        "from vidshard.executors.boot import main",
        "main(conn, int(sys.argv[3]))",
    ]
)

# The interpreter's own flags (-O, -X ..., -W ...), as multiprocessing passes them on.
_interpreter_flags: Callable[[], list[str]] = getattr(
    subprocess, "_args_from_interpreter_flags", list
)
_running: weakref.WeakSet[WorkerProcess] = weakref.WeakSet()
_exit_hook_lock = threading.Lock()
_exit_hook_set = False


class WorkerProcess:
    """A started worker: the part of ``multiprocessing.Process`` the slot code uses."""

    def __init__(self, popen: subprocess.Popen[bytes], sentinel: int) -> None:
        self._popen = popen
        self.sentinel = sentinel  # readable (end of file) once the process has exited
        # Closed with this object, not on exit: a slot thread may still be waiting on it.
        weakref.finalize(self, os.close, sentinel)

    @property
    def pid(self) -> int:
        return self._popen.pid

    @property
    def exitcode(self) -> int | None:
        """None while running; ``-N`` when killed by signal N (as multiprocessing)."""
        return self._popen.poll()

    def is_alive(self) -> bool:
        return self._popen.poll() is None

    def exit_note(self) -> str:
        """How it ended, for messages."""
        return f"exit code {self.exitcode}"

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):  # exited (and reaped) meanwhile
            self._popen.kill()

    def join(self, timeout_s: float | None = None) -> None:
        """Wait for the process to exit (at most ``timeout_s``) and reap it."""
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._popen.wait(timeout_s)


def launch(
    slot: DeviceSlot, sys_path: list[str] | None = None, name: str | None = None
) -> tuple[WorkerProcess, Connection]:
    """Start a worker for ``slot``; it waits for its model message on the connection.

    Its visibility variables are in its environment from the first instruction, before
    any import (invariant 6); ``worker_main`` applies them again. It imports with
    ``sys_path`` (default: this process's); a cluster's node passes the coordinator's,
    and names it (for ps) by the slot's cluster label (``name``).
    """
    executable = sys.executable
    if not executable or getattr(sys, "frozen", False):
        raise errors.ConfigError(
            f"workers need a Python interpreter to start; sys.executable is {executable!r}"
            + (" (a frozen application)" if getattr(sys, "frozen", False) else "")
        )
    try:
        parent, child = Pipe(duplex=True)
        sentinel, child_end = os.pipe()
    except OSError as exc:  # out of file descriptors
        raise errors.WorkerError(f"cannot start a worker for {slot.label}: {exc}") from exc
    title = WORKER_NAME_PREFIX + (name or slot.label)
    args = [executable, *_interpreter_flags(), "-c", BOOTSTRAP, title]
    try:
        popen = subprocess.Popen(
            [*args, str(child.fileno()), str(child_end)],
            stdin=subprocess.DEVNULL,  # a job read from stdin must not be read by workers
            env={**os.environ, **slot.worker_env()},
            pass_fds=(child.fileno(), child_end),
        )
    except BaseException as exc:
        parent.close()
        os.close(sentinel)
        if isinstance(exc, OSError):  # no such interpreter, out of processes or files
            raise errors.WorkerError(f"cannot start a worker for {slot.label}: {exc}") from exc
        raise
    finally:
        child.close()
        os.close(child_end)
    process = WorkerProcess(popen, sentinel)
    _track(process)
    with contextlib.suppress(OSError):  # a worker dead already: the handshake tells
        parent.send(list(sys.path) if sys_path is None else sys_path)
        parent.send(slot)
    return process, parent


def _track(process: WorkerProcess) -> None:
    """Kill workers still running when the coordinator's interpreter exits (a daemon
    process of multiprocessing got the same)."""
    global _exit_hook_set
    with _exit_hook_lock:
        _running.add(process)
        if not _exit_hook_set:
            atexit.register(_kill_running)
            _exit_hook_set = True


def _kill_running() -> None:
    for process in list(_running):
        process.kill()
        process.join(1.0)


def main(conn: Connection, sentinel: int) -> None:
    """The worker's side: the slot arrives, then :func:`worker_main` takes over.

    ``sentinel`` stays open, unused, until this process ends; neither it nor the socket
    passes to processes a model may start.
    """
    from .worker import worker_main

    os.set_inheritable(sentinel, False)
    os.set_inheritable(conn.fileno(), False)
    slot = conn.recv()
    worker_main(slot, conn)
