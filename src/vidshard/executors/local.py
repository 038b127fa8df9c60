"""One worker process per device slot on this machine.

Each slot has a thread in the coordinator that pulls the next unit from one shared queue
when its worker is idle, sends it down the worker's pipe, relays progress, and watches
the process sentinel, so a worker that dies fails its unit at once instead of hanging
the job.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing as mp
import queue
import threading
import time
from collections.abc import Sequence
from concurrent.futures import CancelledError, Future
from dataclasses import dataclass, replace
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from typing import Any

from vidshard import errors
from vidshard.devices.types import DeviceSlot
from vidshard.engine.events import (
    UnitFinished,
    UnitProgress,
    UnitStarted,
    WorkerDown,
    WorkerUp,
)
from vidshard.engine.units import UnitResult, WorkUnit
from vidshard.models.registry import ModelRef

from .base import EventSink, Executor, WorkerLost
from .worker import worker_main

logger = logging.getLogger(__name__)

LOAD_TIMEOUT_S = 600.0
STOP_TIMEOUT_S = 10.0
EXIT_GRACE_S = 1.0  # a worker whose pipe closed is exiting: time to reap it
POLL_S = 0.2


def rebuild_error(type_name: str, message: str, trace: str, where: str) -> BaseException:
    """Turn a worker's error report back into an exception for the coordinator."""
    cls = getattr(errors, type_name, None)
    if isinstance(cls, type) and issubclass(cls, errors.VidshardError):
        return cls(message)
    logger.debug("worker traceback (%s):\n%s", where, trace)
    return errors.WorkerError(f"{where}: {type_name}: {message}")


@dataclass
class _Task:
    unit: WorkUnit
    future: Future[UnitResult]


class _SlotWorker:
    """The coordinator side of one worker process."""

    def __init__(self, slot: DeviceSlot, model: ModelRef, sink: EventSink) -> None:
        self.slot = slot
        self.model = model
        self.sink = sink
        self.process: BaseProcess | None = None
        self.conn: Connection | None = None
        self.load_error: BaseException | None = None
        self.busy = False  # running a unit: shutdown kills it rather than waiting
        self._kill_lock = threading.Lock()

    def spawn(self) -> None:
        ctx = mp.get_context("spawn")
        parent, child = ctx.Pipe()
        self.process = ctx.Process(
            target=worker_main,
            args=(self.slot, child),
            name=f"vidshard-worker-{self.slot.label}",
            daemon=True,
        )
        self.process.start()
        child.close()
        self.conn = parent
        parent.send(("model", self.model))

    def await_ready(self, timeout_s: float = LOAD_TIMEOUT_S) -> bool:
        """Wait for the ready handshake; False (with ``load_error`` set) on failure."""
        assert self.conn is not None and self.process is not None
        ready = wait([self.conn, self.process.sentinel], timeout=timeout_s)
        message: tuple[Any, ...] | None = None
        if self.conn in ready:
            try:
                message = self.conn.recv()
            except EOFError:
                message = None
        if message is not None and message[0] == "ready":
            self.sink(WorkerUp(self.slot.label, pid=message[1], load_seconds=message[2]))
            return True
        if message is not None and message[0] == "load_failed":
            type_name, text, trace = message[1:]
            self.load_error = rebuild_error(type_name, text, trace, f"loading on {self.slot.label}")
        elif not ready:
            self.load_error = errors.WorkerError(
                f"worker {self.slot.label} not ready after {timeout_s:.0f} s"
            )
        else:
            # The pipe or the sentinel fired: the process is exiting; reap it for its code.
            self.process.join(EXIT_GRACE_S)
            self.load_error = errors.WorkerError(
                f"worker {self.slot.label} exited while loading the model "
                f"(exit code {self.process.exitcode})"
            )
        self.kill()
        self.sink(WorkerDown(self.slot.label, str(self.load_error)))
        return False

    def run_unit(self, task: _Task) -> bool:
        """Run one unit to its end; False if the worker died doing it."""
        self.busy = True
        try:
            return self._run_unit(task)
        finally:
            self.busy = False

    def _run_unit(self, task: _Task) -> bool:
        # Local references: shutdown may close ``self.conn`` from another thread.
        conn, process = self.conn, self.process
        assert conn is not None and process is not None
        label = self.slot.label
        unit_id = task.unit.unit_id
        try:
            conn.send(("unit", task.unit))
        except OSError:  # the worker died while idle
            return self._lost(task, f"worker {label} was gone when {unit_id} came")
        self.sink(UnitStarted(unit_id, label))
        while True:
            try:
                wait([conn, process.sentinel], timeout=None)
                # Nothing buffered, end of file or a closed handle: no message will come.
                message = conn.recv() if conn.poll() else None
            except (EOFError, OSError):
                message = None
            if message is None:
                return self._lost(task, f"worker {label} died running {unit_id}")
            kind = message[0]
            if kind == "progress":
                self.sink(UnitProgress(unit_id, label, frames=message[2]))
            elif kind == "done":
                result: UnitResult = replace(message[1], slot_label=label)
                self.sink(UnitFinished(unit_id, label, result.frames, result.seconds))
                task.future.set_result(result)
                return True
            elif kind == "failed":
                type_name, text, trace = message[2:]
                task.future.set_exception(
                    rebuild_error(type_name, text, trace, f"{unit_id}@{label}")
                )
                return True

    def _lost(self, task: _Task, reason: str) -> bool:
        assert self.process is not None
        self.process.join(EXIT_GRACE_S)  # reap it, for its exit code
        reason = f"{reason} (exit code {self.process.exitcode})"
        task.future.set_exception(WorkerLost(reason))
        self.sink(WorkerDown(self.slot.label, reason))
        return False

    def stop(self) -> None:
        conn = self.conn  # the slot thread may kill (and clear) it meanwhile
        if conn is not None:
            with contextlib.suppress(OSError):
                conn.send(("stop",))
        if self.process is not None:
            self.process.join(STOP_TIMEOUT_S)
        self.kill()

    def kill(self) -> None:
        # Both the slot thread (its worker died) and shutdown may get here at once.
        with self._kill_lock:
            if self.process is not None and self.process.is_alive():
                self.process.kill()
                self.process.join(STOP_TIMEOUT_S)
            if self.conn is not None:
                self.conn.close()
                self.conn = None


class LocalExecutor(Executor):
    """Process per slot, spawn start method, model loaded once per worker."""

    def __init__(self) -> None:
        self._queue: queue.Queue[_Task] = queue.Queue()
        self._workers: list[_SlotWorker] = []
        self._threads: list[threading.Thread] = []
        self._live: set[str] = set()
        self._lock = threading.Lock()
        self._closing = threading.Event()

    def start(self, slots: Sequence[DeviceSlot], model: ModelRef, on_event: EventSink) -> None:
        self._workers = [_SlotWorker(slot, model, on_event) for slot in slots]
        for worker in self._workers:
            worker.spawn()
        results = [worker.await_ready() for worker in self._workers]
        if not any(results):
            errors_seen = [w.load_error for w in self._workers if w.load_error is not None]
            self.shutdown()
            user_errors = [e for e in errors_seen if not isinstance(e, errors.WorkerError)]
            raise (user_errors or errors_seen or [errors.WorkerError("no worker started")])[0]
        for worker, ok in zip(self._workers, results, strict=True):
            if not ok:
                continue
            self._live.add(worker.slot.label)
            thread = threading.Thread(
                target=self._slot_loop, args=(worker,), name=f"slot-{worker.slot.label}"
            )
            thread.daemon = True
            thread.start()
            self._threads.append(thread)

    def submit(self, unit: WorkUnit) -> Future[UnitResult]:
        future: Future[UnitResult] = Future()
        # Checked and queued under the lock that the last death and shutdown drain the
        # queue under, so no unit is queued after the final drain (it would never end).
        with self._lock:
            refused: BaseException | None = None
            if self._closing.is_set():
                refused = CancelledError()
            elif not self._live:
                refused = errors.WorkerError("no worker is alive")
            else:
                self._queue.put(_Task(unit, future))
        if refused is not None:
            future.set_exception(refused)
        return future

    def live_slots(self) -> list[str]:
        with self._lock:
            return sorted(self._live)

    def _slot_loop(self, worker: _SlotWorker) -> None:
        while not self._closing.is_set():
            try:
                task = self._queue.get(timeout=POLL_S)
            except queue.Empty:
                continue
            if not task.future.set_running_or_notify_cancel():
                continue
            if not worker.run_unit(task):
                self._slot_died(worker)
                return

    def _slot_died(self, worker: _SlotWorker) -> None:
        worker.kill()
        with self._lock:
            self._live.discard(worker.slot.label)
            orphans = self._drain() if not self._live else []
        _fail(orphans, errors.WorkerError("every worker has died; no slot is left"))

    def _drain(self) -> list[_Task]:
        """Take every queued task (call with the lock held)."""
        tasks = []
        while True:
            try:
                tasks.append(self._queue.get_nowait())
            except queue.Empty:
                return tasks

    def shutdown(self) -> None:
        with self._lock:
            self._closing.set()
            queued = self._drain()
        _fail(queued, CancelledError())
        for worker in self._workers:
            if worker.busy:  # its unit's result is no longer wanted: stop at once
                worker.kill()
        for thread in self._threads:
            thread.join(timeout=0.5)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for worker in self._workers:
            worker.stop()
            if time.monotonic() > deadline:
                break
        for worker in self._workers:
            worker.kill()
        with self._lock:
            self._live.clear()


def _fail(tasks: list[_Task], exc: BaseException) -> None:
    """Fail tasks outside the lock: their futures' callbacks may submit again."""
    for task in tasks:
        if task.future.set_running_or_notify_cancel():
            task.future.set_exception(exc)
