"""The live streams of ``vidshard serve`` in the job store's database, beside the jobs.

Two tables on the jobs store's engine and metadata (the jobs table is not touched):
``vidshard_streams``, one row per stream (its URL, options and owner, its last state
with its reason, and its counters as last shown), and ``vidshard_recordings``, the window
of a live stream a ``/process_video`` job records before it runs (its URL and duration,
which the job's own record has no columns for).

A stream whose row is in a live state (connecting, live, reconnecting) when the server
starts is placed again; one stopped or failed stays so, and is removed with its files
``job_ttl_s`` after it ended.
"""

from __future__ import annotations

import builtins
import dataclasses
import re
import time
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import (
    JSON,
    Column,
    Double,
    Integer,
    Row,
    String,
    Table,
    Text,
    delete,
    insert,
    select,
    update,
)

from .store import JobStore
from .store_errors import CORRUPT, StoreUnavailable
from .store_schema import jobs_table, metadata

CONNECTING = "connecting"
LIVE = "live"
RECONNECTING = "reconnecting"
FAILED = "failed"
STOPPED = "stopped"
LIVE_STATES = (CONNECTING, LIVE, RECONNECTING)
FINAL_STATES = (FAILED, STOPPED)
STREAM_STATES = LIVE_STATES + FINAL_STATES
STREAM_ID = re.compile(r"[0-9a-f]{32}")


@dataclass(frozen=True, kw_only=True)
class StoredStream:
    """One stream as stored; times are epoch seconds."""

    id: str
    url: str  # as the server opens it: a resolved path, or the URL with its credentials
    params: dict[str, Any] = field(default_factory=dict)  # its StreamOptions, as JSON
    output_dir: str
    owner: str | None = None
    state: str = CONNECTING
    reason: str = ""
    slot: str | None = None
    created_at: float = 0.0
    state_since: float = 0.0
    ended_at: float | None = None
    updated_at: float = 0.0
    frames_received: int = 0
    frames_processed: int = 0
    frames_dropped: int = 0
    reconnects: int = 0
    failovers: int = 0
    seq: int = 0

    def __post_init__(self) -> None:
        if self.state not in STREAM_STATES:
            raise ValueError(f"stream state: expected one of {STREAM_STATES}, got {self.state!r}")

    @property
    def is_final(self) -> bool:
        return self.state in FINAL_STATES


_FIELDS = tuple(f.name for f in dataclasses.fields(StoredStream))
_MUTABLE = frozenset(_FIELDS) - {"id", "seq", "owner", "url", "params", "output_dir", "created_at"}

streams_table = Table(
    "vidshard_streams",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("id", String(64), nullable=False, unique=True),
    Column("url", Text, nullable=False),
    Column("params", JSON, nullable=False),
    Column("output_dir", Text, nullable=False),
    Column("owner", String(64)),
    Column("state", String(16), nullable=False, index=True),
    Column("reason", Text, nullable=False),
    Column("slot", String(64)),
    Column("created_at", Double, nullable=False),
    Column("state_since", Double, nullable=False),
    Column("ended_at", Double),
    Column("updated_at", Double, nullable=False),
    Column("frames_received", Integer, nullable=False),
    Column("frames_processed", Integer, nullable=False),
    Column("frames_dropped", Integer, nullable=False),
    Column("reconnects", Integer, nullable=False),
    Column("failovers", Integer, nullable=False),
    sqlite_autoincrement=True,
)
recordings_table = Table(
    "vidshard_recordings",
    metadata,
    Column("job_id", String(32), primary_key=True, autoincrement=False),
    Column("url", Text, nullable=False),
    Column("duration_s", Double, nullable=False),
    Column("transport", String(8), nullable=False),
)


@dataclass(frozen=True)
class Recording:
    """The live-stream window a job records as its input."""

    job_id: str
    url: str
    duration_s: float
    transport: str = "tcp"


class StreamStore:
    """Streams and recordings in the database of ``jobs`` (one short transaction each;
    :class:`StoreUnavailable` when the database cannot be used now)."""

    def __init__(self, jobs: JobStore) -> None:
        self._jobs = jobs

    def create_all(self) -> None:
        """Create the two tables when missing (after the jobs store's own ``create_all``)."""
        with self._jobs.transaction() as conn:
            streams_table.create(conn, checkfirst=True)
            recordings_table.create(conn, checkfirst=True)

    # --- streams ---------------------------------------------------------------------

    def add(self, stream: StoredStream) -> StoredStream:
        now = time.time()
        values = {name: getattr(stream, name) for name in _FIELDS if name != "seq"}
        values["created_at"] = stream.created_at or now
        values["state_since"] = stream.state_since or now
        values["updated_at"] = now
        with self._jobs.transaction() as conn:
            conn.execute(insert(streams_table).values(values))
            return _fetch(conn, stream.id)

    def get(self, stream_id: str) -> StoredStream | None:
        if not STREAM_ID.fullmatch(stream_id):  # no such stream; and PostgreSQL refuses a NUL
            return None
        with self._jobs.transaction() as conn:
            return _get(conn, stream_id)

    def list(self, owner: str | None = None) -> builtins.list[StoredStream]:
        """Every stream (with ``owner``: that owner's), oldest first."""
        query = select(streams_table).order_by(streams_table.c.seq)
        if owner is not None:
            query = query.where(streams_table.c.owner == owner)
        with self._jobs.transaction() as conn:
            return _streams(conn.execute(query))

    def live(self) -> builtins.list[StoredStream]:
        """The streams a stopped server left in a live state: to place again."""
        query = select(streams_table).where(streams_table.c.state.in_(LIVE_STATES))
        with self._jobs.transaction() as conn:
            return _streams(conn.execute(query.order_by(streams_table.c.seq)))

    def update(
        self, stream_id: str, *, only_live: bool = False, **fields: Any
    ) -> StoredStream | None:
        """Set ``fields`` (and ``updated_at``); the new row, or None for an unknown id (or,
        ``only_live``, for a stream that has ended: its final state stays)."""
        unknown = sorted(fields.keys() - _MUTABLE)
        if unknown:
            raise TypeError(f"cannot set stream field(s) {', '.join(unknown)}")
        if fields.get("state", CONNECTING) not in STREAM_STATES:
            raise ValueError(
                f"stream state: expected one of {STREAM_STATES}, got {fields['state']!r}"
            )
        values = {"updated_at": time.time(), **fields}
        with self._jobs.transaction() as conn:
            where = streams_table.c.id == stream_id
            if only_live:
                where = where & streams_table.c.state.in_(LIVE_STATES)
            if conn.execute(update(streams_table).where(where).values(values)).rowcount:
                return _fetch(conn, stream_id)
            return None

    def end(self, stream_id: str, state: str, reason: str, **fields: Any) -> StoredStream | None:
        """Move a live stream to a final state, once: None when it is unknown or had
        ended already (so a stop and a failure that cross keep the first)."""
        if state not in FINAL_STATES:
            raise ValueError(f"expected a final state {FINAL_STATES}, got {state!r}")
        now = time.time()
        values = {
            "updated_at": now,
            "state_since": now,
            "ended_at": now,
            **fields,
            "state": state,
            "reason": reason,
        }
        where = (streams_table.c.id == stream_id) & streams_table.c.state.in_(LIVE_STATES)
        with self._jobs.transaction() as conn:
            if conn.execute(update(streams_table).where(where).values(values)).rowcount:
                return _fetch(conn, stream_id)
            return None

    def ended_before(self, t: float) -> builtins.list[StoredStream]:
        """Streams that ended before epoch second ``t``, oldest first."""
        where = streams_table.c.state.in_(FINAL_STATES) & (streams_table.c.ended_at < t)
        with self._jobs.transaction() as conn:
            query = select(streams_table).where(where).order_by(streams_table.c.ended_at)
            return _streams(conn.execute(query))

    def delete(self, stream_id: str) -> bool:
        with self._jobs.transaction() as conn:
            where = streams_table.c.id == stream_id
            return bool(conn.execute(delete(streams_table).where(where)).rowcount)

    # --- recordings --------------------------------------------------------------------

    def add_recording(self, recording: Recording) -> None:
        with self._jobs.transaction() as conn:
            conn.execute(insert(recordings_table).values(dataclasses.asdict(recording)))

    def recording(self, job_id: str) -> Recording | None:
        with self._jobs.transaction() as conn:
            row = conn.execute(
                select(recordings_table).where(recordings_table.c.job_id == job_id)
            ).first()
        if row is None:
            return None
        return Recording(row.job_id, row.url, float(row.duration_s), row.transport)

    def delete_recording(self, job_id: str) -> None:
        with self._jobs.transaction() as conn:
            conn.execute(delete(recordings_table).where(recordings_table.c.job_id == job_id))

    def forget_orphan_recordings(self) -> int:
        """Remove the recordings whose job is gone (expired); how many."""
        orphan = ~recordings_table.c.job_id.in_(select(jobs_table.c.id))
        with self._jobs.transaction() as conn:
            return conn.execute(delete(recordings_table).where(orphan)).rowcount or 0


def _get(conn: Any, stream_id: str) -> StoredStream | None:
    rows = conn.execute(select(streams_table).where(streams_table.c.id == stream_id).limit(1))
    found = _streams(rows)
    return found[0] if found else None


def _fetch(conn: Any, stream_id: str) -> StoredStream:
    found = _get(conn, stream_id)
    if found is None:  # written in this same transaction
        raise RuntimeError("a stream vanished inside its own transaction")
    return found


def _streams(rows: Any) -> builtins.list[StoredStream]:
    """Rows as records; a row that cannot be read is the store's corruption, not a bug."""
    try:
        return [_stream(row) for row in rows]
    except (ValueError, TypeError, KeyError) as exc:
        raise StoreUnavailable(CORRUPT, f"a stored stream cannot be read: {exc}") from exc


def _stream(row: Row[Any]) -> StoredStream:
    values = {name: row._mapping[name] for name in _FIELDS}
    values["params"] = dict(values["params"] or {})
    return StoredStream(**values)
