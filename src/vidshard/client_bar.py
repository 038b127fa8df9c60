"""The progress bar of :meth:`vidshard.Client.wait` (rich, when it is installed): the
CLI's progress line (:mod:`vidshard.cli.display`), fed from the polled job.

The bar reads a job through :class:`JobProgress`, the few fields it shows, so it does not
depend on the client (which depends on it); :class:`vidshard.client.Job` is one."""

from __future__ import annotations

import logging
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from rich.console import Console

logger = logging.getLogger(__name__)


class JobProgress(Protocol):
    """What the bar shows of a polled job, as :class:`vidshard.client.Job` holds it."""

    @property
    def state(self) -> str: ...
    @property
    def queue_position(self) -> int | None: ...
    @property
    def frames_done(self) -> int: ...
    @property
    def frames_total(self) -> int | None: ...
    @property
    def fps(self) -> float | None: ...
    @property
    def eta_s(self) -> float | None: ...
    @property
    def done(self) -> bool: ...


class WaitBar:
    """The progress bar of :meth:`Client.wait`; a no-op when disabled or rich is absent."""

    def __init__(self, job_id: str, enabled: bool, console: Console | None) -> None:
        self._line: Any = None
        self._fps: float | None = None  # the last rate seen: a finished job reports none
        self._label = f"job {job_id[:8]}"
        if not enabled:
            return
        try:
            from rich.console import Console

            from vidshard.cli.display import LiveLine
        except ImportError:  # the client alone needs only httpx
            logger.info("rich is not installed: no progress bar")
            return
        self._line = LiveLine(console or Console(stderr=True), f"{self._label} ...")

    def __enter__(self) -> WaitBar:
        if self._line is not None:
            self._line.__enter__()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._line is not None:
            self._line.__exit__(exc_type, exc, tb)

    def update(self, job: JobProgress) -> None:
        if self._line is None:
            return
        from vidshard.cli.display import BarState

        state = job.state
        if state == "queued" and job.queue_position is not None:
            state = f"queued (#{job.queue_position})"
        total = job.frames_total
        if job.state == "succeeded" and total is None:
            total = job.frames_done
        if job.fps is not None:
            self._fps = job.fps
        self._line.show(
            BarState(
                f"{self._label} {state}",
                done=job.frames_done,  # the line never shows fewer than it did
                total=total,
                fps=self._fps,
                eta_s=job.eta_s if not job.done else None,
            )
        )
