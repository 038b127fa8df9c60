"""The streams' tables beside the jobs: rows, the live ones to place again, a final state
that nothing overwrites, expiry, and the recorded windows of jobs."""

from __future__ import annotations

import sqlite3
import uuid
from pathlib import Path

import pytest

from vidshard.service.store import JobRecord, JobStore
from vidshard.service.store_errors import StoreUnavailable
from vidshard.service.stream_store import (
    FAILED,
    LIVE,
    RECONNECTING,
    STOPPED,
    Recording,
    StoredStream,
    StreamStore,
)


@pytest.fixture
def jobs(tmp_path: Path) -> JobStore:
    store = JobStore(f"sqlite:///{tmp_path / 'jobs.db'}")
    store.create_all()
    return store


@pytest.fixture
def store(jobs: JobStore) -> StreamStore:
    streams = StreamStore(jobs)
    streams.create_all()
    return streams


def stream(**fields: object) -> StoredStream:
    values: dict[str, object] = {
        "id": uuid.uuid4().hex,
        "url": "rtsp://user:pw@cam/1",
        "params": {"model": "m.pt", "max_fps": 5.0},
        "output_dir": "/tmp/x",
        "owner": "alice",
    }
    return StoredStream(**{**values, **fields})  # type: ignore[arg-type]


def test_a_stream_round_trips(store: StreamStore) -> None:
    added = store.add(stream())
    got = store.get(added.id)
    assert got == added
    assert got is not None and got.url == "rtsp://user:pw@cam/1"  # stored as opened
    assert got.params == {"model": "m.pt", "max_fps": 5.0}
    assert got.created_at > 0 and got.state_since > 0 and got.state == "connecting"


@pytest.mark.parametrize(
    "stream_id",
    [
        "nope",  # not an id at all
        "a" * 32 + "\0",  # a NUL byte (PostgreSQL refuses them)
        uuid.uuid4().hex,  # well formed, but unknown
    ],
)
def test_an_unknown_id_is_none(store: StreamStore, stream_id: str) -> None:
    assert store.get(stream_id) is None


def test_live_lists_only_the_streams_to_place_again(store: StreamStore) -> None:
    live = store.add(stream())
    reconnecting = store.add(stream())
    store.update(reconnecting.id, state=RECONNECTING)
    stopped = store.add(stream())
    store.end(stopped.id, STOPPED, "stopped by request")
    failed = store.add(stream())
    store.end(failed.id, FAILED, "bad URL")
    assert [s.id for s in store.live()] == [live.id, reconnecting.id]


def test_a_final_state_is_written_once_and_never_overwritten(store: StreamStore) -> None:
    added = store.add(stream())
    ended = store.end(added.id, STOPPED, "stopped by request", frames_processed=7)
    assert ended is not None and ended.state == STOPPED and ended.ended_at is not None
    assert ended.frames_processed == 7
    # a failure that crosses the stop keeps the stop
    assert store.end(added.id, FAILED, "late failure") is None
    # a live state written late (its write was waiting) does not bring it back
    assert store.update(added.id, only_live=True, state=LIVE, frames_processed=9) is None
    got = store.get(added.id)
    assert got is not None and got.state == STOPPED and got.frames_processed == 7
    # counts alone are still taken
    assert store.update(added.id, frames_processed=8) is not None


@pytest.mark.parametrize(
    "fields, error",
    [
        ({"owner": "bob"}, TypeError),  # never changes
        ({"url": "rtsp://other"}, TypeError),  # never changes
        ({"state": "running"}, ValueError),  # a job's state, not a stream's
    ],
)
def test_update_refuses_what_it_must_not_set(
    store: StreamStore, fields: dict[str, object], error: type[Exception]
) -> None:
    added = store.add(stream())
    with pytest.raises(error):
        store.update(added.id, **fields)


def test_list_by_owner_oldest_first(store: StreamStore) -> None:
    first = store.add(stream(owner="alice"))
    store.add(stream(owner="bob"))
    third = store.add(stream(owner="alice"))
    assert [s.id for s in store.list("alice")] == [first.id, third.id]
    assert len(store.list()) == 3


def test_ended_before_and_delete(store: StreamStore) -> None:
    old = store.add(stream())
    store.end(old.id, STOPPED, "stopped")
    ended = store.get(old.id)
    assert ended is not None and ended.ended_at is not None
    running = store.add(stream())
    assert [s.id for s in store.ended_before(ended.ended_at + 1)] == [old.id]
    assert store.ended_before(ended.ended_at - 1) == []
    assert store.delete(old.id) and not store.delete(old.id)
    assert store.get(running.id) is not None


def test_recordings_are_kept_per_job_and_forgotten_with_it(
    store: StreamStore, jobs: JobStore
) -> None:
    job, _ = jobs.add(JobRecord(task="upscale", input_path="rtsp://cam", input_kind="url"))
    store.add_recording(Recording(job.id, "rtsp://u:p@cam/1", 10.0, "udp"))
    orphan = uuid.uuid4().hex  # its job was never stored (or has expired)
    store.add_recording(Recording(orphan, "rtsp://cam/2", 5.0))
    assert store.recording(job.id) == Recording(job.id, "rtsp://u:p@cam/1", 10.0, "udp")
    assert store.forget_orphan_recordings() == 1
    assert store.recording(orphan) is None
    assert store.recording(job.id) is not None
    jobs.delete(job.id)
    store.forget_orphan_recordings()
    assert store.recording(job.id) is None


def test_the_jobs_store_creates_the_stream_tables_too(tmp_path: Path) -> None:
    """A server that starts a job dispatcher before the streams open still finds them."""
    jobs = JobStore(f"sqlite:///{tmp_path / 'jobs.db'}")
    jobs.create_all()
    assert StreamStore(jobs).recording(uuid.uuid4().hex) is None


def test_a_row_that_cannot_be_read_is_corruption(store: StreamStore, tmp_path: Path) -> None:
    added = store.add(stream())
    with sqlite3.connect(tmp_path / "jobs.db") as conn:
        conn.execute("UPDATE vidshard_streams SET state = 'exploded' WHERE id = ?", (added.id,))
    with pytest.raises(StoreUnavailable, match="corrupt"):
        store.get(added.id)
