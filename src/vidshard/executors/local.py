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
        else:
            code = self.process.exitcode
            self.load_error = errors.WorkerError(
                f"worker {self.slot.label} exited while loading the model (exit code {code})"
                if code is not None
                else f"worker {self.slot.label} not ready after {timeout_s:.0f} s"
            )
        self.kill()
        self.sink(WorkerDown(self.slot.label, str(self.load_error)))
        return False

    def run_unit(self, task: _Task) -> bool:
        """Run one unit to its end; False if the worker died doing it."""
        assert self.conn is not None and self.process is not None
        label = self.slot.label
        unit_id = task.unit.unit_id
        self.conn.send(("unit", task.unit))
        self.sink(UnitStarted(unit_id, label))
        while True:
            ready = wait([self.conn, self.process.sentinel], timeout=None)
            if self.conn not in ready or not self.conn.poll():
                reason = f"worker {label} died running {unit_id} (exit {self.process.exitcode})"
                task.future.set_exception(WorkerLost(reason))
                self.sink(WorkerDown(label, reason))
                return False
            try:
                message = self.conn.recv()
            except EOFError:
                continue  # the sentinel tells on the next turn
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

    def stop(self) -> None:
        if self.conn is not None:
            with contextlib.suppress(OSError):
                self.conn.send(("stop",))
        if self.process is not None:
            self.process.join(STOP_TIMEOUT_S)
        self.kill()

    def kill(self) -> None:
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
        if self._closing.is_set():
            future.set_exception(CancelledError())
        elif not self.live_slots():
            future.set_exception(errors.WorkerError("no worker is alive"))
        else:
            self._queue.put(_Task(unit, future))
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
            none_left = not self._live
        if none_left:
            self._fail_queued(errors.WorkerError("every worker has died; no slot is left"))

    def _fail_queued(self, exc: BaseException) -> None:
        while True:
            try:
                task = self._queue.get_nowait()
            except queue.Empty:
                return
            if task.future.set_running_or_notify_cancel():
                task.future.set_exception(exc)

    def shutdown(self) -> None:
        self._closing.set()
        self._fail_queued(CancelledError())
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
