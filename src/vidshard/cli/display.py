"""Rich rendering for the CLI: a progress bar with fps and per-device rates."""

from __future__ import annotations

from types import TracebackType

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from vidshard.engine.progress import ProgressSnapshot


def slot_summary(snapshot: ProgressSnapshot) -> str:
    """`cpu#0 41 fps · cpu#1 39 fps`: each slot's rate while busy."""
    parts = [
        f"{s.label} {s.fps:.0f} fps" + ("" if s.alive else " (down)")
        for s in snapshot.slots
        if s.frames or not s.alive
    ]
    return " · ".join(parts)


class JobDisplay:
    """A progress bar for one job; a quiet no-op when ``enabled`` is False."""

    def __init__(self, console: Console, total_label: str, enabled: bool = True) -> None:
        self.console = console
        self.enabled = enabled
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("frames"),
            TextColumn("{task.fields[fps]:>6.1f} fps"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            TextColumn("[dim]{task.fields[slots]}"),
            console=console,
            transient=False,
            disable=not enabled,
        )
        self._task: TaskID | None = None
        self._label = total_label

    def __enter__(self) -> JobDisplay:
        self._progress.__enter__()
        self._task = self._progress.add_task(self._label, total=None, fps=0.0, slots="")
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._progress.__exit__(exc_type, exc, tb)

    def phase(self, name: str) -> None:
        if self._task is not None:
            self._progress.update(self._task, description=name)

    def update(self, snapshot: ProgressSnapshot) -> None:
        if self._task is None:
            return
        self._progress.update(
            self._task,
            total=snapshot.frames_total,
            completed=snapshot.frames_done,
            fps=snapshot.fps,
            slots=slot_summary(snapshot),
        )
