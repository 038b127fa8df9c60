"""Rich rendering for the CLI: a progress line that keeps what matters at any width.

The line reads ``phase  bar  done/total frames  fps  elapsed 0:12  eta 0:30``. In a
narrow terminal the bar shrinks first, then the elapsed time goes, the phase is cut,
and the rate goes; the counts and the ETA always stay. Busy slots' rates go on a
second line. The client's wait bar (:mod:`vidshard.client_bar`) draws the same line.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from types import TracebackType
from typing import Any, TypeVar

from rich.console import Console, ConsoleOptions
from rich.live import Live
from rich.text import Text

from vidshard.engine.progress import ProgressSnapshot

GAP = 2  # spaces between the line's parts
MIN_BAR = 10  # a narrower bar is left out
MAX_BAR = 40
MIN_PHASE = 16  # the phase is cut to no less than this before the rate goes
WHOLE_PHASE = 32  # a phase up to this long is shown whole rather than the elapsed time

_Line = TypeVar("_Line", bound="LiveLine")


@dataclass(frozen=True)
class BarState:
    """What the line shows; plain data, so any source (a snapshot, a job) can feed it."""

    phase: str
    done: int = 0
    total: int | None = None  # None or 0: not known yet
    fps: float | None = None
    eta_s: float | None = None
    detail: str = ""  # the second line: per-slot rates
    unit: str = "frames"  # what done and total count (a task's progress unit)


def clock_text(seconds: float | None) -> str:
    """``0:07``, ``12:34``, ``1:02:03``; ``--:--`` when unknown."""
    if seconds is None:
        return "--:--"
    minutes, secs = divmod(max(0, round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def _stats(state: BarState, elapsed_s: float) -> dict[str, str]:
    """The line's right-hand parts, in display order."""
    unit = state.unit
    if state.total:
        count = f"{state.done:>{len(str(state.total))}}/{state.total} {unit}"
    else:
        count = f"{state.done}/? {unit}"
    finished = bool(state.total) and state.done >= (state.total or 0)
    rate = "fps" if unit == "frames" else f"{unit}/s"
    return {
        "count": count,
        "fps": f"{state.fps:5.1f} {rate}" if state.fps is not None else f"  - {rate}",
        "elapsed": f"elapsed {clock_text(elapsed_s)}",
        "eta": f"eta {clock_text(0.0 if finished else state.eta_s)}",
    }


def layout(state: BarState, elapsed_s: float, width: int) -> tuple[int, int, list[str]]:
    """(phase width, bar width, the stats kept) for a line of ``width`` cells.

    What gives way, in order: the elapsed time (for a whole phase of up to
    :data:`WHOLE_PHASE` cells), the phase past :data:`MIN_PHASE` cells, the rate, the bar.
    """
    stats = _stats(state, elapsed_s)
    length = len(state.phase)
    tries = [
        ((), min(length, WHOLE_PHASE)),
        (("elapsed",), min(length, WHOLE_PHASE)),
        (("elapsed",), min(length, MIN_PHASE)),
        (("elapsed", "fps"), min(length, MIN_PHASE)),
    ]
    for drop, phase_min in tries:
        kept = [text for key, text in stats.items() if key not in drop]
        room = width - sum(map(len, kept)) - GAP * len(kept)
        if room >= phase_min + GAP + MIN_BAR:
            phase_w = min(length, room - GAP - MIN_BAR)
            return phase_w, min(MAX_BAR, room - GAP - phase_w), kept
    return max(0, min(length, room)), 0, kept  # too narrow for a bar


class ProgressLine:
    """A rich renderable of the latest :class:`BarState`, laid out for the console's width."""

    def __init__(self, phase: str, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._started_s = clock()
        self._lock = threading.Lock()
        self._state = BarState(phase)

    @property
    def state(self) -> BarState:
        return self._state

    def update(self, state: BarState) -> None:
        """Show ``state``; its frames done never go below what was shown already."""
        with self._lock:
            self._state = replace(state, done=max(state.done, self._state.done))

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> Iterator[Text]:
        state = self._state
        width = options.max_width
        phase_w, bar_w, stats = layout(state, self._clock() - self._started_s, width)
        phase = Text(state.phase, style="bold")
        phase.truncate(phase_w, overflow="ellipsis", pad=True)
        parts = [phase, bar_text(state.done, state.total, bar_w)] if bar_w else [phase]
        yield Text(" " * GAP).join([*parts, Text(" " * GAP).join(map(Text, stats))])
        if state.detail:
            detail = Text(" " * GAP + state.detail, style="dim")
            detail.truncate(width, overflow="ellipsis")
            yield detail


def bar_text(done: int, total: int | None, width: int) -> Text:
    """A bar of ``width`` cells: heavy for the done part, light for the rest (so it reads
    without colours too); all light while the total is unknown."""
    full = min(width, width * done // total) if total else 0
    style = "bar.finished" if total and done >= total else "bar.complete"
    return Text.assemble(("━" * full, style), ("─" * (width - full), "bar.back"))


def slot_summary(snapshot: ProgressSnapshot) -> str:
    """`cpu#0 41 fps · cpu#1 39 fps`: each slot's rate while busy."""
    parts = [
        f"{s.label} {s.fps:.0f} fps" + ("" if s.alive else " (down)")
        for s in snapshot.slots
        if s.frames or not s.alive
    ]
    return " · ".join(parts)


def log_above_the_line() -> list[tuple[logging.StreamHandler[Any], Any]]:
    """Point the root logger's stderr handlers at the live display's stand-in for stderr,
    so a log line (a worker's warning) is printed above the line instead of breaking it.
    Returns each moved handler with the stream to give back."""
    proxied = getattr(sys.stderr, "rich_proxied_file", None)  # set while Live redirects
    if proxied is None:
        return []
    moved = []
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.StreamHandler) and handler.stream is proxied:
            moved.append((handler, handler.setStream(sys.stderr)))
    return moved


class LiveLine:
    """A :class:`ProgressLine` drawn live on a console; a quiet no-op when disabled."""

    def __init__(
        self, console: Console, phase: str, enabled: bool = True, unit: str = "frames"
    ) -> None:
        self.line = ProgressLine(phase)
        self.line.update(BarState(phase, unit=unit))
        self._live = Live(self.line, console=console, refresh_per_second=4) if enabled else None
        self._moved: list[tuple[logging.StreamHandler[Any], Any]] = []

    def __enter__(self: _Line) -> _Line:
        if self._live is not None:
            self._live.__enter__()
            self._moved = log_above_the_line()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._live is not None:
            for handler, stream in self._moved:
                handler.setStream(stream)
            self._moved = []
            self._live.__exit__(exc_type, exc, tb)

    def show(self, state: BarState) -> None:
        self.line.update(state)  # drawn at the next refresh (4 a second, and at exit)


class JobDisplay(LiveLine):
    """The bar of one job: its phases and its progress snapshots."""

    def phase(self, name: str) -> None:
        self.show(replace(self.line.state, phase=name))

    def update(self, snapshot: ProgressSnapshot) -> None:
        self.show(
            replace(
                self.line.state,
                done=snapshot.frames_done,
                total=snapshot.frames_total,
                fps=snapshot.fps,
                eta_s=snapshot.eta_s,
                detail=slot_summary(snapshot),
            )
        )
