"""Test-only fault injection: make a worker die or stall at a chosen moment.

Read once, in the worker, from ``VIDSHARD_FAULT`` — a ``;``-separated list of
``key=value`` pairs:

- ``point``: ``load`` (before the model loads), ``start`` (a unit arrived), ``mid``
  (half of a segment's frames are encoded), ``encode`` (a segment's encoder has
  flushed, just before its file is committed);
- ``unit``: the unit id to hit (``segment-00003``), or ``*`` (any; the default);
- ``action``: ``kill`` (SIGKILL itself; the default), ``exit`` (exit code 3), ``hang``
  (sleep forever while the heartbeat goes on), ``freeze`` (SIGSTOP itself: no
  heartbeat either);
- ``once``: a file path; the fault fires only for the process that creates that file
  first, so a restarted worker or the retry does not fail again.

Example: ``VIDSHARD_FAULT="point=mid;unit=segment-00002;action=kill;once=/tmp/f1"``.
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass

FAULT_VARIABLE = "VIDSHARD_FAULT"
POINTS = ("load", "start", "mid", "encode")
ACTIONS = ("kill", "exit", "hang", "freeze")


@dataclass(frozen=True)
class Fault:
    point: str
    unit: str = "*"
    action: str = "kill"
    once: str | None = None

    def hit(self, point: str, unit_id: str = "*") -> None:
        """Fire if this is the chosen moment (and, with ``once``, the first time)."""
        if point != self.point or self.unit not in ("*", unit_id):
            return
        if self.once is not None:
            try:
                fd = os.open(self.once, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                return
            os.close(fd)
        _act(self.action)


def _act(action: str) -> None:
    if action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif action == "exit":
        os._exit(3)
    elif action == "freeze":
        os.kill(os.getpid(), signal.SIGSTOP)
    while True:  # "hang", or after SIGCONT of a frozen worker: never come back
        time.sleep(3600)


def parse_fault(text: str | None) -> Fault | None:
    """Parse ``VIDSHARD_FAULT``; None when unset. A malformed value is a ValueError."""
    if not text:
        return None
    fields = dict(part.split("=", 1) for part in text.split(";") if part.strip())
    fault = Fault(
        point=fields.get("point", ""),
        unit=fields.get("unit", "*"),
        action=fields.get("action", "kill"),
        once=fields.get("once"),
    )
    if fault.point not in POINTS or fault.action not in ACTIONS:
        raise ValueError(
            f"{FAULT_VARIABLE}={text!r}: expected point in {POINTS}, action in {ACTIONS}"
        )
    return fault
