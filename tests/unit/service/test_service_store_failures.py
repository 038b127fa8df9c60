"""The job store when its database cannot be used: a full disk, a read-only or locked
database, corrupt pages or rows, and files that are no database at all at start.

Failures are real failures of the real engine, provoked on demand: ``PRAGMA
max_page_count`` makes SQLite answer SQLITE_FULL ("database or disk is full") and can be
raised again, ``PRAGMA query_only`` makes it refuse writes, bytes written over the file's
pages corrupt it. SQLite only: these are SQLite's own switches.
"""

import os
import random
import sqlite3
import time
from pathlib import Path

import pytest
from sqlalchemy import event
from sqlalchemy.exc import DatabaseError, IntegrityError, OperationalError, ProgrammingError

from vidshard.errors import ConfigError
from vidshard.service import store as store_module
from vidshard.service.store import QUEUED, RUNNING, JobRecord, JobStore
from vidshard.service.store_errors import (
    CORRUPT,
    DISK_FULL,
    IO_ERROR,
    LOCKED,
    READ_ONLY,
    UNREACHABLE,
    StoreUnavailable,
    unavailable,
)

ROOM = 2**31 - 2  # a max_page_count that is never reached


def job(**fields) -> JobRecord:
    fields.setdefault("task", "upscale")
    fields.setdefault("input_path", "/videos/in.mp4")
    fields.setdefault("input_kind", "path")
    fields.setdefault("params", {"model": "lanczos", "note": "x" * 200})
    return JobRecord(**fields)


class Pragmas:
    """PRAGMAs set on each connection the store takes from its pool, changed at will."""

    def __init__(self, store: JobStore, **pragmas: object) -> None:
        self.values = dict(pragmas)
        event.listen(store.engine, "checkout", self._apply)

    def _apply(self, dbapi_connection, _record, _proxy) -> None:
        cursor = dbapi_connection.cursor()
        for name, value in self.values.items():
            cursor.execute(f"PRAGMA {name} = {value}")
        cursor.close()


@pytest.fixture
def db_file(tmp_path: Path) -> Path:
    return tmp_path / "data" / "jobs.db"


@pytest.fixture
def store(db_file: Path):
    store = JobStore(f"sqlite:///{db_file}")
    store.create_all()
    yield store
    store.close()


def checkpoint(db_file: Path) -> None:
    """Move everything from the WAL into the file itself, so that what is written over
    the file's pages is what the store reads next."""
    with sqlite3.connect(db_file) as conn:
        deadline = time.monotonic() + 30
        while conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0] != 0:
            assert time.monotonic() < deadline, "the WAL could not be checkpointed"
            time.sleep(0.05)


def corrupt_pages(db_file: Path, seed: int = 7) -> None:
    """Random bytes over every page but the first (the header and the schema)."""
    page_size = 4096
    size = db_file.stat().st_size
    with db_file.open("r+b") as f:
        f.seek(page_size)
        f.write(random.Random(seed).randbytes(size - page_size))


# --- at run time -----------------------------------------------------------------------


def test_a_full_disk_refuses_the_job_and_recovers_when_space_returns(store, db_file):
    pragmas = Pragmas(store, max_page_count=ROOM)
    first, _ = store.add(job())
    pragmas.values["max_page_count"] = 1  # SQLite keeps the pages it has: no new one
    with pytest.raises(StoreUnavailable) as caught:
        for _ in range(1000):  # the pages fill up within a few dozen jobs
            store.add(job())
    error = caught.value
    assert error.reason == DISK_FULL
    assert "disk is full" in str(error) and "database or disk is full" in str(error)
    assert store.last_failure() is not None and store.last_failure()[1] is error
    stored = store.list(limit=1000)[1]
    # An update in place needs no new page: progress of running jobs goes on.
    assert store.update(first.id, frames_done=3).frames_done == 3
    pragmas.values["max_page_count"] = ROOM  # space is back: no restart, no reopen
    again, created = store.add(job())
    assert created and store.get(again.id) == again
    assert store.list(limit=1000)[1] == stored + 1  # the refused job was never half-added
    assert store.last_failure() is None  # a job taken again clears it


def test_a_read_only_database_refuses_writes_and_keeps_answering_reads(store):
    record, _ = store.add(job())
    pragmas = Pragmas(store, query_only=1)
    for write in (
        lambda: store.add(job()),
        lambda: store.update(record.id, frames_done=1),
        lambda: store.transition(record.id, [QUEUED], RUNNING),
        store.probe_write,
    ):
        with pytest.raises(StoreUnavailable) as caught:
            write()
        assert caught.value.reason == READ_ONLY, caught.value
    assert store.get(record.id) == record  # nothing changed; reads still work
    pragmas.values["query_only"] = 0
    store.probe_write()
    assert store.transition(record.id, [QUEUED], RUNNING).attempts == 1


def test_corrupt_pages_while_open_are_corrupt_not_a_crash(store, db_file):
    ids = [store.add(job())[0].id for _ in range(100)]
    checkpoint(db_file)
    corrupt_pages(db_file)
    for call in (
        store.list,
        store.list_with_positions,
        lambda: store.get_with_position(ids[0]),
        lambda: store.add(job()),
        store.counts_by_state,
        store.probe_write,
    ):
        with pytest.raises(StoreUnavailable) as caught:
            call()
        assert caught.value.reason == CORRUPT, caught.value
        assert "corrupt" in str(caught.value)


@pytest.mark.parametrize(
    "column, value",
    [
        ("params", "{not json"),  # bytes that still parse as a row, not as our JSON
        ("state", "paused"),  # a state vidshard never writes
        ("id", "not-an-id"),  # an id vidshard never makes
    ],
)
def test_a_row_vidshard_cannot_read_is_corrupt(store, db_file, column, value):
    record, _ = store.add(job())
    with sqlite3.connect(db_file) as conn:
        conn.execute(f"UPDATE vidshard_jobs SET {column} = ?", (value,))
    with pytest.raises(StoreUnavailable, match="a stored job cannot be read") as caught:
        store.list()
    assert caught.value.reason == CORRUPT
    with pytest.raises(StoreUnavailable, match="a stored job cannot be read"):
        store.list_with_positions()
    if column != "id":
        with pytest.raises(StoreUnavailable, match="a stored job cannot be read"):
            store.get_with_position(record.id)


def test_a_lock_held_too_long_fails_the_probe_quickly(store, db_file, monkeypatch):
    monkeypatch.setattr(store_module, "PROBE_BUSY_TIMEOUT_S", 0.2)
    holder = sqlite3.connect(db_file, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another writer holds the database
    try:
        started = time.monotonic()
        with pytest.raises(StoreUnavailable) as caught:
            store.probe_write()
        assert caught.value.reason == LOCKED
        assert time.monotonic() - started < store_module.SQLITE_BUSY_TIMEOUT_S  # not 30 s
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    store.probe_write()
    # The shorter wait was the probe's alone: the pooled connection waits 30 s again.
    with store.engine.connect() as conn:
        timeout_ms = conn.exec_driver_sql("PRAGMA busy_timeout").scalar_one()
    assert timeout_ms == int(store_module.SQLITE_BUSY_TIMEOUT_S * 1000)


def test_our_own_mistakes_stay_errors(store):
    record, _ = store.add(job(idempotency_key="k"))
    with pytest.raises(IntegrityError):
        store.add(job(id=record.id))  # a duplicate id is a bug, not an unusable store
    assert store.last_failure() is None


class _Driver(Exception):
    def __init__(self, message: str, sqlstate: str | None = None) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate


@pytest.mark.parametrize(
    "error, reason",
    [
        # SQLite's words
        (OperationalError("x", {}, _Driver("database or disk is full")), DISK_FULL),
        (OperationalError("x", {}, _Driver("attempt to write a readonly database")), READ_ONLY),
        (DatabaseError("x", {}, _Driver("database disk image is malformed")), CORRUPT),
        (DatabaseError("x", {}, _Driver("file is not a database")), CORRUPT),
        (OperationalError("x", {}, _Driver("database is locked")), LOCKED),
        (OperationalError("x", {}, _Driver("disk I/O error")), IO_ERROR),
        (OperationalError("x", {}, _Driver("unable to open database file")), UNREACHABLE),
        # PostgreSQL's SQLSTATEs, whatever the message's language
        (OperationalError("x", {}, _Driver("kein Platz", "53100")), DISK_FULL),
        (OperationalError("x", {}, _Driver("lecture seule", "25006")), READ_ONLY),
        (OperationalError("x", {}, _Driver("dañado", "XX001")), CORRUPT),
        (OperationalError("x", {}, _Driver("verrou", "55P03")), LOCKED),
        (OperationalError("x", {}, _Driver("connection refused", "08006")), UNREACHABLE),
    ],
)
def test_driver_errors_are_sorted_by_what_the_database_said(error, reason):
    found = unavailable(error)
    assert found is not None and found.reason == reason
    assert str(error.orig) in str(found)


@pytest.mark.parametrize(
    "error",
    [
        IntegrityError("x", {}, _Driver("UNIQUE constraint failed")),  # a constraint
        ProgrammingError("x", {}, _Driver("syntax error")),  # our SQL
        ValueError("not a driver error"),
    ],
)
def test_errors_that_are_ours_are_not_an_unavailable_store(error):
    assert unavailable(error) is None


# --- at start ----------------------------------------------------------------------------


def _good_database(path: Path) -> bytes:
    store = JobStore(f"sqlite:///{path}")
    store.create_all()
    for _ in range(300):
        store.add(job())
    store.close()
    checkpoint(path)
    return path.read_bytes()


def _garble(good: bytes) -> bytes:
    garbled = bytearray(good)
    garbled[4096 * 2 : 4096 * 4] = random.Random(3).randbytes(8192)
    return bytes(garbled)


BAD_FILES = {
    "random bytes": lambda good: random.Random(1).randbytes(8192),
    "a truncated copy": lambda good: good[: len(good) // 2],
    "only the 100-byte header": lambda good: good[:100],
    "a zero-filled page": lambda good: bytes(4096),
    "garbled pages, header intact": _garble,  # only an integrity check sees this one
}


@pytest.mark.parametrize("case", BAD_FILES)
def test_a_corrupt_file_at_start_is_one_line_naming_it_and_the_fix(tmp_path, case):
    good = _good_database(tmp_path / "good.db")
    bad = tmp_path / "data" / "jobs.db"
    bad.parent.mkdir()
    content = BAD_FILES[case](good)
    bad.write_bytes(content)
    with pytest.raises(ConfigError) as caught:
        JobStore(f"sqlite:///{bad}").create_all()
    message = str(caught.value)
    assert "\n" not in message
    assert str(bad) in message and "corrupt" in message and "move it aside" in message
    assert bad.read_bytes() == content  # never moved, deleted or "repaired" by us


def test_a_directory_in_place_of_the_file_is_named(tmp_path):
    where = tmp_path / "jobs.db"
    where.mkdir()
    with pytest.raises(ConfigError, match="is a directory, not a SQLite file: move it aside"):
        JobStore(f"sqlite:///{where}").create_all()
    assert where.is_dir()


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads and writes any file")
def test_a_file_without_permission_is_named(tmp_path):
    where = tmp_path / "jobs.db"
    _good_database(where)
    where.chmod(0)
    try:
        with pytest.raises(ConfigError, match="no permission to read and write job database"):
            JobStore(f"sqlite:///{where}").create_all()
    finally:
        where.chmod(0o644)


def test_a_failure_before_the_store_opened_is_not_logged(tmp_path, caplog):
    """At start the one line is the caller's to print; no warning beside it."""
    where = tmp_path / "jobs.db"
    where.write_bytes(bytes(4096))
    with pytest.raises(ConfigError):
        JobStore(f"sqlite:///{where}").create_all()
    assert [r for r in caplog.records if r.name == store_module.__name__] == []
