"""Progress as data: frames done, speed, ETA and per-slot rates from events.

The clock is injected so speed and ETA are testable (STYLE idea 9). Frames done never
go down: a unit that runs again (its worker died) keeps the frames it had reported, and
its rerun counts only the frames past them, so the bar, the API's snapshots and a
service job's progress only ever move forward.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from .events import (
    DeviceQuarantined,
    Event,
    UnitFinished,
    UnitProgress,
    UnitStarted,
    WorkerDown,
    WorkerUp,
)

Clock = Callable[[], float]


@dataclass
class SlotStats:
    label: str
    frames: int = 0
    units: int = 0
    busy_seconds: float = 0.0  # finished units, plus the running one in snapshots
    alive: bool = True
    running_since_s: float | None = None  # clock time the current unit started

    @property
    def fps(self) -> float:
        return self.frames / self.busy_seconds if self.busy_seconds > 0 else 0.0


@dataclass(frozen=True)
class ProgressSnapshot:
    frames_done: int
    frames_total: int
    elapsed_s: float
    fps: float
    eta_s: float | None
    slots: tuple[SlotStats, ...]
    quarantined: tuple[str, ...] = ()

    @property
    def fraction(self) -> float:
        return self.frames_done / self.frames_total if self.frames_total else 1.0


@dataclass
class ProgressTracker:
    """Folds events into totals; safe to feed from several threads."""

    frames_total: int
    frames_resumed: int = 0  # done by an earlier, interrupted run: not part of the speed
    clock: Clock = time.monotonic
    started_s: float = field(init=False)
    frames_done: int = 0
    slots: dict[str, SlotStats] = field(default_factory=dict)
    quarantined: list[str] = field(default_factory=list)
    # Per unit: the most frames any of its attempts reported (what frames_done counts),
    # and the frames its current attempt has reported.
    _unit_frames: dict[str, int] = field(default_factory=dict, repr=False)
    _attempt_frames: dict[str, int] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self) -> None:
        self.started_s = self.clock()
        self.frames_done = self.frames_resumed

    def _slot(self, label: str) -> SlotStats:
        return self.slots.setdefault(label, SlotStats(label))

    def handle(self, event: Event) -> None:
        with self._lock:
            if isinstance(event, UnitProgress):
                unit = event.unit_id
                attempt = self._attempt_frames.get(unit, 0) + max(0, event.frames)
                self._attempt_frames[unit] = attempt
                counted = self._unit_frames.get(unit, 0)
                if attempt > counted:  # a rerun counts only past its earlier attempts
                    self.frames_done += attempt - counted
                    self._unit_frames[unit] = attempt
                self._slot(event.slot_label).frames += event.frames
            elif isinstance(event, UnitStarted):
                self._slot(event.slot_label).running_since_s = self.clock()
            elif isinstance(event, UnitFinished):
                stats = self._slot(event.slot_label)
                stats.units += 1
                self._stop_running(stats)
            elif isinstance(event, WorkerUp):
                self._slot(event.slot_label).alive = True
            elif isinstance(event, DeviceQuarantined):
                self.quarantined.append(event.device_label)
            elif isinstance(event, WorkerDown):
                stats = self._slot(event.slot_label)
                stats.alive = False
                self._stop_running(stats)

    def _stop_running(self, stats: SlotStats) -> None:
        if stats.running_since_s is not None:
            stats.busy_seconds += self.clock() - stats.running_since_s
            stats.running_since_s = None

    def restart_unit(self, unit_id: str) -> None:
        """A unit runs again from its start (its worker died). The frames it reported stay
        counted; its rerun's first frames are those frames again, not new ones."""
        with self._lock:
            self._attempt_frames[unit_id] = 0

    def snapshot(self) -> ProgressSnapshot:
        with self._lock:
            elapsed_s = max(0.0, self.clock() - self.started_s)
            done = min(self.frames_done, self.frames_total)
            fps = max(0, done - self.frames_resumed) / elapsed_s if elapsed_s > 0 else 0.0
            eta_s = (self.frames_total - done) / fps if fps > 0 else None
            now = self.clock()
            slots = tuple(
                SlotStats(
                    s.label,
                    s.frames,
                    s.units,
                    s.busy_seconds + (now - s.running_since_s if s.running_since_s else 0.0),
                    s.alive,
                )
                for s in sorted(self.slots.values(), key=lambda s: s.label)
            )
            return ProgressSnapshot(
                done, self.frames_total, elapsed_s, fps, eta_s, slots, tuple(self.quarantined)
            )
