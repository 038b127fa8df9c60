"""Progress as data: frames done, speed, ETA and per-slot rates from events.

The clock is injected so speed and ETA are testable (STYLE idea 9).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from .events import Event, UnitFinished, UnitProgress, WorkerDown, WorkerUp

Clock = Callable[[], float]


@dataclass
class SlotStats:
    label: str
    frames: int = 0
    units: int = 0
    busy_seconds: float = 0.0
    alive: bool = True

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

    @property
    def fraction(self) -> float:
        return self.frames_done / self.frames_total if self.frames_total else 1.0


@dataclass
class ProgressTracker:
    """Folds events into totals; safe to feed from several threads."""

    frames_total: int
    clock: Clock = time.monotonic
    started_s: float = field(init=False)
    frames_done: int = 0
    slots: dict[str, SlotStats] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self) -> None:
        self.started_s = self.clock()

    def _slot(self, label: str) -> SlotStats:
        return self.slots.setdefault(label, SlotStats(label))

    def handle(self, event: Event) -> None:
        with self._lock:
            if isinstance(event, UnitProgress):
                self.frames_done += event.frames
                self._slot(event.slot_label).frames += event.frames
            elif isinstance(event, UnitFinished):
                stats = self._slot(event.slot_label)
                stats.units += 1
                stats.busy_seconds += event.seconds
            elif isinstance(event, WorkerUp):
                self._slot(event.slot_label).alive = True
            elif isinstance(event, WorkerDown):
                self._slot(event.slot_label).alive = False

    def discount(self, frames: int) -> None:
        """Take back frames of a unit that will run again (its worker died)."""
        with self._lock:
            self.frames_done = max(0, self.frames_done - frames)

    def snapshot(self) -> ProgressSnapshot:
        with self._lock:
            elapsed_s = max(0.0, self.clock() - self.started_s)
            done = min(self.frames_done, self.frames_total)
            fps = done / elapsed_s if elapsed_s > 0 else 0.0
            eta_s = (self.frames_total - done) / fps if fps > 0 else None
            slots = tuple(
                SlotStats(s.label, s.frames, s.units, s.busy_seconds, s.alive)
                for s in sorted(self.slots.values(), key=lambda s: s.label)
            )
            return ProgressSnapshot(done, self.frames_total, elapsed_s, fps, eta_s, slots)
