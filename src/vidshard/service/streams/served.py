"""What the service keeps of each stream it runs, beside what the manager knows: the
stored row, the counts from before a restart, the webhook, and what was last published.
Plain objects, guarded by the runner's lock."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from vidshard.streams.manager import StreamView

from ..stream_store import StoredStream
from .checks import scrub
from .webhook import WebhookSender, WebhookStats


@dataclass(frozen=True)
class Counts:
    """What a stream counted; a restored stream starts from what it had counted before."""

    received: int = 0
    processed: int = 0
    dropped: int = 0
    reconnects: int = 0
    failovers: int = 0

    @staticmethod
    def of(record: StoredStream) -> Counts:
        return Counts(
            record.frames_received,
            record.frames_processed,
            record.frames_dropped,
            record.reconnects,
            record.failovers,
        )

    def on(self, record: StoredStream) -> StoredStream:
        """``record`` with these counts."""
        return replace(
            record,
            frames_received=self.received,
            frames_processed=self.processed,
            frames_dropped=self.dropped,
            reconnects=self.reconnects,
            failovers=self.failovers,
        )

    def fields(self) -> dict[str, int]:
        """As the store's columns."""
        return {
            "frames_received": self.received,
            "frames_processed": self.processed,
            "frames_dropped": self.dropped,
            "reconnects": self.reconnects,
            "failovers": self.failovers,
        }


@dataclass(frozen=True)
class LiveStream:
    """A stream as the API shows it: its row as of now, and what only the running
    stream knows."""

    record: StoredStream
    fps: float = 0.0
    latency_p50_ms: float | None = None
    latency_p95_ms: float | None = None
    last_result_at: float | None = None
    webhook: WebhookStats | None = None


@dataclass
class Served:
    """One stream this process placed."""

    record: StoredStream  # as stored, or as last known once it ended here
    base: Counts  # counted before this process placed it
    webhook: WebhookSender | None = None
    view: StreamView | None = None
    stopping: bool = False  # a DELETE is under way: its final state is the DELETE's
    published: tuple[str, str, str | None] = ("", "", None)  # state, reason, slot
    persisted_s: float = float("-inf")  # monotonic

    @property
    def is_final(self) -> bool:
        return self.record.is_final

    def counts(self) -> Counts:
        """Before this process, plus since."""
        view = self.view
        if view is None or self.record.is_final:
            return Counts.of(self.record)
        status = view.status
        return Counts(
            self.base.received + status.frames_received,
            self.base.processed + status.frames_processed,
            self.base.dropped + status.frames_dropped,
            self.base.reconnects + status.reconnects,
            self.base.failovers + view.failovers,
        )

    def current(self) -> StoredStream:
        """The row as of now (the manager's latest state and counts)."""
        view = self.view
        if view is None or self.record.is_final:
            return self.record
        status = view.status
        now = replace(
            self.record,
            state=status.state.value,
            reason=scrub(status.reason, self.record.url),
            slot=view.slot,
            state_since=status.state_since or self.record.state_since,
        )
        return self.counts().on(now)

    def live(self) -> LiveStream:
        view = self.view
        hook = self.webhook.stats() if self.webhook is not None else None
        if view is None or self.record.is_final:
            return LiveStream(self.record, webhook=hook)
        status = view.status
        return LiveStream(
            self.current(),
            fps=status.fps,
            latency_p50_ms=status.latency_p50_ms,
            latency_p95_ms=status.latency_p95_ms,
            last_result_at=status.last_result_at,
            webhook=hook,
        )


def status_payload(live: LiveStream) -> dict[str, Any]:
    """A stream's ``event: status`` (its reason is the viewer's to redact)."""
    record = live.record
    return {
        "stream": record.id,
        "state": record.state,
        "reason": record.reason,
        "slot": record.slot,
        "state_since": record.state_since,
        "fps": round(live.fps, 2),
        "frames_processed": record.frames_processed,
        "frames_dropped": record.frames_dropped,
        "reconnects": record.reconnects,
        "failovers": record.failovers,
    }


@dataclass
class Write:
    """A store write waiting for the runner's thread (the newest fields win)."""

    fields: dict[str, Any] = field(default_factory=dict)
    end: tuple[str, str] | None = None  # (final state, reason)

    def merge(self, newer: Write) -> Write:
        return Write({**self.fields, **newer.fields}, newer.end or self.end)
