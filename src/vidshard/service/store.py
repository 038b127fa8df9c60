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
import logging
import re
import threading
import time
from collections.abc import Collection, Iterable, Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Connection,
    Row,
    Select,
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
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.exc import ArgumentError, IntegrityError, SQLAlchemyError
from sqlalchemy.pool import ConnectionPoolEntry, StaticPool
from sqlalchemy.sql.elements import ColumnElement

from vidshard.errors import ConfigError

from .store_errors import CORRUPT, StoreUnavailable, driver_said, open_failure, unavailable
from .store_schema import (
    CANCELLED,
    FAILED,
    FIELDS,
    FINAL_STATES,
    JOB_ID,
    QUEUED,
    RUN_ORDER,
    RUNNING,
    STATES,
    SUCCEEDED,
    JobRecord,
    add_missing_columns,
    check_states,
    heartbeat_table,
    jobs_table,
    metadata,
    new_job_id,
    record_from_row,
    update_values,
)

__all__ = [
    "CANCELLED",
    "FAILED",
    "FINAL_STATES",
    "QUEUED",
    "RUNNING",
    "STATES",
    "SUCCEEDED",
    "JobRecord",
    "JobStore",
    "new_job_id",
]

logger = logging.getLogger(__name__)

SQLITE_BUSY_TIMEOUT_S = 30.0
PROBE_BUSY_TIMEOUT_S = 5.0  # the health probe waits less for a lock than a job's write


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
        sqlite = self._sqlite = self._url.get_backend_name() == "sqlite"
        self._failure: tuple[float, StoreUnavailable] | None = None
        self._opened = False  # until create_all() has worked, a failure is its to tell
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
            raise ConfigError(f"cannot use job database {self._name}: {driver_said(exc)}") from None
        if sqlite:
            event.listen(self._engine, "connect", _sqlite_pragmas)

    def create_all(self) -> None:
        """Create the tables (and a SQLite file's directory) when missing, after checking
        that a SQLite file is a sound database (``PRAGMA quick_check``)."""
        sqlite_file = self._sqlite_file()
        try:
            if sqlite_file is not None:
                sqlite_file.parent.mkdir(parents=True, exist_ok=True)
                self._quick_check()
            with self._begin() as conn:
                metadata.create_all(conn)
                add_missing_columns(conn)
        except (SQLAlchemyError, OSError, StoreUnavailable) as exc:
            raise open_failure(self._name, sqlite_file, exc) from None
        self._opened = True

    def _quick_check(self) -> None:
        with self._begin() as conn:
            found = conn.exec_driver_sql("PRAGMA quick_check").scalars().all()
        if found != ["ok"]:
            lines = [line for row in found for line in str(row).splitlines()]
            problems = [line for line in lines if not line.startswith("***")] or ["?"]
            more = f" and {len(problems) - 1} more" if len(problems) > 1 else ""
            raise StoreUnavailable(CORRUPT, f"quick_check found {problems[0]}{more}")

    def ping(self) -> bool:
        """Whether the database answers a trivial query; never raises."""
        try:
            with self._begin() as conn:
                conn.execute(text("SELECT 1"))
        except (SQLAlchemyError, StoreUnavailable):
            return False
        return True

    def probe_write(self) -> None:
        """A real write in its own transaction (the heartbeat row's time), so that a
        store that answers reads but takes no writes is seen; raises
        :class:`StoreUnavailable` when it fails. A SQLite probe waits at most
        ``PROBE_BUSY_TIMEOUT_S`` for another writer."""
        now = time.time()
        beat = update(heartbeat_table).where(heartbeat_table.c.id == 1).values(beat_at=now)
        # IntegrityError: another server inserted the row just now, which is a write too.
        with (
            contextlib.suppress(IntegrityError),
            self._begin(busy_timeout_s=PROBE_BUSY_TIMEOUT_S) as conn,
        ):
            if not conn.execute(beat).rowcount:
                conn.execute(insert(heartbeat_table).values(id=1, beat_at=now))

    def last_failure(self) -> tuple[float, StoreUnavailable] | None:
        """When (``time.monotonic()``) and how the store last failed, since the last job
        it took; None when it has not."""
        return self._failure

    def add(self, record: JobRecord) -> tuple[JobRecord, bool]:
        """Insert ``record`` and return it as stored with True; when its idempotency key is
        already taken, the job that holds it with False (safe against racing adds)."""
        now = time.time()
        values = {name: getattr(record, name) for name in FIELDS if name != "seq"}
        values["created_at"] = record.created_at or now
        values["updated_at"] = record.updated_at or now
        try:
            with self._begin() as conn:
                conn.execute(insert(jobs_table).values(values))
                stored = _fetch(conn, jobs_table.c.id == record.id)
            self._recovered()
            return stored, True
        except IntegrityError:
            if record.idempotency_key is None:
                raise
            with self._begin() as conn:
                existing = _get(conn, jobs_table.c.idempotency_key == record.idempotency_key)
            if existing is None:  # the clash was on something else (the id)
                raise
            return existing, False

    def get(self, job_id: str) -> JobRecord | None:
        if not JOB_ID.fullmatch(job_id):  # no such job; and PostgreSQL refuses a NUL
            return None
        with self._begin() as conn:
            return _get(conn, jobs_table.c.id == job_id)

    def find_by_idempotency_key(self, key: str) -> JobRecord | None:
        with self._begin() as conn:
            return _get(conn, jobs_table.c.idempotency_key == key)

    def list(
        self,
        states: Collection[str] | None = None,
        limit: int = 50,
        offset: int = 0,
        owner: str | None = None,
    ) -> tuple[builtins.list[JobRecord], int]:
        """A page of jobs, newest first, and how many jobs match ``states`` in all; with
        ``owner``, only that owner's jobs (and count)."""
        page, total = self.list_with_positions(states, limit, offset, owner)
        return [record for record, _position in page], total

    def list_with_positions(
        self,
        states: Collection[str] | None = None,
        limit: int = 50,
        offset: int = 0,
        owner: str | None = None,
    ) -> tuple[builtins.list[tuple[JobRecord, int | None]], int]:
        """:meth:`list`, each job with its :meth:`queue_positions` place (None unless
        queued), read in one statement: a job listed as queued always has its place."""
        where: ColumnElement[bool] = true()
        if states is not None:
            check_states(states)
            where = jobs_table.c.state.in_(builtins.list(states))
        if owner is not None:
            where = where & (jobs_table.c.owner == owner)
        query = _with_positions(where, func.count().over().label("total"))
        with self._begin() as conn:
            page = query.order_by(jobs_table.c.seq.desc()).limit(limit).offset(offset)
            rows = _read(conn.execute(page))
            if not rows:  # nothing on this page to count along with
                count = select(func.count()).select_from(jobs_table).where(where)
                return [], conn.execute(count).scalar_one()
            return _placed(rows), rows[0].total

    def get_with_position(self, job_id: str) -> tuple[JobRecord, int | None] | None:
        """A job and its place in the queue (None unless queued), read in one statement;
        None for an unknown id."""
        if not JOB_ID.fullmatch(job_id):
            return None
        with self._begin() as conn:
            placed = _placed(_read(conn.execute(_with_positions(jobs_table.c.id == job_id))))
        return placed[0] if placed else None

    def update(self, job_id: str, **fields: Any) -> JobRecord | None:
        """Set ``fields`` (and ``updated_at``); the new record, or None for an unknown id."""
        values = update_values(fields)
        with self._begin() as conn:
            if conn.execute(
                update(jobs_table).where(jobs_table.c.id == job_id).values(values)
            ).rowcount:
                return _fetch(conn, jobs_table.c.id == job_id)
            return None

    def transition(
        self, job_id: str, from_states: Collection[str], to_state: str, **fields: Any
    ) -> JobRecord | None:
        """Move a job to ``to_state`` only if it is in one of ``from_states``, in one UPDATE.

        Also sets ``fields``; unless given, fills ``started_at`` and counts an attempt when
        going to running, and fills ``finished_at`` when going to a final state. Returns
        the new record, or None when the job is missing or was in another state.
        """
        check_states((*from_states, to_state))
        if "state" in fields:
            raise TypeError("transition() takes the new state as to_state, not state=")
        values = update_values(fields)
        values["state"] = to_state
        if to_state == RUNNING:
            values.setdefault("started_at", values["updated_at"])
            values.setdefault("attempts", jobs_table.c.attempts + 1)
        elif to_state in FINAL_STATES:
            values.setdefault("finished_at", values["updated_at"])
        where = (jobs_table.c.id == job_id) & jobs_table.c.state.in_(builtins.list(from_states))
        with self._begin() as conn:
            if conn.execute(update(jobs_table).where(where).values(values)).rowcount:
                return _fetch(conn, jobs_table.c.id == job_id)
            return None

    def queued(self) -> builtins.list[JobRecord]:
        """The queued jobs in run order: higher priority first, then submission order."""
        with self._begin() as conn:
            rows = conn.execute(
                select(jobs_table).where(jobs_table.c.state == QUEUED).order_by(*RUN_ORDER)
            )
            return _records(rows)

    def queue_positions(self) -> dict[str, int]:
        """Each queued job's place in run order, from 1."""
        with self._begin() as conn:
            ids = conn.execute(
                select(jobs_table.c.id).where(jobs_table.c.state == QUEUED).order_by(*RUN_ORDER)
            ).scalars()
            return {job_id: position for position, job_id in enumerate(ids, start=1)}

    def counts_by_state(self) -> dict[str, int]:
        """How many jobs are in each state (every state present)."""
        counts = dict.fromkeys(STATES, 0)
        with self._begin() as conn:
            for state, count in conn.execute(
                select(jobs_table.c.state, func.count()).group_by(jobs_table.c.state)
            ):
                counts[state] = count
        return counts

    def requeue_interrupted(self) -> builtins.list[str]:
        """At start: put the jobs a stopped service left running back in the queue, in
        their old place (same seq and attempts), and return their ids. Those whose cancel
        was requested are cancelled instead."""
        with self._begin() as conn:
            running = conn.execute(
                select(jobs_table.c.id, jobs_table.c.cancel_requested).where(
                    jobs_table.c.state == RUNNING
                )
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
        where = jobs_table.c.state.in_(FINAL_STATES) & (jobs_table.c.finished_at < t)
        with self._begin() as conn:
            rows = conn.execute(select(jobs_table).where(where).order_by(jobs_table.c.finished_at))
            return _records(rows)

    def delete(self, job_id: str) -> bool:
        """Remove a job's record; False when there was none."""
        with self._begin() as conn:
            return bool(conn.execute(delete(jobs_table).where(jobs_table.c.id == job_id)).rowcount)

    def close(self) -> None:
        """Close the pooled connections."""
        self._engine.dispose()

    @property
    def engine(self) -> Engine:
        """The SQLAlchemy engine (for tools and tests that watch or provoke the database)."""
        return self._engine

    def transaction(self) -> contextlib.AbstractContextManager[Connection]:
        """One transaction, its failures sorted as every call of this store's are (for
        the tables kept beside the jobs: :mod:`.stream_store`)."""
        return self._begin()

    @contextlib.contextmanager
    def _begin(self, busy_timeout_s: float | None = None) -> Iterator[Connection]:
        """One transaction. A store that cannot be used now raises :class:`StoreUnavailable`
        (and is remembered for /health); any other error stays what it is."""
        try:
            with self._lock, self._engine.begin() as conn:
                if busy_timeout_s is None or not self._sqlite:
                    yield conn
                    return
                conn.exec_driver_sql(f"PRAGMA busy_timeout = {int(busy_timeout_s * 1000)}")
                try:
                    yield conn
                finally:
                    with contextlib.suppress(SQLAlchemyError):
                        conn.exec_driver_sql(
                            f"PRAGMA busy_timeout = {int(SQLITE_BUSY_TIMEOUT_S * 1000)}"
                        )
        except StoreUnavailable as exc:
            self._remember(exc)
            raise
        except SQLAlchemyError as exc:
            error = unavailable(exc)
            if error is None:
                raise
            self._remember(error)
            raise error from exc

    def _recovered(self) -> None:
        """The store took a job: whatever failed before is over."""
        if self._failure is not None:
            logger.info("job database %s takes jobs again", self._name)
            self._failure = None

    def _remember(self, error: StoreUnavailable) -> None:
        if not self._opened:
            return
        if self._failure is None or self._failure[1].reason != error.reason:
            logger.warning("job database %s: %s", self._name, error)
        self._failure = (time.monotonic(), error)

    def _sqlite_file(self) -> Path | None:
        """The file of a SQLite database; None for any other database or an in-memory one."""
        database = self._url.database
        if self._url.get_backend_name() != "sqlite" or database in (None, "", ":memory:"):
            return None
        if self._url.query.get("uri") or database.startswith("file:"):
            return None
        return Path(database)


def _sqlite_pragmas(dbapi_connection: Any, record_from_row: ConnectionPoolEntry) -> None:
    """WAL lets readers go on while one job writes progress."""
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def _get(conn: Connection, where: ColumnElement[bool]) -> JobRecord | None:
    records = _records(conn.execute(select(jobs_table).where(where).limit(1)))
    return records[0] if records else None


def _fetch(conn: Connection, where: ColumnElement[bool]) -> JobRecord:
    record = _get(conn, where)
    if record is None:  # written in this same transaction
        raise RuntimeError("a job vanished inside its own transaction")
    return record


def _with_positions(where: ColumnElement[bool], *columns: Any) -> Select[Any]:
    """The jobs that match ``where``, each with its place in run order when queued: one
    statement, so one snapshot on every database (a window function over the queue)."""
    place = func.row_number().over(order_by=RUN_ORDER).label("queue_position")
    queue = select(jobs_table.c.id, place).where(jobs_table.c.state == QUEUED).subquery("queue")
    return (
        select(jobs_table, queue.c.queue_position, *columns)
        .select_from(jobs_table.outerjoin(queue, queue.c.id == jobs_table.c.id))
        .where(where)
    )


def _placed(rows: builtins.list[Row[Any]]) -> builtins.list[tuple[JobRecord, int | None]]:
    records = _records(rows)
    return [
        (record, row.queue_position if record.state == QUEUED else None)
        for record, row in zip(records, rows, strict=True)
    ]


@contextlib.contextmanager
def _readable() -> Iterator[None]:
    """A row that cannot be read (bytes changed where the database does not look: a
    JSON, a state, a type that is not ours) is the store's corruption, not a bug."""
    try:
        yield
    except (ValueError, TypeError, KeyError) as exc:
        raise StoreUnavailable(CORRUPT, f"a stored job cannot be read: {exc}") from exc


def _read(rows: Iterable[Row[Any]]) -> builtins.list[Row[Any]]:
    """Fetch the rows (values such as JSON are decoded as they are fetched)."""
    with _readable():
        return builtins.list(rows)


def _records(rows: Iterable[Row[Any]]) -> builtins.list[JobRecord]:
    with _readable():
        return [record_from_row(row) for row in rows]


def _hide_password(url: str) -> str:
    return re.sub(r"(//[^:/@]*:)[^@/]*@", r"\1***@", url)
