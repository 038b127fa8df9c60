"""One ``vidshard streams run``: its pool and stream manager, its signals, what it shows
while it runs (the live table, a line per change, or JSON lines), its webhooks, and how
it ends (see :mod:`.streams` for the command and its exit statuses)."""

from __future__ import annotations

import json
import logging
import re
import signal
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any, Literal

from rich.live import Live

from vidshard.engine.events import DeviceQuarantined, Event, WorkerDown
from vidshard.errors import ConfigError, InputError, VidshardError
from vidshard.streams.options import StreamOptions
from vidshard.streams.sources import redact_url
from vidshard.streams.types import StreamRecord

from . import console
from .stream_table import StreamBoard, StreamTable, render_lines

logger = logging.getLogger(__name__)

TICK_S = 0.25  # the command looks at its signals, deadline and streams this often
WEBHOOK_QUEUE = 1000  # records a stream's webhook holds while its receiver is slow or down
WEBHOOK_CLOSE_S = 5.0  # the webhooks' last POSTs at the end, all together
STREAM_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
Show = Literal["table", "lines", "json", "quiet"]


@dataclass(frozen=True)
class StreamSource:
    """One stream the command line names: its id and its URL."""

    stream_id: str
    url: str


def parse_sources(given: Sequence[str]) -> list[StreamSource]:
    """``URL`` or ``NAME=URL``, in order; unnamed streams are ``s<position>`` (``s1``,
    ``s2``, ...). A ``NAME=`` prefix is a name only when it is one (letters, digits,
    ``._-``), so ``http://host/a?b=c`` is a URL; write ``./a=b.mp4`` for a file named so."""
    sources = []
    for position, text in enumerate(given, start=1):
        name, sep, url = text.partition("=")
        if sep and STREAM_NAME.fullmatch(name):
            if not url.strip():
                raise InputError(f"stream {name!r}: expected NAME=URL, got no URL after '='")
            sources.append(StreamSource(name, url))
        else:
            sources.append(StreamSource(f"s{position}", text))
    seen: set[str] = set()
    for source in sources:
        if source.stream_id in seen:
            raise ConfigError(f"stream name {source.stream_id!r} is given twice")
        seen.add(source.stream_id)
    return sources


def view_json(view: Any, at: float) -> dict[str, Any]:
    """A stream's view as one JSON object (what ``--json`` prints)."""
    status = view.status
    return {
        "event": "status",
        "at": round(at, 3),
        "stream": view.stream_id,
        "url": _shown_url(view.url),
        "state": status.state.value,
        "reason": status.reason,
        "state_since": status.state_since,
        "slot": view.slot,
        "fps": round(status.fps, 2),
        "frames_received": status.frames_received,
        "frames_processed": status.frames_processed,
        "frames_dropped": status.frames_dropped,
        "latency_ms": {"p50": status.latency_p50_ms, "p95": status.latency_p95_ms},
        "reconnects": status.reconnects,
        "failovers": view.failovers,
    }


def _shown_url(url: str) -> str:
    return redact_url(url)


def check_webhook(url: str) -> None:
    """A webhook URL ``streams run`` can POST to (http or https, a host); the webhook
    sender comes with the service's extra. :class:`ConfigError` otherwise."""
    try:
        from vidshard.service.security import check_url
        from vidshard.service.streams import webhook  # noqa: F401 - its extra is there
    except ImportError as exc:
        raise ConfigError(
            f"--webhook-url needs the service's extra: pip install 'vidshard[serve]' ({exc})"
        ) from None
    try:
        check_url(url, ("http", "https"))
    except VidshardError as exc:
        raise ConfigError(f"--webhook-url: {exc}") from None


class Webhooks:
    """Each stream's webhook: its records POSTed in batches, retried, never in the way
    (the service's :class:`~vidshard.service.streams.webhook.WebhookSender`; every host
    may be reached: the command's user is the machine's)."""

    def __init__(self, options: StreamOptions, stream_ids: Sequence[str]) -> None:
        from vidshard.service.security import HostRules
        from vidshard.service.streams.webhook import WebhookSender

        url = options.webhook_url or ""
        self._senders = {
            stream_id: WebhookSender(
                stream_id,
                url,
                batch=options.webhook_batch,
                interval_s=options.webhook_interval_s,
                capacity=WEBHOOK_QUEUE,
                hosts=HostRules.open_to_all(),
            ).start()
            for stream_id in stream_ids
        }

    def push(self, record: StreamRecord) -> None:
        sender = self._senders.get(record.stream_id)
        if sender is not None:
            sender.push(record.to_json())

    def close(self) -> None:
        """One last POST of what is queued, for all of them within WEBHOOK_CLOSE_S."""
        deadline = time.monotonic() + WEBHOOK_CLOSE_S
        for sender in self._senders.values():
            sender.close(max(0.1, deadline - time.monotonic()))

    def stats(self, stream_id: str) -> dict[str, Any] | None:
        sender = self._senders.get(stream_id)
        if sender is None:
            return None
        stats = sender.stats()
        return {
            "sent": stats.sent,
            "dropped": stats.dropped,
            "pending": stats.pending,
            "failures": stats.failures,
            "last_error": stats.last_error,
        }


class StreamSession:
    """One ``streams run``: its pool, its manager, its display, its signals."""

    def __init__(
        self,
        sources: Sequence[StreamSource],
        options: StreamOptions,
        recipe: Any,
        output: Path | None,
        *,
        per_slot_limit: int,
        duration_s: float | None,
        show: Show,
    ) -> None:
        self.sources = list(sources)
        self.options = options
        self.recipe = recipe
        self.output = output
        self.per_slot_limit = per_slot_limit
        self.duration_s = duration_s
        self.show = show
        self.board = StreamBoard()
        self.webhooks: Webhooks | None = None
        self.stopped_by = ""  # "duration", "SIGINT", "SIGTERM", "ended"
        self._signal: str | None = None
        self._closing = False
        self._started_s = time.monotonic()

    def run(self, slots: Sequence[Any], pool: Any = None) -> int:
        """Run until the duration, a signal or the end of every stream, on ``pool`` (a
        new local one by default); the exit status."""
        from vidshard.executors.local import LocalExecutor

        ids = [s.stream_id for s in self.sources]
        self.board.waiting(ids, f"starting {len(slots)} worker(s)")
        if self.show in ("table", "lines"):
            for source in self.sources:
                line = f"{source.stream_id}: {_shown_url(source.url)}"
                console.err.print(line, highlight=False, markup=False, soft_wrap=True)
        pool = pool if pool is not None else LocalExecutor()
        try:
            with self._signals(), self._display():
                try:
                    pool.start(slots, None, self._on_event)
                    self._stream(pool)
                finally:
                    self._closing = True
                    pool.shutdown()
                self._show_changes()
        except KeyboardInterrupt:  # a second signal: stopped without waiting
            console.err.print(
                "interrupted again: stopped without waiting for the streams' last results",
                highlight=False,
            )
            return 130
        return self._finish()

    def _stream(self, pool: Any) -> None:
        from vidshard.streams.manager import StreamManager

        if self.options.webhook_url is not None:
            self.webhooks = Webhooks(self.options, [s.stream_id for s in self.sources])
        manager = StreamManager(
            pool,
            per_slot_limit=self.per_slot_limit,
            on_status=self.board.update,
            on_record=self.webhooks.push if self.webhooks is not None else None,
        )
        try:
            self._started_s = time.monotonic()
            for source in self.sources:
                if self._signal is not None:
                    break
                folder = self.output / source.stream_id if self.output is not None else None
                view = manager.add(
                    source.url,
                    self.options,
                    self.recipe,
                    stream_id=source.stream_id,
                    output_dir=folder,
                )
                self.board.update(view)
            self._wait()
        finally:
            self._closing = True
            manager.close()
            if self.webhooks is not None:
                self.webhooks.close()

    def _wait(self) -> None:
        deadline = None if self.duration_s is None else self._started_s + self.duration_s
        while True:
            self._show_changes()
            if self._signal is not None:
                self.stopped_by = self._signal
                break
            if self.board.all_final():
                self.stopped_by = "ended"
                break
            if deadline is not None and time.monotonic() >= deadline:
                self.stopped_by = "duration"
                break
            time.sleep(TICK_S)
        if self.show in ("table", "lines") and self.stopped_by != "ended":
            why = "--duration passed" if self.stopped_by == "duration" else self.stopped_by
            console.err.print(f"stopping every stream ({why})", highlight=False)

    def _on_event(self, event: Event) -> None:
        if self._closing:
            return
        if isinstance(event, WorkerDown):
            logger.warning("worker %s down: %s", event.slot_label, event.reason)
        elif isinstance(event, DeviceQuarantined):
            logger.warning("device %s quarantined: %s", event.device_label, event.reason)

    # --- output -----------------------------------------------------------------------

    def _show_changes(self) -> None:
        for at, view in self.board.take_changes():
            if self.show == "json":
                console.out.out(json.dumps(view_json(view, at)), highlight=False)
            elif self.show == "lines":
                console.err.print(_change_line(view), highlight=False, markup=False, soft_wrap=True)

    def _finish(self) -> int:
        views = self.board.views()
        failed = [v for v in views if v.state.value == "failed"]
        code = 1 if views and len(failed) == len(views) else 0
        seconds = time.monotonic() - self._started_s
        if self.show == "json":
            summary = {
                "event": "summary",
                "streams": len(views),
                "failed": len(failed),
                "frames_processed": sum(v.status.frames_processed for v in views),
                "seconds": round(seconds, 3),
                "stopped_by": self.stopped_by or "start",
                "exit_code": code,
            }
            if self.webhooks is not None:
                summary["webhooks"] = {v.stream_id: self.webhooks.stats(v.stream_id) for v in views}
            console.out.out(json.dumps(summary), highlight=False)
            return code
        if self.show == "lines":
            for line in render_lines(self.board.rows(), console.err.width):
                console.err.print(line, soft_wrap=True)
        for view in views:
            console.out.print(self._outcome(view), highlight=False, soft_wrap=True)
        if failed:
            noun = "stream" if len(views) == 1 else "streams"
            console.err.print(
                f"[red]{len(failed)} of {len(views)} {noun} failed[/]", highlight=False
            )
        return code

    def _outcome(self, view: Any) -> str:
        status = view.status
        text = (
            f"{view.stream_id} {status.state.value}: {status.frames_processed} frames "
            f"processed, {status.frames_dropped} dropped, {status.reconnects} reconnects, "
            f"{view.failovers} failovers"
        )
        if status.reason:
            text += f" ({status.reason})"
        hook = self.webhooks.stats(view.stream_id) if self.webhooks is not None else None
        if hook is not None:
            text += f"; webhook: {hook['sent']} sent"
            if hook["dropped"] or hook["pending"]:
                text += f", {hook['dropped'] + hook['pending']} not sent"
            if hook["last_error"]:
                text += f" (last POST failed: {hook['last_error']})"
        folder = self.output / view.stream_id if self.output is not None else None
        if folder is not None and folder.is_dir() and any(folder.iterdir()):
            text += f"; files in {folder}"
        return text

    @contextmanager
    def _display(self) -> Iterator[None]:
        if self.show != "table":
            yield
            return
        from .display import log_above_the_line

        with Live(StreamTable(self.board.rows), console=console.err, refresh_per_second=4):
            moved = log_above_the_line()
            try:
                yield
            finally:
                for handler, stream in moved:
                    handler.setStream(stream)

    @contextmanager
    def _signals(self) -> Iterator[None]:
        """SIGINT and SIGTERM stop every stream; a second one stops without waiting."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def stop(signum: int, _frame: FrameType | None) -> None:
            if self._signal is not None:
                raise KeyboardInterrupt
            self._signal = signal.Signals(signum).name

        previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def _change_line(view: Any) -> str:
    status = view.status
    text = f"{view.stream_id} {status.state.value}"
    if view.slot:
        text += f" on {view.slot}"
    if status.reason:
        text += f": {status.reason}"
    return text
