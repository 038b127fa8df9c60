"""One worker process per device slot on this machine.

Each slot has a thread in the coordinator that pulls the next unit from one shared queue
when its worker is idle, sends it down the worker's pipe, relays progress, and watches
the process sentinel, so a worker that dies fails its unit at once instead of hanging
the job. The coordinator's side of one worker is :class:`~.slot.SlotWorker`; this module
holds the pool: supervision, restarts, quarantine, the fair queue and job handles.
"""

from __future__ import annotations

import logging
import statistics
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import CancelledError, Future
from dataclasses import dataclass

from vidshard import errors
from vidshard.devices.types import DeviceSlot, DeviceStatus
from vidshard.engine.events import (
    DeviceQuarantined,
    WorkerDown,
)
from vidshard.engine.units import PinnedUnit, UnitResult, WorkUnit

from .base import EventSink, Executor, MessageSink, PinnedRun, Recipe, SlotState, WorkerLost
from .fair import FairQueue
from .slot import EXIT_GRACE_S, POLL_S, STOP_TIMEOUT_S, SlotWorker, Task

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Supervision:
    """How the executor watches its workers (DESIGN: Failures)."""

    load_timeout_s: float = 600.0  # model load, all slots together
    heartbeat_timeout_s: float = 30.0  # silence after which a worker is declared hung
    min_deadline_s: float = 120.0  # a unit's deadline is never shorter than this...
    deadline_factor: float = 10.0  # ...or than this many times its expected time
    max_consecutive_failures: int = 3  # then the device is quarantined for the job
    restart_backoff_s: float = 0.5  # doubled after each failure in a row
    max_backoff_s: float = 8.0


DEFAULT_SUPERVISION = Supervision()


class LocalExecutor(Executor):
    """Process per slot (started on vidshard's entry point: ``boot``), model loaded once per worker.

    Started with a model, it runs one job's units (the CLI). Started with ``model=None``
    it is a pool that several jobs share through :meth:`job` handles: each unit carries
    its job's model, and a worker holding another model is restarted with it.
    """

    def __init__(self, supervision: Supervision | None = None) -> None:
        self.supervision = supervision or DEFAULT_SUPERVISION
        self._queue: FairQueue[Task] = FairQueue()
        self._workers: list[SlotWorker] = []
        self._threads: list[threading.Thread] = []
        self._live: set[str] = set()
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._model: Recipe | None = None
        self._sink: EventSink = lambda _event: None
        self._failures: dict[str, int] = {}  # device label → failures in a row
        self._last_failure: dict[str, str] = {}
        self._quarantined: set[str] = set()
        self._seconds_per_frame: dict[str, list[float]] = {}  # per job
        self._closed_jobs: set[str] = set()
        self._cancel_hooks: dict[str, list[Callable[[], None]]] = {}  # per job
        self.restarts = 0  # worker restarts after a failure
        self.units_lost = 0  # units whose worker died or hung (each is retried)

    def start(self, slots: Sequence[DeviceSlot], model: Recipe | None, on_event: EventSink) -> None:
        self._model = model
        self._sink = on_event
        with self._lock:
            if self._closing.is_set():  # aborted before it began
                raise errors.WorkerError("the pool is closing")
            self._workers = [self._new_worker(slot, model, on_event) for slot in slots]
        for worker in self._workers:
            worker.spawn()
        if self._closing.is_set():  # aborted while spawning: these are not waited for
            for worker in self._workers:
                worker.kill()
        deadline = time.monotonic() + self.supervision.load_timeout_s
        results = [w.await_ready(max(1.0, deadline - time.monotonic())) for w in self._workers]
        if not any(results):
            errors_seen = [w.load_error for w in self._workers if w.load_error is not None]
            self.shutdown()
            user_errors = [e for e in errors_seen if not isinstance(e, errors.WorkerError)]
            raise (user_errors or errors_seen or [errors.WorkerError("no worker started")])[0]
        for worker, ok in zip(self._workers, results, strict=True):
            self._live.add(worker.slot.label)
            if not ok:
                self._note_failure(worker, str(worker.load_error))
            thread = threading.Thread(
                target=self._slot_loop, args=(worker, ok), name=f"slot-{worker.slot.label}"
            )
            thread.daemon = True
            thread.start()
            self._threads.append(thread)

    def _new_worker(self, slot: DeviceSlot, model: Recipe | None, sink: EventSink) -> SlotWorker:
        """The coordinator's side of the worker for ``slot``: a process on this machine."""
        return SlotWorker(slot, model, sink)

    def submit(self, unit: WorkUnit) -> Future[UnitResult]:
        return self.submit_for("", unit, self._model, self._sink)

    def resubmit(self, unit: WorkUnit) -> Future[UnitResult]:
        return self.submit_for("", unit, self._model, self._sink, first=True)

    def submit_for(
        self,
        job: str,
        unit: WorkUnit,
        model: Recipe | None,
        sink: EventSink,
        *,
        first: bool = False,
    ) -> Future[UnitResult]:
        """Queue a unit of ``job``, to run on a worker holding ``model`` (``first``:
        ahead of the job's other queued units)."""
        future: Future[UnitResult] = Future()
        # Checked and queued under the lock that the last death and shutdown drain the
        # queue under, so no unit is queued after the final drain (it would never end).
        with self._lock:
            refused: BaseException | None = None
            if self._closing.is_set():
                refused = CancelledError()
            elif job in self._closed_jobs:
                refused = errors.Cancelled(f"job {job} was cancelled")
            elif not self._live:
                refused = errors.WorkerError("no worker is alive")
            else:
                self._queue.put(Task(unit, future, job, model, sink), first=first)
        if refused is not None:
            future.set_exception(refused)
        return future

    def submit_pinned(
        self, slot_label: str, unit: PinnedUnit, on_message: MessageSink
    ) -> PinnedRun:
        return self.submit_pinned_for("", slot_label, unit, on_message, self._sink)

    def submit_pinned_for(
        self, job: str, slot_label: str, unit: PinnedUnit, on_message: MessageSink, sink: EventSink
    ) -> PinnedRun:
        """Queue a long-lived unit of ``job`` for the slot ``slot_label`` alone; it runs on
        an empty worker (one holding another model is restarted empty: the unit builds
        its own model) until it ends, its worker dies or its job is cancelled."""
        run = PinnedRun(slot_label)
        with self._lock:
            labels = {worker.slot.label: worker for worker in self._workers}
            refused: BaseException | None = None
            if self._closing.is_set():
                refused = CancelledError()
            elif job in self._closed_jobs:
                refused = errors.Cancelled(f"job {job} was cancelled")
            elif slot_label not in labels:
                refused = errors.ConfigError(
                    f"no slot {slot_label!r} (slots: {', '.join(labels) or 'none'})"
                )
            elif slot_label not in self._live:
                refused = WorkerLost(f"slot {slot_label} is down")
            else:
                task = Task(unit, run.future, job, None, sink, pinned=run, on_message=on_message)
                self._queue.put(task, slot=slot_label)
        if refused is not None:
            run.end()
            run.future.set_exception(refused)
        return run

    def job(self, job_id: str, model: Recipe | None, priority: int = 0) -> PoolJob:
        """A handle that runs one job's units on this pool, sharing it fairly."""
        with self._lock:
            self._closed_jobs.discard(job_id)
        self._queue.add_job(job_id, priority)
        return PoolJob(self, job_id, model)

    def cancel_job(self, job_id: str, wait_s: float = STOP_TIMEOUT_S) -> None:
        """Fail the job's queued units, stop its running ones within a batch, and
        return once none of its units holds a slot (killing a worker that does not
        stop in ``wait_s``)."""
        with self._lock:
            self._closed_jobs.add(job_id)
            queued = self._queue.remove_job(job_id)
            hooks = self._cancel_hooks.pop(job_id, [])
        for hook in hooks:  # work of the job that runs outside its units (a device group)
            hook()
        _fail(queued, errors.Cancelled(f"job {job_id} was cancelled"))
        told: set[int] = set()
        deadline = time.monotonic() + wait_s
        while True:
            holding = [w for w in self._workers if (t := w.current) is not None and t.job == job_id]
            if not holding:
                break
            if time.monotonic() > deadline:
                for worker in holding:
                    logger.warning(
                        "%s did not stop a cancelled unit: killing it", worker.slot.label
                    )
                    worker.cancelling = True
                    worker.kill()
                break
            for worker in holding:  # units taken while this runs are told too
                task = worker.current
                token = task.token if task is not None else None
                if token is not None and token not in told:  # None: not sent yet
                    told.add(token)
                    worker.cancel(token)
            time.sleep(0.02)
        with self._lock:
            self._seconds_per_frame.pop(job_id, None)

    def add_cancel_hook(self, job_id: str, hook: Callable[[], None]) -> None:
        """Call ``hook`` when ``job_id`` is cancelled (at once if it already was): for
        work of the job that runs outside its own units, as on a device group."""
        with self._lock:
            closed = job_id in self._closed_jobs
            if not closed:
                self._cancel_hooks.setdefault(job_id, []).append(hook)
        if closed:
            hook()

    def release_job(self, job_id: str) -> None:
        """Forget a finished job (after :meth:`cancel_job`, once it has stopped)."""
        with self._lock:
            self._closed_jobs.discard(job_id)
            self._cancel_hooks.pop(job_id, None)
            self._seconds_per_frame.pop(job_id, None)
        self._queue.remove_job(job_id)

    def live_slots(self) -> list[str]:
        with self._lock:
            return sorted(self._live)

    def slot_states(self) -> list[SlotState]:
        """Every slot: what it is doing, for whom, and how fast it has been."""
        with self._lock:
            quarantined = set(self._quarantined)
        return [worker.state_view(quarantined) for worker in self._workers]

    def queued_units(self, job_id: str | None = None) -> int:
        return self._queue.queued(job_id)

    def _slot_loop(self, worker: SlotWorker, ready: bool) -> None:
        if not ready and not self._recover(worker):
            self._slot_died(worker)
            return
        device = worker.slot.device.label
        while not self._closing.is_set():
            if device in self._quarantined:
                self._slot_died(worker)
                return
            task = self._queue.get(worker.model, timeout=POLL_S, slot=worker.slot.label)
            if task is None:
                if not self._idle_worker_alive(worker) and not self._recover(worker):
                    self._slot_died(worker)
                    return
                continue
            worker.cancelling = False
            worker.current = task  # from now on a cancel of its job reaches this slot
            try:
                if not task.future.set_running_or_notify_cancel():
                    continue
                if task.model != worker.model and not self._switch_model(worker, task):
                    if worker.process is None and not self._recover(worker):
                        self._slot_died(worker)
                        return
                    continue
                with self._lock:
                    closed = task.job in self._closed_jobs
                if closed:  # cancelled while this worker loaded the job's model
                    task.future.set_exception(errors.Cancelled(f"job {task.job} was cancelled"))
                    continue
                if task.pinned is not None and device in self._quarantined:
                    task.future.set_exception(WorkerLost(f"device {device} was quarantined"))
                    continue
                ok = worker.run_unit(
                    task, self.supervision.heartbeat_timeout_s, self._deadline_fn(task)
                )
            finally:
                worker.current = None
                self._queue.task_done(task.job)
                if task.pinned is not None:
                    task.pinned.end()
            cancelled, worker.cancelling = worker.cancelling, False
            if ok:
                self._note_success(worker, task)
                continue
            if self._closing.is_set():  # shutdown killed it: no failure of its device
                return
            if not cancelled:
                with self._lock:
                    self.units_lost += 1
                self._note_failure(worker, worker.last_failure)
            if not self._recover(worker, count=not cancelled):
                self._slot_died(worker)
                return

    def _idle_worker_alive(self, worker: SlotWorker) -> bool:
        """False (a failure noted) when an idle worker has died: restart it now, not when
        a unit finds it gone, so the pool's health is true between jobs too."""
        process = worker.process
        if process is None or process.is_alive():
            return True
        process.join(EXIT_GRACE_S)
        reason = f"worker {worker.slot.label} died while idle ({process.exit_note()})"
        worker.state = "down"
        worker.sink(WorkerDown(worker.slot.label, reason))
        self._note_failure(worker, reason)
        return False

    def _switch_model(self, worker: SlotWorker, task: Task) -> bool:
        """Restart ``worker`` with the task's model; False (task failed) if it cannot load.

        A model that cannot load (a user error) fails its job, and the slot goes back to
        an empty worker. A worker that crashes or times out loading is a device failure:
        the unit is retried and the slot recovers like any dead worker.
        """
        worker.kill()
        worker.model = task.model
        worker.state = "loading"
        worker.spawn()
        if worker.await_ready(self.supervision.load_timeout_s):
            return True
        error = worker.load_error or errors.WorkerError("model load failed")
        if isinstance(error, errors.WorkerError):
            task.future.set_exception(WorkerLost(str(error)))
            self._note_failure(worker, str(error))
            return False  # worker.process is None: the caller recovers the slot
        task.future.set_exception(error)
        worker.model = None
        worker.spawn()
        if not worker.await_ready(self.supervision.load_timeout_s):
            self._note_failure(worker, str(worker.load_error))
        return False

    def _deadline_fn(self, task: Task) -> Callable[[], float | None]:
        """A unit's deadline: ``deadline_factor`` x its expected time, once one is known."""
        frames = max(1, task.unit.frames)

        def deadline_s() -> float | None:
            with self._lock:
                timings = self._seconds_per_frame.get(task.job)
                if not timings:
                    return None
                expected_s = frames * statistics.median(timings[-32:])
            return max(
                self.supervision.min_deadline_s, self.supervision.deadline_factor * expected_s
            )

        return deadline_s

    def _note_success(self, worker: SlotWorker, task: Task) -> None:
        with self._lock:
            self._failures[worker.slot.device.label] = 0
            if not task.future.cancelled() and task.future.exception() is None:
                result = task.future.result()
                if result.frames > 0:
                    timings = self._seconds_per_frame.setdefault(task.job, [])
                    timings.append(result.seconds / result.frames)

    def _note_failure(self, worker: SlotWorker, reason: str) -> int:
        """Count a failure of the slot's device; quarantine it at the limit."""
        device = worker.slot.device.label
        with self._lock:
            count = self._failures.get(device, 0) + 1
            self._failures[device] = count
        if count >= self.supervision.max_consecutive_failures:
            self._quarantine(device, f"{count} failures in a row; last: {reason}")
        return count

    def _quarantine(self, device: str, message: str) -> None:
        """Take ``device`` out of the pool (once): its slots stop, its streams move."""
        with self._lock:
            if device in self._quarantined:
                return
            self._quarantined.add(device)
            self._last_failure[device] = message  # the reason as it stood then
        logger.warning("quarantining %s: %s", device, message)
        self._retire_pinned(device, f"device {device} was quarantined ({message})")
        self._sink(DeviceQuarantined(device, message))

    def _retire_pinned(self, device: str, reason: str) -> None:
        """End the long-lived units on a quarantined device's slots (their work is placed
        again elsewhere): their workers are killed, and the units lost with ``reason``."""
        for worker in self._workers:
            task = worker.current
            if worker.slot.device.label == device and task is not None and task.pinned:
                worker.kill_reason = reason
                worker.kill()

    def _recover(self, worker: SlotWorker, count: bool = True) -> bool:
        """Restart a dead worker, backing off; False once its device is quarantined.

        ``count=False``: the worker was killed on purpose (its unit was cancelled), so
        it comes back at once and the restart is no failure of its device.
        """
        sup = self.supervision
        failures = self._failures.get(worker.slot.device.label, 1) if count else 0
        while not self._closing.is_set():
            if worker.slot.device.label in self._quarantined:
                return False
            delay_s = min(sup.max_backoff_s, sup.restart_backoff_s * 2 ** (failures - 1))
            if failures and self._closing.wait(delay_s):
                return False
            worker.kill()
            worker.state = "starting"
            worker.spawn()
            if count:
                with self._lock:
                    self.restarts += 1
            if worker.await_ready(sup.load_timeout_s):
                return True
            failures = self._note_failure(worker, str(worker.load_error))
        return False

    def quarantined(self) -> list[str]:
        with self._lock:
            return sorted(self._quarantined)

    def _slot_died(self, worker: SlotWorker) -> None:
        worker.kill()
        worker.state = "down"
        with self._lock:
            self._live.discard(worker.slot.label)
            pinned = self._queue.drain_slot(worker.slot.label)
            orphans = self._queue.drain() if not self._live else []
            reasons = "; ".join(
                f"{device} quarantined after {self._last_failure.get(device, '?')}"
                for device in sorted(self._quarantined)
            )
        _fail(
            pinned, WorkerLost(f"slot {worker.slot.label} is down: {reasons or 'its worker died'}")
        )
        _fail(orphans, errors.WorkerError(f"no worker is left: {reasons or 'every worker died'}"))

    def abort_start(self) -> None:
        """Stop workers still starting, now (their job was refused meanwhile): a
        :meth:`start` under way then fails without waiting for them to load."""
        with self._lock:
            self._closing.set()
            workers = list(self._workers)
        for worker in workers:
            worker.kill()

    def shutdown(self) -> None:
        with self._lock:
            self._closing.set()
            queued = self._queue.drain()
        _fail(queued, CancelledError())
        for worker in self._workers:
            worker.shutting_down = True
        for worker in self._workers:
            if worker.busy:  # its unit's result is no longer wanted: stop at once
                worker.kill()
        for thread in self._threads:
            thread.join(timeout=0.5)
        for worker in self._workers:  # all at once: workers exit in parallel
            worker.request_stop()
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for worker in self._workers:
            if worker.process is not None:
                worker.process.join(max(0.0, deadline - time.monotonic()))
        for worker in self._workers:
            worker.kill()
            worker.state = "down"
        with self._lock:
            self._live.clear()


class PoolJob(Executor):
    """One job's view of a shared :class:`LocalExecutor`: ``start`` takes the job's
    model and event sink (the pool's slots are already up), ``shutdown`` cancels what
    is left of the job and frees its slots; the pool stays up."""

    def __init__(self, pool: LocalExecutor, job_id: str, model: Recipe | None) -> None:
        self.pool = pool
        self.job_id = job_id
        self.model = model
        self._sink: EventSink = lambda _event: None

    def start(self, slots: Sequence[DeviceSlot], model: Recipe | None, on_event: EventSink) -> None:
        if model is not None:
            self.model = model
        self._sink = on_event

    def submit(self, unit: WorkUnit) -> Future[UnitResult]:
        return self.pool.submit_for(self.job_id, unit, self.model, self._sink)

    def resubmit(self, unit: WorkUnit) -> Future[UnitResult]:
        return self.pool.submit_for(self.job_id, unit, self.model, self._sink, first=True)

    def live_slots(self) -> list[str]:
        return self.pool.live_slots()

    def submit_pinned(
        self, slot_label: str, unit: PinnedUnit, on_message: MessageSink
    ) -> PinnedRun:
        return self.pool.submit_pinned_for(self.job_id, slot_label, unit, on_message, self._sink)

    def slot_states(self) -> list[SlotState]:
        return self.pool.slot_states()

    def resolve_slots(self, spec: str, workers_per_device: int = 1) -> list[DeviceSlot]:
        return self.pool.resolve_slots(spec, workers_per_device)

    def check_storage(self, read: Sequence[str], write: Sequence[str]) -> None:
        self.pool.check_storage(read, write)

    def device_readings(self) -> list[DeviceStatus] | None:
        return self.pool.device_readings()

    def quarantined(self) -> list[str]:
        return self.pool.quarantined()

    def on_cancel(self, hook: Callable[[], None]) -> None:
        """Call ``hook`` when this job is cancelled."""
        self.pool.add_cancel_hook(self.job_id, hook)

    def shutdown(self) -> None:
        self.pool.cancel_job(self.job_id)


def _fail(tasks: list[Task], exc: BaseException) -> None:
    """Fail tasks outside the lock: their futures' callbacks may submit again."""
    for task in tasks:
        if task.pinned is not None:
            task.pinned.end()
        if task.future.set_running_or_notify_cancel():
            task.future.set_exception(exc)
