"""What the job store keeps: the job record, its states, and the tables behind them.

Only portable column types are used, so any SQLAlchemy URL works; a database made by an
older vidshard gains the nullable columns added since (:func:`add_missing_columns`).
"""

from __future__ import annotations

import dataclasses
import re
import time
import uuid
from collections.abc import Collection
from dataclasses import dataclass, field
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
    inspect,
    text,
)

from vidshard.errors import ConfigError

QUEUED = "queued"
RUNNING = "running"
SUCCEEDED = "succeeded"
FAILED = "failed"
CANCELLED = "cancelled"
STATES = (QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED)
FINAL_STATES = (SUCCEEDED, FAILED, CANCELLED)

INPUT_KINDS = ("path", "upload", "url")

JOB_ID = re.compile(r"[0-9a-f]{32}")


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
    input_identity: dict[str, int] | None = None
    """The input file's identity when it was checked (see media.source): a path that
    names another file by the time the job runs is refused."""
    owner: str | None = None
    """The name of the API key that submitted the job; None without keys (or before)."""

    def __post_init__(self) -> None:
        if not JOB_ID.fullmatch(self.id):
            raise ValueError(f"job id: expected 32 lowercase hex digits, got {self.id!r}")
        check_states((self.state,))
        if self.input_kind not in INPUT_KINDS:
            raise ValueError(f"input_kind: expected one of {INPUT_KINDS}, got {self.input_kind!r}")

    @property
    def is_final(self) -> bool:
        return self.state in FINAL_STATES


FIELDS = tuple(f.name for f in dataclasses.fields(JobRecord))
# What update() and transition() may set; id, seq and owner never change.
MUTABLE_FIELDS = frozenset(FIELDS) - {"id", "seq", "owner"}

metadata = MetaData()
# Double, not Float: MySQL's FLOAT is single precision, too coarse for epoch seconds.
jobs_table = Table(
    "vidshard_jobs",
    metadata,
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
    Column("input_identity", JSON),
    Column("owner", String(64)),
    # Never reuse the seq of a deleted job: submission order stays monotonic.
    sqlite_autoincrement=True,
)
RUN_ORDER = (jobs_table.c.priority.desc(), jobs_table.c.seq.asc())
# One row whose time /health rewrites: a probe that the store takes writes.
heartbeat_table = Table(
    "vidshard_heartbeat",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("beat_at", Double, nullable=False),
)


def add_missing_columns(conn: Connection) -> None:
    """Columns added to the jobs table since a database was made (all nullable), so that
    a store written by an older vidshard opens with the new one."""
    present = {column["name"] for column in inspect(conn).get_columns(jobs_table.name)}
    for column in jobs_table.columns:
        if column.name in present:
            continue
        if not column.nullable:
            raise ConfigError(
                f"job database table {jobs_table.name} lacks column {column.name!r}, which cannot "
                "be added to existing rows; move the database aside to start a new one"
            )
        kind = column.type.compile(dialect=conn.dialect)
        quoted = conn.dialect.identifier_preparer
        conn.execute(
            text(
                f"ALTER TABLE {quoted.quote(jobs_table.name)} "
                f"ADD COLUMN {quoted.quote(column.name)} {kind}"
            )
        )


def check_states(states: Collection[str]) -> None:
    unknown = [state for state in states if state not in STATES]
    if unknown:
        raise ValueError(f"unknown job state(s) {unknown}; expected one of {STATES}")


def update_values(fields: dict[str, Any]) -> dict[str, Any]:
    """Checked column values for an UPDATE, with ``updated_at`` set."""
    unknown = sorted(fields.keys() - MUTABLE_FIELDS)
    if unknown:
        raise TypeError(f"cannot set job field(s) {', '.join(unknown)}")
    if "state" in fields:
        check_states((fields["state"],))
    return {"updated_at": time.time(), **fields}


def record_from_row(row: Row[Any]) -> JobRecord:
    values = {name: row._mapping[name] for name in FIELDS}
    values["params"] = dict(values["params"] or {})
    values["cancel_requested"] = bool(values["cancel_requested"])
    return JobRecord(**values)
