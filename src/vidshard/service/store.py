"""The persistent job store of ``vidshard serve``, through SQLAlchemy (SQLite by default).

Each method is one short transaction on a pooled connection, so FastAPI's threadpool and
the runner thread can call the store at once. Only portable column types are used, so any
SQLAlchemy URL works. Every write transaction writes before it reads: SQLite cannot turn a
read lock into a write lock while another writer holds the database, but it can wait for
a write lock (the busy timeout).
"""

from __future__ import annotations

import builtins
import contextlib
import dataclasses
import re
import threading
import time
import uuid
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    Connection,
    Double,
    Integer,
    MetaData,
    Row,
    String,
    Table,
    Text,
    create_engine,
    delete,
    event,
    func,
    insert,
    select,
    text,
    true,
    update,
)
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, IntegrityError, SQLAlchemyError
from sqlalchemy.pool import ConnectionPoolEntry, StaticPool
from sqlalchemy.sql.elements import ColumnElement

from vidshard.errors import ConfigError

QUEUED = "queued"
RUNNING = "running"
SUCCEEDED = "succeeded"
FAILED = "failed"
CANCELLED = "cancelled"
STATES = (QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED)
FINAL_STATES = (SUCCEEDED, FAILED, CANCELLED)

INPUT_KINDS = ("path", "upload", "url")

SQLITE_BUSY_TIMEOUT_S = 30.0
_JOB_ID = re.compile(r"[0-9a-f]{32}")


def new_job_id() -> str:
    """A fresh job id: 32 lowercase hex digits (a uuid4)."""
    return uuid.uuid4().hex


@dataclass(frozen=True, kw_only=True)
class JobRecord:
    """One job as stored; a snapshot, never the live database row.

    ``seq`` is the submission order, given by :meth:`JobStore.add`; times are epoch
    seconds (0 means "now" to :meth:`JobStore.add`).
    """

    task: str
    input_path: str
    input_kind: str
    id: str = field(default_factory=new_job_id)
    seq: int = 0
    state: str = QUEUED
    priority: int = 0
    params: dict[str, Any] = field(default_factory=dict)
    output_path: str | None = None
    idempotency_key: str | None = None
    created_at: float = 0.0
    started_at: float | None = None
    finished_at: float | None = None
    updated_at: float = 0.0
    frames_done: int = 0
    frames_total: int | None = None
    error: str | None = None
    error_type: str | None = None
    cancel_requested: bool = False
    attempts: int = 0

    def __post_init__(self) -> None:
        if not _JOB_ID.fullmatch(self.id):
            raise ValueError(f"job id: expected 32 lowercase hex digits, got {self.id!r}")
        _check_states((self.state,))
        if self.input_kind not in INPUT_KINDS:
            raise ValueError(f"input_kind: expected one of {INPUT_KINDS}, got {self.input_kind!r}")

    @property
    def is_final(self) -> bool:
        return self.state in FINAL_STATES


_FIELDS = tuple(f.name for f in dataclasses.fields(JobRecord))
# What update() and transition() may set; id and seq never change.
_MUTABLE = frozenset(_FIELDS) - {"id", "seq"}

_metadata = MetaData()
# Double, not Float: MySQL's FLOAT is single precision, too coarse for epoch seconds.
_jobs = Table(
    "vidshard_jobs",
    _metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("id", String(32), nullable=False, unique=True),
    Column("task", String(128), nullable=False),
    Column("state", String(16), nullable=False, index=True),
    Column("priority", Integer, nullable=False),
    Column("params", JSON, nullable=False),
    Column("input_path", Text, nullable=False),
    Column("input_kind", String(16), nullable=False),
    Column("output_path", Text),
    Column("idempotency_key", String(255), unique=True),
    Column("created_at", Double, nullable=False),
    Column("started_at", Double),
    Column("finished_at", Double),
    Column("updated_at", Double, nullable=False),
    Column("frames_done", Integer, nullable=False),
    Column("frames_total", Integer),
    Column("error", Text),
    Column("error_type", String(128)),
    Column("cancel_requested", Boolean, nullable=False),
    Column("attempts", Integer, nullable=False),
    # Never reuse the seq of a deleted job: submission order stays monotonic.
    sqlite_autoincrement=True,
)
_RUN_ORDER = (_jobs.c.priority.desc(), _jobs.c.seq.asc())


class JobStore:
    """Jobs in the database at ``url``; call :meth:`create_all` once before use.

    Raises :class:`ConfigError`, naming the database without its password, when the URL
    is malformed, its driver is missing, or (from :meth:`create_all`) it cannot be opened.
    """

    def __init__(self, url: str) -> None:
        try:
            self._url: URL = make_url(url)
        except ArgumentError:
            raise ConfigError(
                f"invalid job database URL {_hide_password(url)!r}: "
                "expected dialect[+driver]://user:password@host/database"
            ) from None
        self._name = self._url.render_as_string(hide_password=True)
        sqlite = self._url.get_backend_name() == "sqlite"
        options: dict[str, Any] = {"pool_pre_ping": not sqlite}
        # An in-memory SQLite database lives in one connection: share it, one user at a time.
        self._lock: contextlib.AbstractContextManager[Any] = contextlib.nullcontext()
        if sqlite:
            options["connect_args"] = {
                "check_same_thread": False,
                "timeout": SQLITE_BUSY_TIMEOUT_S,
            }
            if self._sqlite_file() is None:
                options["poolclass"] = StaticPool
                self._lock = threading.RLock()
        try:
            self._engine = create_engine(self._url, **options)
        except (SQLAlchemyError, ImportError) as exc:
            raise ConfigError(f"cannot use job database {self._name}: {_reason(exc)}") from None
        if sqlite:
            event.listen(self._engine, "connect", _sqlite_pragmas)

    def create_all(self) -> None:
        """Create the jobs table (and a SQLite file's directory) when missing."""
        try:
            sqlite_file = self._sqlite_file()
            if sqlite_file is not None:
                sqlite_file.parent.mkdir(parents=True, exist_ok=True)
            with self._begin() as conn:
                _metadata.create_all(conn)
        except (SQLAlchemyError, OSError) as exc:
            raise ConfigError(f"cannot open job database {self._name}: {_reason(exc)}") from None

    def ping(self) -> bool:
        """Whether the database answers a trivial query; never raises."""
        try:
            with self._begin() as conn:
                conn.execute(text("SELECT 1"))
        except SQLAlchemyError:
            return False
        return True

    def add(self, record: JobRecord) -> tuple[JobRecord, bool]:
        """Insert ``record`` and return it as stored with True; when its idempotency key is
        already taken, the job that holds it with False (safe against racing adds)."""
        now = time.time()
        values = {name: getattr(record, name) for name in _FIELDS if name != "seq"}
        values["created_at"] = record.created_at or now
        values["updated_at"] = record.updated_at or now
        try:
            with self._begin() as conn:
                conn.execute(insert(_jobs).values(values))
                return _fetch(conn, _jobs.c.id == record.id), True
        except IntegrityError:
            if record.idempotency_key is None:
                raise
            with self._begin() as conn:
                existing = _get(conn, _jobs.c.idempotency_key == record.idempotency_key)
            if existing is None:  # the clash was on something else (the id)
                raise
            return existing, False

    def get(self, job_id: str) -> JobRecord | None:
        with self._begin() as conn:
            return _get(conn, _jobs.c.id == job_id)

    def find_by_idempotency_key(self, key: str) -> JobRecord | None:
        with self._begin() as conn:
            return _get(conn, _jobs.c.idempotency_key == key)

    def list(
        self, states: Collection[str] | None = None, limit: int = 50, offset: int = 0
    ) -> tuple[builtins.list[JobRecord], int]:
        """A page of jobs, newest first, and how many jobs match ``states`` in all."""
        where: ColumnElement[bool] = true()
        if states is not None:
            _check_states(states)
            where = _jobs.c.state.in_(builtins.list(states))
        with self._begin() as conn:
            total = conn.execute(select(func.count()).select_from(_jobs).where(where)).scalar_one()
            rows = conn.execute(
                select(_jobs).where(where).order_by(_jobs.c.seq.desc()).limit(limit).offset(offset)
            )
            return [_record(row) for row in rows], total

    def update(self, job_id: str, **fields: Any) -> JobRecord | None:
        """Set ``fields`` (and ``updated_at``); the new record, or None for an unknown id."""
        values = _values(fields)
        with self._begin() as conn:
            if conn.execute(update(_jobs).where(_jobs.c.id == job_id).values(values)).rowcount:
                return _fetch(conn, _jobs.c.id == job_id)
            return None

    def transition(
        self, job_id: str, from_states: Collection[str], to_state: str, **fields: Any
    ) -> JobRecord | None:
        """Move a job to ``to_state`` only if it is in one of ``from_states``, in one UPDATE.

        Also sets ``fields``; unless given, fills ``started_at`` and counts an attempt when
        going to running, and fills ``finished_at`` when going to a final state. Returns
        the new record, or None when the job is missing or was in another state.
        """
        _check_states((*from_states, to_state))
        if "state" in fields:
            raise TypeError("transition() takes the new state as to_state, not state=")
        values = _values(fields)
        values["state"] = to_state
        if to_state == RUNNING:
            values.setdefault("started_at", values["updated_at"])
            values.setdefault("attempts", _jobs.c.attempts + 1)
        elif to_state in FINAL_STATES:
            values.setdefault("finished_at", values["updated_at"])
        where = (_jobs.c.id == job_id) & _jobs.c.state.in_(builtins.list(from_states))
        with self._begin() as conn:
            if conn.execute(update(_jobs).where(where).values(values)).rowcount:
                return _fetch(conn, _jobs.c.id == job_id)
            return None

    def queued(self) -> builtins.list[JobRecord]:
        """The queued jobs in run order: higher priority first, then submission order."""
        with self._begin() as conn:
            rows = conn.execute(select(_jobs).where(_jobs.c.state == QUEUED).order_by(*_RUN_ORDER))
            return [_record(row) for row in rows]

    def queue_positions(self) -> dict[str, int]:
        """Each queued job's place in run order, from 1."""
        with self._begin() as conn:
            ids = conn.execute(
                select(_jobs.c.id).where(_jobs.c.state == QUEUED).order_by(*_RUN_ORDER)
            ).scalars()
            return {job_id: position for position, job_id in enumerate(ids, start=1)}

    def counts_by_state(self) -> dict[str, int]:
        """How many jobs are in each state (every state present)."""
        counts = dict.fromkeys(STATES, 0)
        with self._begin() as conn:
            for state, count in conn.execute(
                select(_jobs.c.state, func.count()).group_by(_jobs.c.state)
            ):
                counts[state] = count
        return counts

    def requeue_interrupted(self) -> builtins.list[str]:
        """At start: put the jobs a stopped service left running back in the queue, in
        their old place (same seq and attempts), and return their ids. Those whose cancel
        was requested are cancelled instead."""
        with self._begin() as conn:
            running = conn.execute(
                select(_jobs.c.id, _jobs.c.cancel_requested).where(_jobs.c.state == RUNNING)
            ).all()
        requeued = []
        for job_id, cancel_requested in running:
            if cancel_requested:
                self.transition(job_id, (RUNNING,), CANCELLED)
            elif self.transition(job_id, (RUNNING,), QUEUED) is not None:
                requeued.append(job_id)
        return requeued

    def finished_before(self, t: float) -> builtins.list[JobRecord]:
        """Jobs in a final state that finished before epoch second ``t``, oldest first."""
        where = _jobs.c.state.in_(FINAL_STATES) & (_jobs.c.finished_at < t)
        with self._begin() as conn:
            rows = conn.execute(select(_jobs).where(where).order_by(_jobs.c.finished_at))
            return [_record(row) for row in rows]

    def delete(self, job_id: str) -> bool:
        """Remove a job's record; False when there was none."""
        with self._begin() as conn:
            return bool(conn.execute(delete(_jobs).where(_jobs.c.id == job_id)).rowcount)

    def close(self) -> None:
        """Close the pooled connections."""
        self._engine.dispose()

    @contextlib.contextmanager
    def _begin(self) -> Iterator[Connection]:
        with self._lock, self._engine.begin() as conn:
            yield conn

    def _sqlite_file(self) -> Path | None:
        """The file of a SQLite database; None for any other database or an in-memory one."""
        database = self._url.database
        if self._url.get_backend_name() != "sqlite" or database in (None, "", ":memory:"):
            return None
        if self._url.query.get("uri") or database.startswith("file:"):
            return None
        return Path(database)


def _sqlite_pragmas(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
    """WAL lets readers go on while one job writes progress."""
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def _check_states(states: Collection[str]) -> None:
    unknown = [state for state in states if state not in STATES]
    if unknown:
        raise ValueError(f"unknown job state(s) {unknown}; expected one of {STATES}")


def _values(fields: dict[str, Any]) -> dict[str, Any]:
    """Checked column values for an UPDATE, with ``updated_at`` set."""
    unknown = sorted(fields.keys() - _MUTABLE)
    if unknown:
        raise TypeError(f"cannot set job field(s) {', '.join(unknown)}")
    if "state" in fields:
        _check_states((fields["state"],))
    return {"updated_at": time.time(), **fields}


def _get(conn: Connection, where: ColumnElement[bool]) -> JobRecord | None:
    row = conn.execute(select(_jobs).where(where)).first()
    return None if row is None else _record(row)


def _fetch(conn: Connection, where: ColumnElement[bool]) -> JobRecord:
    record = _get(conn, where)
    if record is None:  # written in this same transaction
        raise RuntimeError("a job vanished inside its own transaction")
    return record


def _record(row: Row[Any]) -> JobRecord:
    values = {name: row._mapping[name] for name in _FIELDS}
    values["params"] = dict(values["params"] or {})
    values["cancel_requested"] = bool(values["cancel_requested"])
    return JobRecord(**values)


def _hide_password(url: str) -> str:
    return re.sub(r"(//[^:/@]*:)[^@/]*@", r"\1***@", url)


def _reason(exc: BaseException) -> str:
    """The first line of what the driver or the system said."""
    if isinstance(exc, DBAPIError) and exc.orig is not None:
        exc = exc.orig
    if isinstance(exc, ImportError):
        return f"its driver is not installed ({exc})"
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.strerror}: {exc.filename}" if exc.filename else exc.strerror
    message = str(exc).strip().splitlines()
    return message[0] if message else type(exc).__name__
