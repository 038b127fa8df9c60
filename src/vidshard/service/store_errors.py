"""What the job store says when it cannot be used: :class:`StoreUnavailable` at run time
(HTTP 503, retried), and one line naming the file and the fix when it cannot be opened.

Driver errors are sorted by what the database said (SQLSTATE where there is one, else the
message), so the same kinds come out of SQLite, PostgreSQL and the others. Errors that are
our own mistakes (a constraint, bad SQL) are not sorted here: they stay bugs.
"""

from __future__ import annotations

import os
from pathlib import Path

from sqlalchemy.exc import (
    DatabaseError,
    DataError,
    DBAPIError,
    DisconnectionError,
    IntegrityError,
    NotSupportedError,
    ProgrammingError,
)
from sqlalchemy.exc import TimeoutError as PoolTimeout

from vidshard.errors import ConfigError, VidshardError

RETRY_AFTER_S = 5
"""What a 503 for an unavailable store tells clients to wait before they try again."""

DISK_FULL = "disk full"
READ_ONLY = "read-only"
CORRUPT = "corrupt"
LOCKED = "locked"
IO_ERROR = "I/O error"
UNREACHABLE = "unreachable"

_SUMMARIES = {
    DISK_FULL: "the job store's disk is full",
    READ_ONLY: "the job store is read-only",
    CORRUPT: "the job store is corrupt",
    LOCKED: "the job store stayed locked by another writer",
    IO_ERROR: "the job store's disk failed to read or write",
    UNREACHABLE: "the job store is unreachable",
}
# (SQLSTATE or its class, reason); the first that matches wins.
_SQLSTATES = (
    ("53100", DISK_FULL),
    ("25006", READ_ONLY),
    ("XX001", CORRUPT),
    ("XX002", CORRUPT),
    ("55P03", LOCKED),
    ("40P01", LOCKED),
    ("40001", LOCKED),
    ("58030", IO_ERROR),
)
# (words in the driver's message, reason); the first that matches wins.
_MESSAGES = (
    (("disk is full", "no space left", "disk full", "could not extend", "quota"), DISK_FULL),
    (("readonly", "read-only", "read only"), READ_ONLY),
    (("malformed", "not a database", "corrupt", "could not decode"), CORRUPT),
    (("database is locked", "database table is locked", "lock timeout"), LOCKED),
    (("disk i/o error", "i/o error"), IO_ERROR),
)
# Errors of our own statements, not of the store: a bug or a constraint, never a 503.
_OUR_MISTAKES = (IntegrityError, ProgrammingError, DataError, NotSupportedError)


class StoreUnavailable(VidshardError):
    """The job store cannot be used now: disk full, read-only, corrupt, locked for too
    long, a failing disk, or a database that does not answer. HTTP 503 with
    ``Retry-After``; nothing was written. ``reason`` is one of this module's reasons."""

    def __init__(self, reason: str, said: str) -> None:
        super().__init__(f"{_SUMMARIES[reason]} ({said}); try again later")
        self.reason = reason
        self.said = said


def unavailable(exc: BaseException) -> StoreUnavailable | None:
    """The :class:`StoreUnavailable` that a driver or pool error means, or None when it
    is not about the store being usable (a constraint, a bug in a statement)."""
    if isinstance(exc, PoolTimeout):
        return StoreUnavailable(LOCKED, "no database connection came free in time")
    if isinstance(exc, DisconnectionError):
        return StoreUnavailable(UNREACHABLE, driver_said(exc))
    if not isinstance(exc, DBAPIError) or isinstance(exc, _OUR_MISTAKES):
        return None
    if not isinstance(exc, DatabaseError) and not exc.connection_invalidated:
        return None  # an InterfaceError about our own use of the driver
    said = driver_said(exc)
    return StoreUnavailable(_classify(exc.orig, said), said)


def _classify(orig: BaseException | None, said: str) -> str:
    state = str(getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None) or "")
    for code, reason in _SQLSTATES:
        if state == code:
            return reason
    lowered = said.lower()
    for words, reason in _MESSAGES:
        if any(word in lowered for word in words):
            return reason
    return UNREACHABLE


def driver_said(exc: BaseException) -> str:
    """The first line of what the driver or the system said."""
    if isinstance(exc, DBAPIError) and exc.orig is not None:
        exc = exc.orig
    if isinstance(exc, ImportError):
        return f"its driver is not installed ({exc})"
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.strerror}: {exc.filename}" if exc.filename else exc.strerror
    message = str(exc).strip().splitlines()
    return message[0] if message else type(exc).__name__


def open_failure(database: str, sqlite_file: Path | None, exc: BaseException) -> ConfigError:
    """One line for a store that cannot be opened at start: the file, what is wrong with
    it and what to do. A file is never moved or deleted here: that is the operator's
    call (it may be the only copy of the queue)."""
    said = exc.said if isinstance(exc, StoreUnavailable) else driver_said(exc)
    if sqlite_file is None:
        return ConfigError(f"cannot open job database {database}: {said}")
    problem = _file_problem(sqlite_file)
    if problem is not None:
        return ConfigError(problem)
    reason = exc.reason if isinstance(exc, StoreUnavailable) else _classify(None, said)
    if reason == CORRUPT:
        return ConfigError(
            f"job database {sqlite_file} is corrupt or not a SQLite database ({said}): "
            "move it aside with its -wal and -shm files (vidshard then creates a new, "
            "empty one) or put a backup in its place"
        )
    if reason == DISK_FULL:
        return ConfigError(
            f"cannot open job database {sqlite_file}: its disk is full ({said}); free "
            "some space and start again"
        )
    return ConfigError(f"cannot open job database {sqlite_file}: {said}")


def _file_problem(path: Path) -> str | None:
    """What is wrong with the database file or its folder that the system can tell."""
    if path.is_dir():
        return (
            f"job database {path} is a directory, not a SQLite file: move it aside "
            "(vidshard then creates a new, empty database there) or set database_url"
        )
    if path.exists() and not path.is_file():
        return f"job database {path} is not a regular file: move it aside or set database_url"
    if path.exists() and not os.access(path, os.R_OK | os.W_OK):
        return (
            f"no permission to read and write job database {path}: give the user that "
            "runs vidshard serve read and write access to it"
        )
    folder = path.parent
    if folder.is_dir() and not os.access(folder, os.W_OK | os.X_OK):
        return (
            f"no permission to write in {folder}, where job database {path.name} and its "
            "-wal and -shm files live: give the user that runs vidshard serve write access"
        )
    return None
