"""Runs a set of units over an executor: dependencies, retries after a lost worker.

Units are handed to the executor as soon as their dependencies are done; the executor's
idle workers pull them. A unit whose worker died is submitted again (another slot takes
it); any other failure fails the job, since it would fail again.
"""

from __future__ import annotations

import logging
import queue
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future

from vidshard.errors import WorkerError
from vidshard.executors.base import Executor, WorkerLost

from .units import UnitResult, WorkUnit

logger = logging.getLogger(__name__)
MAX_ATTEMPTS = 3
WAIT_S = 0.5


def run_units(
    executor: Executor,
    units: Sequence[WorkUnit],
    *,
    depends_on: Mapping[str, Sequence[str]] | None = None,
    on_result: Callable[[WorkUnit, UnitResult], None] | None = None,
    on_retry: Callable[[WorkUnit, BaseException], None] | None = None,
    on_error: Callable[[WorkUnit, BaseException], bool] | None = None,
    max_attempts: int = MAX_ATTEMPTS,
) -> dict[str, UnitResult]:
    """Run every unit once, successfully; raise the first error that cannot be retried.

    ``on_error`` may take such an error instead (return True): the unit then counts as
    done, without a result, and the others go on (a list of videos: one bad video).
    """
    deps = {u.unit_id: set(depends_on.get(u.unit_id, ())) if depends_on else set() for u in units}
    by_id = {u.unit_id: u for u in units}
    attempts = dict.fromkeys(by_id, 0)
    done: dict[str, UnitResult] = {}
    failed: set[str] = set()
    outstanding: dict[str, Future[UnitResult]] = {}
    finished: queue.Queue[str] = queue.Queue()

    def submit(unit_id: str) -> None:
        attempts[unit_id] += 1
        if attempts[unit_id] > 1:  # a retry goes ahead of the rest: the job waits on it
            resubmit = getattr(executor, "resubmit", executor.submit)
            future = resubmit(by_id[unit_id])
        else:
            future = executor.submit(by_id[unit_id])
        outstanding[unit_id] = future
        future.add_done_callback(lambda _f: finished.put(unit_id))

    try:
        for unit_id, needs in deps.items():
            if not needs:
                submit(unit_id)
        while len(done) + len(failed) < len(units):
            try:
                unit_id = finished.get(timeout=WAIT_S)
            except queue.Empty:
                continue
            future = outstanding.pop(unit_id)
            exc = future.exception()
            if exc is None:
                done[unit_id] = future.result()
                if on_result is not None:
                    on_result(by_id[unit_id], done[unit_id])
                for other, needs in deps.items():
                    if unit_id in needs:
                        needs.discard(unit_id)
                        if not needs and other not in done and other not in outstanding:
                            submit(other)
                continue
            if isinstance(exc, WorkerLost) and attempts[unit_id] < max_attempts:
                logger.warning("retrying %s: %s", unit_id, exc)
                if on_retry is not None:
                    on_retry(by_id[unit_id], exc)
                submit(unit_id)
                continue
            if isinstance(exc, WorkerLost):
                exc = WorkerError(f"{unit_id} failed {attempts[unit_id]} times: {exc}")
            if on_error is not None and on_error(by_id[unit_id], exc):
                failed.add(unit_id)
                continue
            raise exc
        return done
    finally:
        for future in outstanding.values():
            future.cancel()
