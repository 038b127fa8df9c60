"""The job runner behind ``vidshard serve``: one device pool, a persistent queue, cancel.

Jobs live in the store; this process keeps only what is running. A dispatcher thread
starts queued jobs (priority, then submission order) while fewer than
``max_running_jobs`` run; each runs its task (the registered task its record names,
:func:`vidshard.tasks.run_task`) on a handle of the one shared pool, so concurrent jobs
share the slots unit by unit. A job left ``running`` by a stopped or
killed server is queued again at the next start and resumes from its work dir's manifest.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import stat
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

from vidshard.devices.monitor import DeviceMonitor
from vidshard.devices.types import DeviceStatus
from vidshard.engine.progress import ProgressSnapshot
from vidshard.errors import Cancelled, ConfigError, InputError, VidshardError
from vidshard.executors.base import Executor, Recipe, SlotState
from vidshard.executors.local import LocalExecutor
from vidshard.media.source import FileIdentity
from vidshard.tasks import TaskRegistry, default_tasks, run_task
from vidshard.tasks.options import options_from_request, stored_params

from . import security
from .auth import (
    ANONYMOUS,
    Principal,
    job_owner,
    list_owner,
    scoped_idempotency_key,
)
from .download import DownloadPolicy, download
from .errors import Conflict, NotFound, clipped
from .inputs import ServedModels
from .job_inputs import JobInputs, probe_input
from .lock import DataDirLock
from .schemas import JobRequest
from .settings import ServiceSettings
from .store import CANCELLED, FAILED, QUEUED, RUNNING, SUCCEEDED, JobRecord, JobStore
from .store_errors import StoreUnavailable
from .store_watch import StoreWatch

logger = logging.getLogger(__name__)

PERSIST_INTERVAL_S = 1.0  # progress written to the store at most this often
JANITOR_INTERVAL_S = 30.0
READINGS_TTL_S = 1.0  # device readings are cached this long (monitoring is not free)
DOWNLOADS_FOLDER = ".input"  # in a job's output folder: hidden, so no output name meets it


@dataclass
class _Running:
    record: JobRecord
    cancel: threading.Event = field(default_factory=threading.Event)
    # Set by a cancel and by the service stopping: ends a download within a second.
    abort: threading.Event = field(default_factory=threading.Event)
    snapshot: ProgressSnapshot | None = None
    persisted_s: float = 0.0
    thread: threading.Thread | None = None


class ServicePart(Protocol):
    """Something that runs with the job service on its pool (the live streams)."""

    def start(self) -> None:
        """Called once the pool and the dispatcher are up."""

    def stop(self) -> None:
        """Called before the pool shuts down."""

    def fetch(self, record: JobRecord, folder: Path, abort: threading.Event) -> Path | None:
        """A URL input this part gets itself (a live stream's window), as a file in
        ``folder``; None: not its own (it is downloaded)."""


@dataclass(frozen=True)
class LiveJob:
    """A stored job with what only this process knows: live progress and queue place."""

    record: JobRecord
    queue_position: int | None
    fps: float | None
    eta_s: float | None
    frames_done: int
    frames_total: int | None
    unit: str = "frames"  # what frames_done counts: the task's progress unit

    @property
    def progress(self) -> float:
        if self.record.state == SUCCEEDED:
            return 1.0
        if not self.frames_total:
            return 0.0
        return min(1.0, self.frames_done / self.frames_total)


def _nodes(states: list[SlotState], alive: set[str]) -> dict[str, dict[str, int]]:
    """Slots per cluster node (none on one machine, where every node is "")."""
    nodes: dict[str, dict[str, int]] = {}
    for state in states:
        if state.node:
            counts = nodes.setdefault(state.node, {"slots_alive": 0, "slots_total": 0})
            counts["slots_total"] += 1
            counts["slots_alive"] += state.label in alive
    return nodes


def _pool_for(settings: ServiceSettings) -> LocalExecutor:
    """The shared pool the settings name: processes here, or actors on a Ray cluster."""
    from vidshard.executors.registry import create_executor, executor_spec

    pool = create_executor(executor_spec(settings.executor, settings.ray_address))
    assert isinstance(pool, LocalExecutor)  # both built-in backends are pools
    return pool


class JobService:
    """Submit, watch and cancel jobs; run them on one shared pool of slots."""

    def __init__(
        self,
        settings: ServiceSettings,
        *,
        pool: LocalExecutor | None = None,
        monitor: DeviceMonitor | None = None,
        tasks: TaskRegistry | None = None,
    ) -> None:
        self.settings = settings
        self.tasks: TaskRegistry = tasks if tasks is not None else default_tasks()
        self.models = ServedModels(settings)
        self.inputs = JobInputs(settings)
        self.store = JobStore(settings.db_url)
        self.store_watch = StoreWatch(self.store)
        self.data_dir_lock = DataDirLock(settings.data_dir)
        self.pool = pool or _pool_for(settings)
        self._own_pool = pool is None
        self.monitor = monitor or DeviceMonitor()
        self._running: dict[str, _Running] = {}
        self._lock = threading.Lock()
        self._starting = threading.Lock()  # held from the move to running to registration
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._dispatcher: threading.Thread | None = None
        self._readings: tuple[float, list[DeviceStatus]] = (0.0, [])
        self._readings_lock = threading.Lock()
        self.started = False
        self.finished_jobs = 0
        self._parts: list[ServicePart] = []

    def attach(self, part: ServicePart) -> None:
        """Run ``part`` with the service: started after the pool (now, if the service
        runs already), stopped before it."""
        self._parts.append(part)
        if self.started:
            part.start()

    # --- life cycle --------------------------------------------------------------------

    def start(self) -> None:
        """Lock the data dir, open the store, requeue interrupted jobs, start the pool and
        the dispatcher. The lock comes first: a second server on the same data dir stops
        there (:class:`~.lock.DataDirInUse`), before it touches the store."""
        self.data_dir_lock.acquire()
        try:
            for folder in (self.settings.data_dir, self.settings.outputs_dir, self.uploads_dir):
                folder.mkdir(parents=True, exist_ok=True)
            self.store.create_all()
            requeued = self.store.requeue_interrupted()
        except BaseException:
            self.store.close()
            self.data_dir_lock.release()
            raise
        if requeued:
            logger.info("requeued %d job(s) interrupted by the last stop", len(requeued))
        if self._own_pool:
            try:
                slots = self.pool.resolve_slots(
                    self.settings.devices, self.settings.workers_per_device
                )
                self.pool.start(slots, None, lambda _event: None)
            except BaseException:
                self.pool.shutdown()  # a cluster connection made to resolve them is closed
                self.store.close()
                self.data_dir_lock.release()
                raise
        self._dispatcher = threading.Thread(target=self._dispatch_loop, name="dispatcher")
        self._dispatcher.daemon = True
        self._dispatcher.start()
        for part in self._parts:
            part.start()
        self.started = True

    def stop(self) -> None:
        """Stop taking jobs; running ones are interrupted and resume at the next start."""
        self._stopping.set()
        self._wake.set()
        for part in reversed(self._parts):
            try:
                part.stop()
            except Exception:
                logger.exception("%s did not stop cleanly", type(part).__name__)
        from vidshard.engine.generate import close_shared_keeper

        close_shared_keeper(self.pool)  # its device groups (generate jobs) are dismissed
        if self._own_pool:
            self.pool.shutdown()
        with self._lock:
            running = list(self._running.values())
        for job in running:  # a download stops at once; the job resumes at the next start
            job.abort.set()
        for job in running:
            if job.thread is not None:
                job.thread.join(timeout=15)
        if self._dispatcher is not None:
            self._dispatcher.join(timeout=5)
        self.store_watch.flush()
        for job_id, state in self.store_watch.waiting().items():
            logger.error(
                "job %s %s, but the store never took it: it runs again at the next start",
                job_id,
                state,
            )
        self.store.close()
        self.data_dir_lock.release()
        self.started = False

    @property
    def uploads_dir(self) -> Path:
        return self.settings.uploads_dir

    def new_upload(self, filename: str, principal: Principal = ANONYMOUS) -> tuple[str, Path]:
        """A fresh upload id, owned by ``principal``, and the path its bytes go to."""
        return self.inputs.new_upload(filename, principal)

    def upload_path(self, upload_id: str, principal: Principal = ANONYMOUS) -> Path:
        return self.inputs.upload_path(upload_id, principal)

    # --- submit ------------------------------------------------------------------------

    def submit(
        self,
        request: JobRequest,
        idempotency_key: str | None = None,
        principal: Principal = ANONYMOUS,
        *,
        checked_input: tuple[str, str, FileIdentity | None] | None = None,
        job_id: str | None = None,
    ) -> tuple[JobRecord, bool]:
        """Check a request and queue it, owned by ``principal``; (the job, False) when the
        principal sent the same idempotency key before. ``checked_input``: its input as
        stored (source, kind, identity), checked by the caller (a live stream's window,
        which a ServicePart fetches); ``job_id``: the id the caller chose for it."""
        idempotency_key = scoped_idempotency_key(principal, idempotency_key)
        if idempotency_key is not None:
            existing = self.store.find_by_idempotency_key(idempotency_key)
            if existing is not None:
                return existing, False
        job_id = job_id or uuid.uuid4().hex
        source, kind, identity = checked_input or self.inputs.of(request, principal)
        source_name = Path(source.split("?", 1)[0].rsplit("/", 1)[-1] if kind == "url" else source)
        task = self.tasks.get(request.task)
        others = {t.name: t.options_type for t in self.tasks if t is not task}
        options = options_from_request(task.options_type, request.params, self.settings, others)
        prepared = task.check(options, self.models)  # refused now if it cannot work
        needed = task.slots_needed(options)
        slots = len(self.pool.slot_states()) if needed > 1 else needed
        if needed > slots:
            raise ConfigError(
                f"the job needs {needed} slots at once (a device group); this server has "
                f"{slots} slot(s)"
            )
        default_name = task.output_name(source_name, options, prepared)
        suffixes = task.output_suffixes
        if kind != "url":
            probe_input(task, source, kind, identity)  # unreadable: refused now, not in an hour
        if request.output_name is not None:
            name = security.check_output_name(request.output_name, suffixes)
        else:
            name = security.safe_filename(default_name, f"output{suffixes[0]}")
        output_dir = security.output_dir_for(job_id, self.settings.outputs_dir)
        output = output_dir / name
        record = JobRecord(
            id=job_id,
            task=request.task,
            input_path=source,
            input_kind=kind,
            input_identity=identity.to_dict() if identity is not None else None,
            priority=request.priority,
            params=stored_params(options),
            output_path=str(output),
            idempotency_key=idempotency_key,
            owner=job_owner(principal),
        )
        stored, created = self.store.add(record)
        if created:
            self._wake.set()
        return stored, created

    # --- reading -----------------------------------------------------------------------

    def get(self, job_id: str, principal: Principal = ANONYMOUS) -> LiveJob:
        """A job ``principal`` may see: another key's job is not found (404, not 403)."""
        found = self.store.get_with_position(job_id)
        if found is None or not principal.owns(found[0].owner):
            raise NotFound(f"no job {clipped(job_id)}")
        return self._live(*found)

    def list_jobs(
        self,
        states: list[str] | None,
        limit: int,
        offset: int,
        principal: Principal = ANONYMOUS,
    ) -> tuple[list[LiveJob], int]:
        """A page of the jobs ``principal`` may see, and how many there are."""
        owner = list_owner(principal)
        page, total = self.store.list_with_positions(states, limit, offset, owner)
        return [self._live(record, position) for record, position in page], total

    def _live(self, record: JobRecord, position: int | None) -> LiveJob:
        with self._lock:
            running = self._running.get(record.id)
            snapshot = running.snapshot if running is not None else None
        unit = self.tasks.get(record.task).progress_unit if record.task in self.tasks else "frames"
        if record.state == RUNNING and snapshot is not None:
            return LiveJob(
                record,
                None,
                snapshot.fps,
                snapshot.eta_s,
                snapshot.frames_done,
                snapshot.frames_total,
                unit,
            )
        return LiveJob(record, position, None, None, record.frames_done, record.frames_total, unit)

    def result_path(
        self, job_id: str, name: str | None = None, principal: Principal = ANONYMOUS
    ) -> Path:
        """The job's output file, or another file of its output folder by ``name``."""
        live = self.get(job_id, principal)
        if live.record.state != SUCCEEDED or live.record.output_path is None:
            raise Conflict(f"job {job_id} has no result: it is {live.record.state}")
        path = Path(live.record.output_path)
        if name is not None:
            if name != Path(name).name or name.startswith(".") or "\0" in name:
                raise InputError(f"name: expected a file name of the job's outputs, got {name!r}")
            path = path.parent / name
        found = security.stat_path(path, "name", name or path.name)  # too long: 422
        if found is None or not stat.S_ISREG(found.st_mode):
            raise NotFound(f"the result of job {job_id} is gone (expired or removed)")
        return path

    # --- cancel ------------------------------------------------------------------------

    def cancel(
        self, job_id: str, wait_s: float = 15.0, principal: Principal = ANONYMOUS
    ) -> LiveJob:
        """Cancel a queued or running job; a running one stops within a batch, or within
        a quarter of a second while it downloads its URL input."""
        record = self.store.get(job_id)
        if record is None or not principal.owns(record.owner):
            raise NotFound(f"no job {clipped(job_id)}")
        if record.is_final:
            raise Conflict(f"job {job_id} already {record.state}")
        if self.store.transition(job_id, [QUEUED], CANCELLED, cancel_requested=True):
            return self.get(job_id)
        self.store.update(job_id, cancel_requested=True)
        # Not queued any more: running, or being started right now (then wait for it).
        with self._starting, self._lock:
            running = self._running.get(job_id)
        if running is not None:
            running.cancel.set()
            running.abort.set()
            self.pool.cancel_job(job_id)
            if running.thread is not None:
                running.thread.join(wait_s)
        return self.get(job_id)

    # --- devices and health --------------------------------------------------------------

    def readings(self) -> list[DeviceStatus]:
        with self._readings_lock:
            taken_s, readings = self._readings
            if time.monotonic() - taken_s > READINGS_TTL_S:
                readings = self.pool.device_readings() or self.monitor.snapshot()
                self._readings = (time.monotonic(), readings)
            return readings

    def slots(self) -> list[SlotState]:
        return self.pool.slot_states()

    def health(self) -> tuple[bool, dict[str, Any]]:
        alive = self.pool.live_slots()
        store_problem = self.store_watch.problem()  # a real write, cached for a moment
        reasons = []
        if not alive:
            reasons.append("no worker slot is alive")
        if store_problem is not None:
            reasons.append(str(store_problem))
        quarantined = self.pool.quarantined()
        states = self.pool.slot_states()
        slots_total = len(states)
        nodes = _nodes(states, set(alive))
        return not reasons, {
            "status": "healthy" if not reasons else "unhealthy",
            "reasons": reasons,
            "slots_alive": len(alive),
            "slots_total": slots_total,
            "quarantined": quarantined,
            "store": "ok" if store_problem is None else store_problem.reason,
            "running_jobs": self.running_count(),
            # What the generation service's clients read (seed 002): one process here
            # drives every slot, so it is rank 0 of a pipeline as wide as the pool.
            "rank": 0,
            "total_tasks": self._total_jobs() if store_problem is None else None,
            "pipeline_world_size": slots_total,
            "pipeline_rank": 0,
            # In a cluster: each node's live slots, and the nodes none of whose slots live.
            "nodes": nodes,
            "nodes_gone": sorted(node for node, n in nodes.items() if n["slots_alive"] == 0),
        }

    def _total_jobs(self) -> int | None:
        """Every job the store holds, whatever its state; None if it cannot say now."""
        try:
            return sum(self.store.counts_by_state().values())
        except StoreUnavailable:
            return None

    def running_count(self) -> int:
        with self._lock:
            return len(self._running)

    # --- running -----------------------------------------------------------------------

    def _dispatch_loop(self) -> None:
        next_clean_s = 0.0
        while not self._stopping.is_set():
            self._wake.wait(1.0)
            self._wake.clear()
            if self._stopping.is_set():
                return
            try:
                self.store_watch.flush()
                self._dispatch()
                if time.monotonic() >= next_clean_s:
                    self.expire()
                    next_clean_s = time.monotonic() + JANITOR_INTERVAL_S
            except StoreUnavailable:  # logged by the store; the next round tries again
                pass
            except Exception:
                logger.exception("dispatcher round failed")

    def _dispatch(self) -> None:
        while self.running_count() < self.settings.max_running_jobs:
            with self._lock:
                busy = set(self._running)
            waiting = [r for r in self.store.queued() if r.id not in busy]
            if not waiting or self._stopping.is_set():
                return
            with self._starting:  # a cancel in between waits, then finds it registered
                record = self.store.transition(waiting[0].id, [QUEUED], RUNNING)
                if record is None:  # cancelled meanwhile
                    continue
                running = _Running(record)
                running.thread = threading.Thread(
                    target=self._run_job,
                    args=(running,),
                    name=f"job-{record.id[:8]}",
                    daemon=True,
                )
                with self._lock:
                    self._running[record.id] = running
                running.thread.start()

    def _run_job(self, running: _Running) -> None:
        record = running.record
        job_id = record.id
        assert record.output_path is not None
        output = Path(record.output_path)
        try:
            output.parent.mkdir(parents=True, exist_ok=True)
            source = (
                self._fetch(record, output.parent / DOWNLOADS_FOLDER, running.abort)
                if record.input_kind == "url"
                else Path(record.input_path)
            )
            identity = self.inputs.source_identity(record)
            task = self.tasks.get(record.task)
            options = options_from_request(task.options_type, record.params, self.settings)

            def executor(recipe: Recipe) -> Executor:
                if running.cancel.is_set():
                    raise Cancelled(f"job {job_id} was cancelled")
                return self.pool.job(job_id, recipe, record.priority)

            output.unlink(missing_ok=True)  # a rerun after a restart writes its output anew
            result = run_task(
                task,
                [source],
                output,
                options,
                executor_for=executor,
                identities={str(source): identity} if identity is not None else None,
                models=self.models,
                on_progress=lambda snap: self._progress(running, snap),
            )
            if running.cancel.is_set():  # cancelled while the output was being joined
                raise Cancelled(f"job {job_id} was cancelled")
            outcome = task.outcome(result)
            if outcome.error is not None:  # the run finished, but what it was asked failed
                raise InputError(outcome.error)
            self.store_watch.finish(
                job_id, SUCCEEDED, frames_done=outcome.frames, frames_total=outcome.frames
            )
        except BaseException as exc:
            self._finish_failed(running, output, exc)
        finally:
            self.pool.release_job(job_id)
            with self._lock:
                self._running.pop(job_id, None)
            self.finished_jobs += 1
            self._wake.set()

    def _fetch(self, record: JobRecord, folder: Path, abort: threading.Event) -> Path:
        """A URL input as a file: fetched by a part that owns it, else downloaded."""
        for part in self._parts:
            fetched = part.fetch(record, folder, abort)
            if fetched is not None:
                return fetched
        return download(record.input_path, folder, DownloadPolicy.of(self.settings), abort)

    def _finish_failed(self, running: _Running, output: Path, exc: BaseException) -> None:
        job_id = running.record.id
        cancelled = running.cancel.is_set()
        if self._stopping.is_set() and not cancelled:
            logger.info("job %s interrupted by the stop; it resumes at the next start", job_id)
            return  # left running in the store: requeued at the next start
        if cancelled or isinstance(exc, Cancelled):
            shutil.rmtree(output.parent, ignore_errors=True)
            self.store_watch.finish(job_id, CANCELLED, **_last_progress(running))
            logger.info("job %s cancelled", job_id)
            return
        if isinstance(exc, VidshardError):
            message, kind = str(exc), type(exc).__name__
        else:
            logger.error("job %s failed", job_id, exc_info=exc)
            message, kind = f"internal error: {type(exc).__name__}: {exc}", "InternalError"
        shutil.rmtree(output.parent, ignore_errors=True)
        self.store_watch.finish(
            job_id, FAILED, error=message, error_type=kind, **_last_progress(running)
        )
        logger.warning("job %s failed: %s", job_id, message)

    def _progress(self, running: _Running, snapshot: ProgressSnapshot) -> None:
        if snapshot.frames_done < running.record.frames_done:  # resumed after a restart
            snapshot = replace(snapshot, frames_done=running.record.frames_done)
        running.snapshot = snapshot
        now = time.monotonic()
        if now - running.persisted_s >= PERSIST_INTERVAL_S:
            running.persisted_s = now
            # A store that cannot take it now is no reason to stop the job: the next
            # write carries the newer count (and the store has logged why).
            with contextlib.suppress(StoreUnavailable):
                self.store.update(
                    running.record.id,
                    frames_done=snapshot.frames_done,
                    frames_total=snapshot.frames_total,
                )

    # --- expiry --------------------------------------------------------------------------

    def expire(self, now: float | None = None) -> int:
        """Remove finished jobs older than the TTL, with their outputs and uploads."""
        cutoff = (time.time() if now is None else now) - self.settings.job_ttl_s
        removed = 0
        for record in self.store.finished_before(cutoff):
            if record.output_path is not None:
                shutil.rmtree(Path(record.output_path).parent, ignore_errors=True)
            if record.input_kind == "upload":
                shutil.rmtree(Path(record.input_path).parent, ignore_errors=True)
            removed += self.store.delete(record.id)
        return removed


def _last_progress(running: _Running) -> dict[str, int]:
    """The frames a job that ends unfinished had shown last: its progress stays there."""
    snapshot = running.snapshot
    if snapshot is None:
        return {}
    return {"frames_done": snapshot.frames_done, "frames_total": snapshot.frames_total}


ProgressCallback = Callable[[ProgressSnapshot], None]
