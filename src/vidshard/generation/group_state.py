"""What the coordinator keeps of one generation group, and how its slots are chosen.

:class:`GroupKeeper` (``group.py``) drives the groups; this module holds their data: a
group's rank units and what they report, its view for the service, and the choice of
the slots a new group takes.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Literal

from vidshard import errors
from vidshard.engine.units import UnitResult
from vidshard.executors.base import PinnedRun, SlotState, WorkerLost
from vidshard.generation.types import GenerationModel, Layout

logger = logging.getLogger(__name__)

StepSink = Callable[[int, int], None]
GroupState = Literal["forming", "loading", "idle", "busy", "closing"]
TEXT_MAX_CHARS = 240  # of one rank's failure in a reason (gloo's can run to pages)


@dataclass(frozen=True)
class GroupView:
    """One group as the service's slot view shows it."""

    group_id: str  # also the pool job its rank units run under
    model: str  # the model's name
    layout: Layout
    slots: tuple[str, ...]  # rank r runs on slots[r]
    state: GroupState
    job: str | None  # the job whose request runs now
    request_id: str | None
    step: int  # of the request running now
    total_steps: int
    load_seconds: float  # what loading it took
    requests: int  # requests it has finished


@dataclass(frozen=True)
class GroupEvent:
    """Something that happened to a group: ``forming`` (its ranks queued for their slots),
    ``loaded``, ``failed`` (a rank died or hung: torn down), ``dismissed`` (idle, or its
    slots were wanted)."""

    kind: Literal["forming", "loaded", "failed", "dismissed"]
    group: GroupView
    reason: str = ""


class BrokenGroup(Exception):
    """A rank of the group died, hung or failed a collective: the group is unusable."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


Report = tuple[int, tuple[Any, ...]]  # (rank, message); ("_ended", future) once a unit ends


class Group:
    """One group: its key, its slots and rank units, and what they report (``inbox``).

    ``lock`` is held by whoever uses the group: the request that forms it, then each
    request in turn; the keeper's housekeeping dismisses only a group it can lock.
    """

    def __init__(self, model: GenerationModel, layout: Layout) -> None:
        self.group_id = f"gen-{uuid.uuid4().hex[:8]}"
        self.model = model
        self.layout = layout
        self.lock = threading.Lock()
        self.state: GroupState = "forming"
        self.dead = False  # torn down (or never formed): not used again
        self.slots: tuple[str, ...] = ()
        self.runs: list[PinnedRun] = []
        self.inbox: queue.Queue[Report] = queue.Queue()
        self.load_seconds = 0.0
        self.last_used = time.monotonic()
        self.job: str | None = None
        self.request_id: str | None = None
        self.step = 0
        self.total_steps = 0
        self.requests = 0

    @property
    def key(self) -> tuple[GenerationModel, Layout]:
        return (self.model, self.layout)

    def report_fn(self, rank: int) -> Any:
        def report(message: tuple[Any, ...]) -> None:
            self.inbox.put((rank, message))

        return report

    def ended_fn(self, rank: int) -> Any:
        def ended(future: Future[UnitResult]) -> None:
            self.inbox.put((rank, ("_ended", future)))

        return ended

    def send_all(self, message: tuple[Any, ...]) -> None:
        for run in self.runs:
            run.send(message)

    def ended_ranks(self) -> list[int]:
        return [rank for rank, run in enumerate(self.runs) if run.future.done()]

    def where(self, rank: int) -> str:
        slot = self.slots[rank] if rank < len(self.slots) else "?"
        return f"rank {rank} on {slot}"

    def view(self) -> GroupView:
        return GroupView(
            group_id=self.group_id,
            model=self.model.name,
            layout=self.layout,
            slots=self.slots,
            state=self.state,
            job=self.job,
            request_id=self.request_id,
            step=self.step,
            total_steps=self.total_steps,
            load_seconds=self.load_seconds,
            requests=self.requests,
        )


def usable_slots(states: list[SlotState], live: set[str], quarantined: set[str]) -> list[SlotState]:
    """The slots a group may take: live (one restarting after a failure is), and their
    device not quarantined."""
    return [s for s in states if s.label in live and s.device not in quarantined]


def choose_slots(
    usable: list[SlotState], held: set[str], world: int, avoid: set[str]
) -> tuple[str, ...] | None:
    """``world`` slots of one node that no other group holds: idle ones first, then
    ones not running a long-lived unit (a stream host never frees its slot), then ones
    that did not just fail a group, in the pool's order; None when too few are free.
    (One node: the ranks meet over its loopback. On one machine every slot's node is "".)"""
    order = {s.label: index for index, s in enumerate(usable)}
    free = [s for s in usable if s.label not in held]
    free.sort(key=lambda s: (s.state != "idle", s.pinned, s.label in avoid, order[s.label]))
    by_node: dict[str, list[SlotState]] = {}
    for state in free:  # nodes in the order of their best free slot
        by_node.setdefault(state.node, []).append(state)
    for states in by_node.values():
        if len(states) >= world:
            return tuple(s.label for s in states[:world])
    return None


def describe_end(group: Group, rank: int, future: Future[UnitResult]) -> tuple[bool, str]:
    """(lost, text): how rank ``rank``'s unit ended; ``lost`` when its worker died."""
    where = group.where(rank)
    if future.cancelled():
        return False, f"{where} was cancelled"
    exc = future.exception()
    if exc is None:
        return False, f"{where} ended"
    if isinstance(exc, WorkerLost):
        return True, f"{where} was lost: {_short(str(exc))}"
    return False, f"{where} failed: {_short(str(exc))}"


def broken_reason(group: Group, reports: list[Report]) -> str:
    """What broke the group, from its ranks' reports: lost workers first, then failures."""
    lost: list[str] = []
    other: list[str] = []
    described: set[int] = set()
    for rank, message in reports:
        if message[0] == "_ended":
            was_lost, text = describe_end(group, rank, message[1])
            (lost if was_lost else other).append(text)
        elif message[0] == "gen_failed" and rank not in described:
            other.append(describe_failure(group, rank, message[2], message[3]))
        else:
            continue
        described.add(rank)
    return "; ".join(dict.fromkeys(lost + other))


def describe_failure(group: Group, rank: int, type_name: str, text: str) -> str:
    return f"{group.where(rank)} failed: {type_name}: {_short(text)}"


def _short(text: str) -> str:
    line = " ".join(text.split())
    return line if len(line) <= TEXT_MAX_CHARS else line[: TEXT_MAX_CHARS - 3] + "..."


def user_error(type_name: str) -> bool:
    """A report of the user's error (or a cancel): the request ends, the group stays."""
    cls = getattr(errors, type_name, None)
    return (
        isinstance(cls, type)
        and issubclass(cls, errors.VidshardError)
        and not issubclass(cls, errors.WorkerError)
    )


def tell_step(on_step: StepSink | None, step: int, total: int) -> None:
    if on_step is None:
        return
    try:
        on_step(step, total)
    except Exception:  # the caller's progress must not leave the ranks mid-request
        logger.exception("on_step failed at step %d/%d", step, total)
