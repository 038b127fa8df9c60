"""The coordinator's side of one worker process: spawn it with a model, wait for its
handshake, send it units and follow their progress, cancel them, kill it.

``LocalExecutor`` runs one :class:`SlotWorker` per slot, each on its own thread.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import CancelledError, Future
from dataclasses import dataclass, replace
from multiprocessing.connection import Connection, wait
from typing import Any

from vidshard import errors
from vidshard.devices.monitor import SlotRate
from vidshard.devices.types import DeviceSlot
from vidshard.engine.events import UnitFinished, UnitProgress, UnitStarted, WorkerDown, WorkerUp
from vidshard.engine.units import (
    GroupRankUnit,
    PinnedUnit,
    StreamHostUnit,
    UnitResult,
    WorkUnit,
)

from .base import EventSink, MessageSink, PinnedRun, Recipe, SlotState, WorkerLost
from .boot import WorkerProcess, launch

Launcher = Callable[[DeviceSlot], tuple[Any, Connection]]  # (process, connection), as launch

logger = logging.getLogger(__name__)

STOP_TIMEOUT_S = 10.0
EXIT_GRACE_S = 1.0  # a worker whose pipe closed is exiting: time to reap it
POLL_S = 0.2
TOKENS = itertools.count(1)  # one per unit sent to a worker, never reused
RATE_WINDOW_S = 5.0  # a slot's fps is measured over this much recent time


def rebuild_error(type_name: str, message: str, trace: str, where: str) -> BaseException:
    """Turn a worker's error report back into an exception for the coordinator."""
    cls = getattr(errors, type_name, None)
    if isinstance(cls, type) and issubclass(cls, errors.VidshardError):
        return cls(message)
    logger.debug("worker traceback (%s):\n%s", where, trace)
    return errors.WorkerError(f"{where}: {type_name}: {message}")


def _no_deadline() -> float | None:
    return None


def relay_log(message: tuple[Any, ...], slot_label: str) -> None:
    """A worker's log record, logged here: through the coordinator's handlers, so it
    prints above a progress bar instead of through it."""
    _, level, name, text = message
    logging.getLogger(name).log(level, "[%s] %s", slot_label, text)


@dataclass
class Task:
    unit: WorkUnit | PinnedUnit
    future: Future[UnitResult]
    job: str = ""  # "" is the executor's own job (the CLI's one job)
    model: Recipe | None = None
    sink: EventSink | None = None  # unit events go to the job that submitted the unit
    token: int | None = None  # set when sent to a worker: names this run of the unit
    pinned: PinnedRun | None = None  # a long-lived unit: its caller's handle
    on_message: MessageSink | None = None  # ...and where what it reports goes


class _Rate:
    """What one slot has done: units and frames in all, and frames per second over the
    last few seconds (from progress reports, so a slow unit shows while it runs)."""

    def __init__(self) -> None:
        self.units = 0
        self.recent = SlotRate(window_s=RATE_WINDOW_S)

    @property
    def frames(self) -> int:
        return self.recent.frames

    @property
    def fps(self) -> float:
        return self.recent.recent_fps


class SlotWorker:
    """The coordinator side of one worker process."""

    def __init__(
        self,
        slot: DeviceSlot,
        model: Recipe | None,
        sink: EventSink,
        launcher: Launcher = launch,
    ) -> None:
        self.slot = slot
        self.model = model  # None: an empty pool worker, loads the first job's model
        self.sink = sink
        self._launch = launcher  # a process here (boot.launch), or one on a cluster's node
        self.process: WorkerProcess | None = None
        self.conn: Connection | None = None
        self.load_error: BaseException | None = None
        self.launch_error: BaseException | None = None  # the process could not start
        self.busy = False  # running a unit: shutdown kills it rather than waiting
        self.state = "starting"
        self.current: Task | None = None
        self.cancelling = False  # its unit's job was cancelled: a kill is not a failure
        self.kill_reason: str | None = None  # why the pool killed it (its device quarantined)
        self.shutting_down = False  # its pool shuts down: a long-lived unit ends cancelled
        self.pid: int | None = None
        self.rate = _Rate()
        self.last_failure = ""
        self._kill_lock = threading.Lock()
        self._send_lock = threading.Lock()

    def state_view(self, quarantined: set[str]) -> SlotState:
        """What this slot is doing, for whom, and how fast it has been."""
        task = self.current
        state = self.state
        if self.slot.device.label in quarantined and state != "busy":
            state = "quarantined"
        model = self.model.name if self.model is not None else None
        if task is not None and isinstance(task.unit, StreamHostUnit):
            model = task.unit.recipe.name  # a stream host builds its own detector
        elif task is not None and isinstance(task.unit, GroupRankUnit):
            model = task.unit.model.name  # a generation rank loads its own runner
        return SlotState(
            label=self.slot.label,
            device=self.slot.device.label,
            state=state,
            model=model,
            job=(task.job or None) if task is not None else None,
            pid=self.pid if state not in ("down", "quarantined") else None,
            units=self.rate.units,
            frames=self.rate.frames,
            fps=self.rate.fps,
            pinned=task is not None and task.pinned is not None,
            node=self.slot.device.node,
        )

    def spawn(self) -> None:
        """Start the worker process (on vidshard's entry point, see ``boot``) and send it
        its model; :meth:`await_ready` tells whether it loaded."""
        self.launch_error = None
        self.kill_reason = None
        try:
            self.process, self.conn = self._launch(self.slot)
        except errors.VidshardError as exc:
            self.process, self.conn, self.launch_error = None, None, exc
            return
        with contextlib.suppress(OSError):  # a worker dead already: await_ready tells
            self.conn.send(("model", self.model, logging.getLogger().getEffectiveLevel()))

    def await_ready(self, timeout_s: float) -> bool:
        """Wait for the ready handshake; False (with ``load_error`` set) on failure."""
        if self.launch_error is not None:
            return self._not_ready(self.launch_error)
        # Local references: an aborted start kills the worker (and clears them) meanwhile.
        conn, process = self.conn, self.process
        if conn is None or process is None:
            return self._not_ready(errors.WorkerError(f"worker {self.slot.label} was stopped"))
        deadline = time.monotonic() + timeout_s
        while True:  # log lines may come before the answer
            left = max(0.0, deadline - time.monotonic())
            message: tuple[Any, ...] | None = None
            try:
                ready = wait([conn, process.sentinel], timeout=left)
                if conn in ready:
                    message = conn.recv()
            except (EOFError, OSError, ValueError):  # killed while loading: closed pipe
                message, ready = None, [conn]
            if message is None or message[0] != "log":
                break
            relay_log(message, self.slot.label)
        if message is not None and message[0] == "ready":
            self.pid = message[1]
            self.state = "idle"
            self.sink(WorkerUp(self.slot.label, pid=message[1], load_seconds=message[2]))
            return True
        if message is not None and message[0] == "load_failed":
            type_name, text, trace = message[1:]
            error = rebuild_error(type_name, text, trace, f"loading on {self.slot.label}")
        elif not ready:
            error = errors.WorkerError(
                f"worker {self.slot.label} not ready after {timeout_s:.0f} s"
            )
        else:
            # The pipe or the sentinel fired: the process is exiting; reap it for its code.
            process.join(EXIT_GRACE_S)
            error = errors.WorkerError(
                f"worker {self.slot.label} exited while loading the model ({process.exit_note()})"
            )
        return self._not_ready(error)

    def _not_ready(self, error: BaseException) -> bool:
        self.load_error = error
        self.kill()
        self.state = "down"
        self.sink(WorkerDown(self.slot.label, str(error)))
        return False

    def run_unit(
        self, task: Task, heartbeat_timeout_s: float, deadline_s: Callable[[], float | None]
    ) -> bool:
        """Run one unit to its end; False if the worker died or hung doing it.

        ``deadline_s`` is asked again on every poll: it tightens as other units finish
        and the expected time per frame becomes known.
        """
        self.busy, self.current, self.state = True, task, "busy"
        try:
            return self._run_unit(task, heartbeat_timeout_s, deadline_s)
        finally:
            if task.pinned is not None:
                task.pinned.end()
            self.busy, self.current = False, None
            if self.state == "busy":
                self.state = "idle"

    def _deliver_fn(self, conn: Connection, token: int) -> MessageSink:
        """Sends a message to the long-lived unit sent as ``token`` (its worker ignores
        one that comes after that unit ended)."""

        def deliver(message: tuple[Any, ...]) -> None:
            with self._send_lock, contextlib.suppress(OSError):  # dead: the sentinel tells
                conn.send((*message, token))

        return deliver

    def cancel(self, token: int) -> None:
        """Ask the worker to stop the unit it was sent as ``token``, before its next batch.

        Tokens, not unit ids: two jobs have units of the same name, and a late cancel
        must not stop another job's unit."""
        self.cancelling = True
        conn = self.conn
        if conn is not None:
            with self._send_lock, contextlib.suppress(OSError):
                conn.send(("cancel", token))

    def _run_unit(
        self, task: Task, heartbeat_timeout_s: float, deadline_s: Callable[[], float | None]
    ) -> bool:
        # Local references: shutdown may close ``self.conn`` from another thread.
        conn, process = self.conn, self.process
        assert conn is not None and process is not None
        label = self.slot.label
        unit_id = task.unit.unit_id
        sink = task.sink or self.sink
        try:
            with self._send_lock:
                task.token = next(TOKENS)
                conn.send(("unit", task.unit, task.token))
        except OSError:  # the worker died while idle
            return self._lost(task, f"worker {label} was gone when {unit_id} came")
        if task.pinned is not None:  # what was sent to it before it started follows it
            task.pinned.attach(self._deliver_fn(conn, task.token))
            deadline_s = _no_deadline  # it runs until stopped; heartbeats still count
        sink(UnitStarted(unit_id, label))
        started = last_heard = time.monotonic()
        while True:
            try:
                ready = wait([conn, process.sentinel], timeout=POLL_S)
                # Nothing buffered, end of file or a closed handle: no message will come.
                message = conn.recv() if ready and conn.poll() else None
            except (EOFError, OSError):
                message = None
                ready = [conn]
            now = time.monotonic()
            if message is None and not ready:
                limit = deadline_s()
                if now - last_heard > heartbeat_timeout_s:
                    self.kill()
                    return self._lost(task, f"worker {label} stopped answering on {unit_id}")
                if limit is not None and now - started > limit:
                    self.kill()
                    return self._lost(
                        task, f"{unit_id} on {label} passed its {limit:.0f} s deadline"
                    )
                continue
            if message is None:
                return self._lost(
                    task, self.kill_reason or f"worker {label} died running {unit_id}"
                )
            last_heard = now
            if self._take(task, message, sink):
                return True

    def _take(self, task: Task, message: tuple[Any, ...], sink: EventSink) -> bool:
        """Act on one message of the worker running ``task``; True once the unit ended."""
        label, unit_id = self.slot.label, task.unit.unit_id
        kind = message[0]
        if kind == "log":
            relay_log(message, label)
        elif kind in ("stream_status", "stream_records") or kind.startswith("gen_"):
            if task.on_message is not None:
                task.on_message(message)
        elif kind == "progress":
            self.rate.recent.add(message[2])
            sink(UnitProgress(unit_id, label, frames=message[2]))
        elif kind == "done":
            result: UnitResult = replace(message[1], slot_label=label)
            self.rate.units += 1
            sink(UnitFinished(unit_id, label, result.frames, result.seconds))
            task.future.set_result(result)
            return True
        elif kind == "failed":
            type_name, text, trace = message[2:]
            task.future.set_exception(rebuild_error(type_name, text, trace, f"{unit_id}@{label}"))
            return True
        return False

    def _lost(self, task: Task, reason: str) -> bool:
        if self.process is not None:
            self.process.join(EXIT_GRACE_S)  # reap it, for its exit code
            reason = f"{reason} ({self.process.exit_note()})"
        self.last_failure = reason
        self.state = "down"
        exc: BaseException = errors.Cancelled(reason) if self.cancelling else WorkerLost(reason)
        if self.shutting_down and task.pinned is not None:
            exc = CancelledError()  # not lost: its pool stops, it is not to be placed again
        task.future.set_exception(exc)
        self.sink(WorkerDown(self.slot.label, reason))
        if task.sink is not None and task.sink is not self.sink:
            task.sink(WorkerDown(self.slot.label, reason))
        return False

    def request_stop(self) -> None:
        """Ask an idle worker to exit; it does once it has read the message."""
        conn = self.conn  # the slot thread may kill (and clear) it meanwhile
        if conn is not None:
            with self._send_lock, contextlib.suppress(OSError):
                conn.send(("stop",))

    def kill(self) -> None:
        # Both the slot thread (its worker died) and shutdown may get here at once.
        with self._kill_lock:
            if self.process is not None and self.process.is_alive():
                self.process.kill()
                self.process.join(STOP_TIMEOUT_S)
            if self.conn is not None:
                self.conn.close()
                self.conn = None
