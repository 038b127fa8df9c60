"""The progress bar of :meth:`vidshard.Client.wait` (rich, when it is installed)."""

from __future__ import annotations

import logging
from types import TracebackType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console

    from vidshard.client import Job

logger = logging.getLogger(__name__)


class WaitBar:
    """The progress bar of :meth:`Client.wait`; a no-op when disabled or rich is absent."""

    def __init__(self, job_id: str, enabled: bool, console: Console | None) -> None:
        self._progress: Any = None
        self._task: Any = None
        self._fps = ""  # the last rate seen: a finished job reports none
        self._label = f"job {job_id[:8]}"
        if not enabled:
            return
        try:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
            )
        except ImportError:  # the client alone needs only httpx
            logger.info("rich is not installed: no progress bar")
            return
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("frames {task.fields[fps]}"),
            TextColumn("ETA {task.fields[eta]}"),
            TimeElapsedColumn(),
            console=console or Console(stderr=True),
        )

    def __enter__(self) -> WaitBar:
        if self._progress is not None:
            self._progress.__enter__()
            self._task = self._progress.add_task(f"{self._label} ...", total=None, fps="", eta="-")
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._progress is not None:
            self._progress.__exit__(exc_type, exc, tb)

    def update(self, job: Job) -> None:
        if self._progress is None:
            return
        state = job.state
        if state == "queued" and job.queue_position is not None:
            state = f"queued (#{job.queue_position})"
        total = job.frames_total
        if job.state == "succeeded" and total is None:
            total = job.frames_done
        if job.fps is not None:
            self._fps = f"{job.fps:6.1f} fps"
        self._progress.update(
            self._task,
            description=f"{self._label} {state}",
            total=total,
            completed=job.frames_done,
            fps=self._fps,
            eta=_eta_text(job.eta_s) if not job.done else "-",
        )


def _eta_text(eta_s: float | None) -> str:
    if eta_s is None:
        return "?"
    seconds = max(0, round(eta_s))
    minutes, seconds = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}" if hours else f"{minutes}:{seconds:02d}"
