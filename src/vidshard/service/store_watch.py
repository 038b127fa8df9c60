"""How the job runner lives through a job store that cannot be used for a while (a full
disk, a lock held too long, a database restarting).

Two things must not be lost when a write fails: a job's final state and the output it
names. A final state that cannot be written is kept here and written again on each of the
dispatcher's rounds until the store takes it, with the time the job really finished; the
output is never removed for it. Progress is not kept: the next progress write carries
the newer count anyway.

/health asks :meth:`StoreWatch.problem`: a real write (the store's heartbeat row), at
most once per ``PROBE_TTL_S`` however often it is asked, and the failure any store call
met in the last ``FAILURE_WINDOW_S`` (a full disk may still take a one-row update and
refuse a new job).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from .store import RUNNING, JobStore
from .store_errors import StoreUnavailable

logger = logging.getLogger(__name__)

PROBE_TTL_S = 2.0
FAILURE_WINDOW_S = 10.0


@dataclass(frozen=True)
class _Final:
    to_state: str
    fields: dict[str, Any] = field(default_factory=dict)


class StoreWatch:
    """Final states waiting for the store, and the store's health as /health reports it."""

    def __init__(self, store: JobStore) -> None:
        self.store = store
        self._finals: dict[str, _Final] = {}
        self._lock = threading.Lock()
        self._probe_lock = threading.Lock()
        self._probe: tuple[float, StoreUnavailable | None] = (-PROBE_TTL_S * 2, None)
        self._probe_failed: StoreUnavailable | None = None

    def finish(self, job_id: str, to_state: str, **fields: Any) -> None:
        """Move a running job to its final state now, or as soon as the store takes it."""
        fields.setdefault("finished_at", time.time())
        final = _Final(to_state, fields)
        try:
            self.store.transition(job_id, [RUNNING], to_state, **fields)
        except StoreUnavailable as exc:
            logger.warning(
                "job %s %s, but the store cannot record it now (%s); it is written as soon "
                "as the store takes writes again",
                job_id,
                to_state,
                exc,
            )
            with self._lock:
                self._finals[job_id] = final

    def flush(self) -> None:
        """Write the final states that are waiting, oldest first; the rest wait for the
        next call when the store still refuses."""
        with self._lock:
            waiting = list(self._finals.items())
        for job_id, final in waiting:
            try:
                self.store.transition(job_id, [RUNNING], final.to_state, **final.fields)
            except StoreUnavailable:
                return
            with self._lock:
                self._finals.pop(job_id, None)
            logger.info("job %s: its final state %s is recorded now", job_id, final.to_state)

    def waiting(self) -> dict[str, str]:
        """The jobs whose final state the store has not taken yet, with that state."""
        with self._lock:
            return {job_id: final.to_state for job_id, final in self._finals.items()}

    def problem(self) -> StoreUnavailable | None:
        """Why the store cannot be used now, or None when it takes writes."""
        with self._probe_lock:
            probed_s, problem = self._probe
            if time.monotonic() - probed_s >= PROBE_TTL_S:
                try:
                    self.store.probe_write()
                    problem = None
                except StoreUnavailable as exc:
                    problem = self._probe_failed = exc
                self._probe = (time.monotonic(), problem)
        if problem is not None:
            return problem
        failure = self.store.last_failure()
        if failure is None or failure[1] is self._probe_failed:  # a later probe worked
            return None
        return failure[1] if time.monotonic() - failure[0] < FAILURE_WINDOW_S else None
