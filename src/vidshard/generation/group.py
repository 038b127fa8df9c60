"""Generation groups on the pool's own workers: form, reuse, dismiss, recover.

A group is G slots of the shared pool, each running one rank (a :class:`GroupRankUnit`
pinned to it: the next thing that slot takes, so file jobs and streams share the devices
through the fair queue). Forming is all or none and one group at a time: the G rank units
are queued for G free slots, and only once every one holds its slot are they told to
join the process group. So two forming groups never each hold part of what the other
needs. The loaded group stays for the next request with the same model and layout, until
it has been idle ``idle_release_s`` or other units wait in the pool.

A rank that dies or hangs (its peers' collectives time out) breaks the group: every rank
unit is ended (a rank that does not stop is killed: no orphan process), a new group is
formed, preferring other slots, and the request is tried once more; a second failure
fails it with both reasons (:class:`WorkerError`).
"""

from __future__ import annotations

import logging
import queue
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import wait
from dataclasses import replace
from typing import Any

from vidshard import errors
from vidshard.engine.units import GroupRankUnit
from vidshard.executors.local import LocalExecutor
from vidshard.executors.slot import rebuild_error
from vidshard.generation.types import GenerationModel, GenerationRequest, GenerationResult, Layout

from .group_state import (
    BrokenGroup,
    Group,
    GroupEvent,
    GroupView,
    StepSink,
    broken_reason,
    choose_slots,
    describe_end,
    tell_step,
    usable_slots,
    user_error,
)

logger = logging.getLogger(__name__)

__all__ = ["GroupEvent", "GroupKeeper", "GroupView"]

POLL_S = 0.1
HOUSEKEEPING_S = 0.25
WANTED_FOR_S = 0.5  # other units waited this long in the pool: an idle group makes way
FAILURE_GRACE_S = 2.0  # after a rank fails, what its peers report too goes in the reason


class GroupKeeper:
    """Runs generation requests on groups of the pool's slots (thread-safe).

    ``pool`` is a started :class:`LocalExecutor` (``model=None``: the service's shared
    pool, or one the CLI starts). ``collective_timeout_s`` bounds every collective of a
    rank (a hung peer fails the others within it); ``stop_wait_s`` is how long a rank
    being torn down may take to stop before it is killed.
    """

    def __init__(
        self,
        pool: LocalExecutor,
        *,
        collective_timeout_s: float = 600.0,
        idle_release_s: float = 600.0,
        on_event: Callable[[GroupEvent], None] | None = None,
        form_timeout_s: float = 600.0,
        stop_wait_s: float = 10.0,
    ) -> None:
        for name, value in (
            ("collective_timeout_s", collective_timeout_s),
            ("idle_release_s", idle_release_s),
            ("form_timeout_s", form_timeout_s),
            ("stop_wait_s", stop_wait_s),
        ):
            if not value > 0:
                raise errors.ConfigError(f"{name}: expected a number of seconds > 0, got {value}")
        self._pool = pool
        self.collective_timeout_s = collective_timeout_s
        self.idle_release_s = idle_release_s
        self.form_timeout_s = form_timeout_s
        self.stop_wait_s = stop_wait_s
        self._on_event = on_event
        self._lock = threading.Lock()  # guards _groups and _avoid
        self._forming = threading.Lock()  # one group chooses and takes its slots at a time
        self._groups: list[Group] = []
        self._avoid: set[str] = set()  # slots whose rank just broke a group
        self._closed = threading.Event()
        self._housekeeper = threading.Thread(
            target=self._keep, name="generation-groups", daemon=True
        )
        self._housekeeper.start()

    # --- the API ------------------------------------------------------------------------

    def run(
        self,
        model: GenerationModel,
        layout: Layout,
        request: GenerationRequest,
        *,
        job_id: str,
        on_step: StepSink | None = None,
        cancel: threading.Event | None = None,
    ) -> GenerationResult:
        """Generate ``request`` on a group of ``layout.world`` slots holding ``model``.

        ``on_step(step, total)`` follows rank 0 after each denoising step. Raises
        :class:`ConfigError` when the pool has fewer live slots than the layout's ranks,
        :class:`Cancelled` once ``cancel`` is set (the group stays loaded), the runner's
        own error for a bad request or model, and :class:`WorkerError` when the request
        failed on two groups in a row (both reasons, each naming its rank).
        """
        cancel = cancel if cancel is not None else threading.Event()
        reasons: list[str] = []
        while len(reasons) < 2:
            self._check_size(layout)
            try:
                group, load_seconds = self._acquire(model, layout, cancel)
            except BrokenGroup as exc:
                reasons.append(exc.reason)
                continue
            try:
                result = self._run_on(group, request, job_id, on_step, cancel)
            except BrokenGroup as exc:
                reasons.append(self._tear_down(group, exc.reason, failed=True))
                continue
            finally:
                self._release(group)
            return replace(result, load_seconds=load_seconds)
        raise errors.WorkerError(
            f"generation {request.request_id} failed twice: {reasons[0]}; "
            f"then on a new group: {reasons[1]}"
        )

    def groups(self) -> list[GroupView]:
        """The groups there are now (forming, loading, idle or busy)."""
        with self._lock:
            return [group.view() for group in self._groups if not group.dead]

    def close(self) -> None:
        """End every group (running requests fail as Cancelled) and stop housekeeping."""
        self._closed.set()
        with self._lock:
            groups = list(self._groups)
        for group in groups:
            self._tear_down(group, "the generation groups were closed")
        if self._housekeeper is not threading.current_thread():
            self._housekeeper.join(timeout=5)

    # --- taking a group ------------------------------------------------------------------

    def _check_size(self, layout: Layout) -> None:
        if self._closed.is_set():
            raise errors.Cancelled("the generation groups were closed")
        states = self._pool.slot_states()
        usable = usable_slots(states, set(self._pool.live_slots()), set(self._pool.quarantined()))
        on_node: dict[str, int] = {}
        for state in usable:
            on_node[state.node] = on_node.get(state.node, 0) + 1
        if max(on_node.values(), default=0) >= layout.world:
            return
        labels = ", ".join(s.label for s in usable) or "none"
        if len(usable) >= layout.world:  # enough slots, spread over nodes
            raise errors.ConfigError(
                f"a group of {layout.world} ranks runs on one node; no node has "
                f"{layout.world} live slots ({labels})"
            )
        if len(states) < layout.world:  # the user asked for more ranks than there are slots
            raise errors.ConfigError(
                f"a group of {layout.world} ranks needs {layout.world} live slots; "
                f"the pool has {len(usable)} ({labels})"
            )
        out = ", ".join(s.label for s in states if s not in usable)
        raise errors.WorkerError(
            f"a group of {layout.world} ranks needs {layout.world} live slots; "
            f"{len(usable)} are left ({labels}): {out} down or quarantined"
        )

    def _acquire(
        self, model: GenerationModel, layout: Layout, cancel: threading.Event
    ) -> tuple[Group, float]:
        """A loaded group of (model, layout), locked for this request, and what loading
        it took (0: it was loaded already)."""
        while True:
            with self._lock:
                group = next(
                    (g for g in self._groups if g.key == (model, layout) and not g.dead), None
                )
                fresh = group is None
                if group is None:
                    group = Group(model, layout)
                    group.lock.acquire()
                    self._groups.append(group)
            if fresh:
                return group, self._form_locked(group, cancel)
            if self._lock_group(group, cancel):
                return group, 0.0

    def _lock_group(self, group: Group, cancel: threading.Event) -> bool:
        """Wait for the group's current request to end; False if it died meanwhile."""
        while not group.lock.acquire(timeout=POLL_S):
            if cancel.is_set():
                raise errors.Cancelled("cancelled while waiting for its generation group")
            if self._closed.is_set():
                raise errors.Cancelled("the generation groups were closed")
        if group.dead:
            group.lock.release()
            return False
        return True

    def _form_locked(self, group: Group, cancel: threading.Event) -> float:
        """Form and load ``group`` (its lock held); on any failure it is torn down and
        unlocked, and the error raised (a BrokenGroup with its reason completed)."""
        try:
            return self._form(group, cancel)
        except BrokenGroup as exc:
            reason = self._tear_down(group, exc.reason, failed=True)
            group.lock.release()
            raise BrokenGroup(reason) from None
        except BaseException as exc:
            self._tear_down(group, f"forming it failed: {exc}")
            group.lock.release()
            raise

    def _form(self, group: Group, cancel: threading.Event) -> float:
        deadline = time.monotonic() + self.form_timeout_s
        while True:
            with self._forming:
                if self._take_slots(group):
                    self._event("forming", group)
                    self._await_all(group, "gen_waiting", deadline, cancel, "holding its slot")
                    break
            self._wait_for_slots(group, deadline, cancel)
        started = time.monotonic()
        group.state = "loading"
        group.send_all(("gen_join",))
        load_deadline = started + self._pool.supervision.load_timeout_s
        self._await_all(group, "gen_loaded", load_deadline, cancel, "loaded")
        group.load_seconds = time.monotonic() - started
        group.state = "idle"
        self._event("loaded", group)
        logger.info(
            "generation group %s (%s) loaded on %s in %.1f s",
            group.group_id,
            group.model.name,
            ", ".join(group.slots),
            group.load_seconds,
        )
        return group.load_seconds

    def _take_slots(self, group: Group) -> bool:
        """Choose the group's slots (idle groups in the way are dismissed) and queue its
        rank units there; False when too few slots are free now."""
        world = group.layout.world
        for dismiss in (False, True):
            with self._lock:
                held = {s for g in self._groups if not g.dead and g is not group for s in g.slots}
                avoid = set(self._avoid)
            states = self._pool.slot_states()
            usable = usable_slots(
                states, set(self._pool.live_slots()), set(self._pool.quarantined())
            )
            slots = choose_slots(usable, held, world, avoid)
            if slots is not None:
                break
            if dismiss or not self._dismiss_idle():
                return False
        else:
            return False
        group.slots = slots
        self._pool.job(group.group_id, None)
        init_method = f"tcp://127.0.0.1:{_free_port()}"
        for rank, slot in enumerate(slots):
            unit = GroupRankUnit(
                f"{group.group_id}-r{rank}",
                group.model,
                group.layout,
                rank,
                init_method,
                self.collective_timeout_s,
            )
            run = self._pool.submit_pinned_for(
                group.group_id, slot, unit, group.report_fn(rank), _no_events
            )
            run.future.add_done_callback(group.ended_fn(rank))
            group.runs.append(run)
        return True

    def _wait_for_slots(self, group: Group, deadline: float, cancel: threading.Event) -> None:
        if cancel.is_set():
            raise errors.Cancelled("cancelled while its generation group waited for slots")
        if time.monotonic() > deadline:
            raise errors.WorkerError(
                f"no {group.layout.world} free slots for a generation group after "
                f"{self.form_timeout_s:.0f} s (other groups hold them)"
            )
        self._closed.wait(HOUSEKEEPING_S)

    def _dismiss_idle(self) -> bool:
        """Dismiss every idle group (their slots are wanted); True if any was."""
        with self._lock:
            idle = sorted(
                (g for g in self._groups if not g.dead and g.state == "idle"),
                key=lambda g: g.last_used,
            )
        dismissed = False
        for group in idle:
            if group.lock.acquire(blocking=False):
                try:
                    if not group.dead and group.state == "idle":
                        self._tear_down(group, "another group needs its slots")
                        dismissed = True
                finally:
                    group.lock.release()
        return dismissed

    def _release(self, group: Group) -> None:
        if not group.dead:
            group.state = "idle"
        group.job = group.request_id = None
        group.step = group.total_steps = 0
        group.last_used = time.monotonic()
        group.lock.release()

    # --- what the ranks report -----------------------------------------------------------

    def _await_all(
        self, group: Group, kind: str, deadline: float, cancel: threading.Event, what: str
    ) -> None:
        """Wait for every rank's ``kind`` report; a rank that ends first breaks the group."""
        seen: set[int] = set()
        while len(seen) < group.layout.world:
            if cancel.is_set():
                raise errors.Cancelled(f"cancelled while its generation group was {group.state}")
            if self._closed.is_set():
                raise errors.Cancelled("the generation groups were closed")
            if time.monotonic() > deadline:
                missing = [group.where(r) for r in range(group.layout.world) if r not in seen]
                raise BrokenGroup(f"{', '.join(missing)} not {what} in time")
            try:
                rank, message = group.inbox.get(timeout=POLL_S)
            except queue.Empty:
                continue
            if message[0] == kind:
                seen.add(rank)
            elif message[0] == "_ended":
                self._raiseuser_error(message[1])
                raise self._broken(group, rank, message)

    def _run_on(
        self,
        group: Group,
        request: GenerationRequest,
        job_id: str,
        on_step: StepSink | None,
        cancel: threading.Event,
    ) -> GenerationResult:
        """Run one request on a locked, loaded group: the ranks' reports until each has
        ended the request; a rank's unit that ends breaks the group."""
        self._drain_stale(group)
        group.state, group.job, group.request_id = "busy", job_id, request.request_id
        group.step, group.total_steps = 0, request.steps
        group.send_all(("gen_run", request))
        try:
            finals = self._follow(group, request, on_step, cancel)
        except BrokenGroup:
            raise
        except BaseException:  # the ranks may still run it: the group is not reusable
            self._tear_down(group, f"request {request.request_id} was abandoned")
            raise
        return self._outcome(group, request, finals)

    def _follow(
        self,
        group: Group,
        request: GenerationRequest,
        on_step: StepSink | None,
        cancel: threading.Event,
    ) -> dict[int, tuple[Any, ...]]:
        """Each rank's final report of ``request`` (``gen_done`` / ``gen_failed``)."""
        finals: dict[int, tuple[Any, ...]] = {}
        cancel_sent = False
        last_heard = time.monotonic()
        silence_limit_s = 2 * self.collective_timeout_s  # every rank hung outside collectives
        while len(finals) < group.layout.world:
            if cancel.is_set() and not cancel_sent:
                group.send_all(("gen_cancel", request.request_id))
                cancel_sent = True
            try:
                rank, message = group.inbox.get(timeout=POLL_S)
            except queue.Empty:
                if time.monotonic() - last_heard > silence_limit_s:
                    raise BrokenGroup(f"no rank reported for {silence_limit_s:.0f} s") from None
                continue
            last_heard = time.monotonic()
            kind = message[0]
            if kind == "_ended":
                raise self._broken(group, rank, message)
            if len(message) < 2 or message[1] != request.request_id:
                continue
            if kind == "gen_step" and rank == 0:
                group.step, group.total_steps = message[2], message[3]
                tell_step(on_step, message[2], message[3])
            elif kind == "gen_failed" and not user_error(message[2]):
                raise self._broken(group, rank, message)
            elif kind in ("gen_done", "gen_failed"):
                finals[rank] = message
        return finals

    def _outcome(
        self, group: Group, request: GenerationRequest, finals: dict[int, tuple[Any, ...]]
    ) -> GenerationResult:
        failed = {rank: m for rank, m in finals.items() if m[0] == "gen_failed"}
        if any(m[2] == "Cancelled" for m in failed.values()):
            raise errors.Cancelled(
                f"generation {request.request_id} was cancelled at step "
                f"{group.step}/{group.total_steps}"
            )
        if failed:
            _rank, message = min(failed.items())
            raise rebuild_error(message[2], message[3], "", f"generation {request.request_id}")
        result = finals[0][2]
        if not isinstance(result, GenerationResult):
            raise errors.WorkerError(
                f"generation {request.request_id}: rank 0's runner returned {result!r}, "
                "not a GenerationResult"
            )
        group.requests += 1
        return result

    def _drain_stale(self, group: Group) -> None:
        """Reports left from before this request; a rank that ended while idle breaks it."""
        while True:
            try:
                rank, message = group.inbox.get_nowait()
            except queue.Empty:
                return
            if message[0] == "_ended":
                raise self._broken(group, rank, message)

    def _broken(self, group: Group, rank: int, first: tuple[Any, ...]) -> BrokenGroup:
        """The group is broken by ``first`` (from ``rank``): what its other ranks report in
        a short grace period joins the reason, a lost worker first."""
        reports = [(rank, first)]
        deadline = time.monotonic() + FAILURE_GRACE_S
        while len(group.ended_ranks()) < group.layout.world and time.monotonic() < deadline:
            try:
                reports.append(group.inbox.get(timeout=POLL_S))
            except queue.Empty:
                continue
        return BrokenGroup(broken_reason(group, reports))

    @staticmethod
    def _raiseuser_error(future: Any) -> None:
        """A rank that could not load for the user's reason (a bad model folder): that
        error, not a retry."""
        exc = None if future.cancelled() else future.exception()
        if isinstance(exc, errors.VidshardError) and user_error(type(exc).__name__):
            raise exc

    # --- ending groups ------------------------------------------------------------------

    def _tear_down(self, group: Group, reason: str, *, failed: bool = False) -> str:
        """End every rank unit of ``group`` (killing one that does not stop in
        ``stop_wait_s``); returns ``reason``, with the ranks that had to be killed."""
        with self._lock:
            if group.dead:
                return reason
            group.dead = True
            group.state = "closing"
            if group in self._groups:
                self._groups.remove(group)
            if failed:  # its next group prefers other slots
                self._avoid = set(group.slots)
        group.send_all(("gen_close",))
        wait([run.future for run in group.runs], timeout=self.stop_wait_s)
        stuck = [r for r, run in enumerate(group.runs) if not run.future.done()]
        self._pool.cancel_job(group.group_id, wait_s=POLL_S if stuck else self.stop_wait_s)
        self._pool.release_job(group.group_id)
        if stuck:
            killed = ", ".join(group.where(r) for r in stuck)
            reason = f"{reason}; {killed} did not stop (killed)"
        if failed:
            logger.warning("generation group %s failed: %s", group.group_id, reason)
        self._event("failed" if failed else "dismissed", group, reason)
        return reason

    def _keep(self) -> None:
        """Dismiss idle groups: after ``idle_release_s``, when other units wait in the
        pool, or when a rank ended while idle."""
        wanted_since: float | None = None
        while not self._closed.wait(HOUSEKEEPING_S):
            try:
                now = time.monotonic()
                if self._others_waiting():
                    wanted_since = now if wanted_since is None else wanted_since
                else:
                    wanted_since = None
                wanted = wanted_since is not None and now - wanted_since >= WANTED_FOR_S
                with self._lock:
                    idle = [g for g in self._groups if not g.dead and g.state == "idle"]
                for group in idle:
                    self._maybe_dismiss(group, now, wanted)
            except Exception:
                logger.exception("generation group housekeeping failed")

    def _maybe_dismiss(self, group: Group, now: float, wanted: bool) -> None:
        if not group.lock.acquire(blocking=False):
            return
        try:
            if group.dead or group.state != "idle":
                return
            if group.ended_ranks():
                rank = group.ended_ranks()[0]
                _lost, text = describe_end(group, rank, group.runs[rank].future)
                self._tear_down(group, f"while idle: {text}", failed=True)
            elif now - group.last_used >= self.idle_release_s:
                self._tear_down(group, f"idle for {self.idle_release_s:.0f} s")
            elif wanted:
                self._tear_down(group, "other units wait for its slots")
        finally:
            group.lock.release()

    def _others_waiting(self) -> bool:
        with self._lock:
            mine = [g.group_id for g in self._groups if not g.dead]
        own = sum(self._pool.queued_units(job) for job in mine)
        return self._pool.queued_units() - own > 0

    def _event(self, kind: Any, group: Group, reason: str = "") -> None:
        if self._on_event is None:
            return
        try:
            self._on_event(GroupEvent(kind, group.view(), reason))
        except Exception:
            logger.exception("on_event failed for generation group %s", group.group_id)


def _free_port() -> int:
    """A free TCP port on loopback for the group's rendezvous (rank 0 listens there)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _no_events(_event: object) -> None:
    """The pool's unit events for rank units: the keeper follows the ranks' reports."""
