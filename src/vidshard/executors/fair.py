"""The queue idle workers pull from when several jobs share one pool of slots.

Each job has its own FIFO of units. The next unit goes to the job with the highest
priority; among equals, to the job with the fewest units running now (so concurrent jobs
share the slots evenly), then to one whose model the asking worker already holds (no
reload), then to the job that came first. One job alone is a plain FIFO.

A unit may be pinned to one slot (a stream host that placement put there): it waits for
that slot alone, and is the next thing that slot takes. It counts among its job's
running units like any other while it runs.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar


class Queued(Protocol):
    @property
    def job(self) -> str: ...

    @property
    def model(self) -> object: ...


T = TypeVar("T", bound=Queued)


@dataclass
class _JobQueue(Generic[T]):
    priority: int
    order: int
    items: deque[T] = field(default_factory=deque)
    running: int = 0


class FairQueue(Generic[T]):
    """Thread-safe; ``get`` blocks until a unit is there or the timeout passes."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._jobs: dict[str, _JobQueue[T]] = {}
        self._pinned: dict[str, deque[T]] = {}  # slot label → units only it may take
        self._order = itertools.count()

    def add_job(self, job: str, priority: int = 0) -> None:
        with self._cond:
            if job not in self._jobs:
                self._jobs[job] = _JobQueue(priority, next(self._order))

    def put(self, item: T, slot: str | None = None, *, first: bool = False) -> None:
        """Queue ``item`` for any slot, or (``slot`` given) for that slot alone;
        ``first``: ahead of its job's other units (a retry: the job waits on it)."""
        with self._cond:
            self.add_job(item.job)
            if slot is None:
                items = self._jobs[item.job].items
                if first:
                    items.appendleft(item)
                else:
                    items.append(item)
                self._cond.notify()
            else:
                self._pinned.setdefault(slot, deque()).append(item)
                self._cond.notify_all()  # only the one slot may take it: wake them all

    def get(
        self, model: object = None, timeout: float | None = None, slot: str | None = None
    ) -> T | None:
        """The next unit for the worker of ``slot`` holding ``model``: one pinned to that
        slot first, else the fair choice; None after ``timeout`` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while True:
                pinned = self._pinned.get(slot) if slot is not None else None
                if pinned:
                    item = pinned.popleft()
                    self._jobs.setdefault(item.job, _JobQueue(0, next(self._order))).running += 1
                    return item
                waiting = [(name, q) for name, q in self._jobs.items() if q.items]
                if waiting:
                    _name, best = min(
                        waiting,
                        key=lambda nq: (
                            -nq[1].priority,
                            nq[1].running,
                            nq[1].items[0].model != model,
                            nq[1].order,
                        ),
                    )
                    best.running += 1
                    return best.items.popleft()
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return None
                self._cond.wait(left)

    def task_done(self, job: str) -> None:
        """A unit ``get`` returned has finished (whatever its outcome)."""
        with self._cond:
            queue = self._jobs.get(job)
            if queue is not None and queue.running > 0:
                queue.running -= 1

    def running(self, job: str) -> int:
        with self._cond:
            queue = self._jobs.get(job)
            return queue.running if queue is not None else 0

    def queued(self, job: str | None = None) -> int:
        with self._cond:
            pinned = sum(
                1 for items in self._pinned.values() for item in items if job in (None, item.job)
            )
            if job is not None:
                queue = self._jobs.get(job)
                return pinned + (len(queue.items) if queue is not None else 0)
            return pinned + sum(len(q.items) for q in self._jobs.values())

    def remove_job(self, job: str) -> list[T]:
        """Forget a job; its units still queued (pinned ones too) are returned (to be failed)."""
        with self._cond:
            queue = self._jobs.pop(job, None)
            return (list(queue.items) if queue is not None else []) + self._take_pinned(job=job)

    def drain(self, job: str | None = None) -> list[T]:
        """Take every queued unit (of one job, or of all), pinned ones included."""
        with self._cond:
            queues = [self._jobs[job]] if job is not None and job in self._jobs else []
            if job is None:
                queues = list(self._jobs.values())
            items: list[T] = []
            for queue in queues:
                items.extend(queue.items)
                queue.items.clear()
            return items + self._take_pinned(job=job)

    def drain_slot(self, slot: str) -> list[T]:
        """Take the units pinned to ``slot`` (its worker is gone for good)."""
        with self._cond:
            return self._take_pinned(slot=slot)

    def _take_pinned(self, *, job: str | None = None, slot: str | None = None) -> list[T]:
        taken: list[T] = []
        for label, items in self._pinned.items():
            if slot is not None and label != slot:
                continue
            kept: deque[T] = deque()
            for item in items:
                (taken if job is None or item.job == job else kept).append(item)
            self._pinned[label] = kept
        return taken
