"""StoreWatch: a final state the store refuses is kept and written once it takes writes
again (with the time the job really finished); /health's probe is a real write, cached
for a moment, and reports what the store's own calls met."""

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from sqlalchemy import event

from vidshard.service import store_watch
from vidshard.service.store import FAILED, QUEUED, RUNNING, SUCCEEDED, JobRecord, JobStore
from vidshard.service.store_errors import DISK_FULL, READ_ONLY, StoreUnavailable
from vidshard.service.store_watch import StoreWatch


@pytest.fixture
def store(tmp_path: Path):
    store = JobStore(f"sqlite:///{tmp_path / 'jobs.db'}")
    store.create_all()
    yield store
    store.close()


class ReadOnly:
    """``PRAGMA query_only`` on each connection the store takes while ``on`` is set:
    the real engine refusing every write."""

    def __init__(self, store: JobStore) -> None:
        self.on = False
        event.listen(store.engine, "checkout", self._apply)

    def _apply(self, dbapi_connection, _record, _proxy) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA query_only = {int(self.on)}")
        cursor.close()


def running_job(store: JobStore) -> JobRecord:
    record, _ = store.add(JobRecord(task="upscale", input_path="/in.mp4", input_kind="path"))
    started = store.transition(record.id, [QUEUED], RUNNING)
    assert started is not None
    return started


def test_a_refused_final_state_is_written_once_the_store_is_back(store):
    watch = StoreWatch(store)
    record = running_job(store)
    read_only = ReadOnly(store)
    read_only.on = True
    finished_s = time.time()
    watch.finish(record.id, SUCCEEDED, frames_done=24, frames_total=24)  # does not raise
    assert watch.waiting() == {record.id: SUCCEEDED}
    assert store.get(record.id).state == RUNNING
    watch.flush()  # still refused: still waiting
    assert watch.waiting() == {record.id: SUCCEEDED}
    time.sleep(0.05)
    read_only.on = False
    watch.flush()
    assert watch.waiting() == {}
    done = store.get(record.id)
    assert (done.state, done.frames_done, done.attempts) == (SUCCEEDED, 24, 1)
    assert finished_s <= done.finished_at < done.updated_at  # when it finished, not when written
    watch.flush()  # nothing left: nothing written twice
    assert store.get(record.id) == done


def test_final_states_wait_in_order_and_a_written_one_is_not_rewritten(store):
    watch = StoreWatch(store)
    first, second = running_job(store), running_job(store)
    read_only = ReadOnly(store)
    read_only.on = True
    watch.finish(first.id, FAILED, error="boom", error_type="MediaError")
    watch.finish(second.id, SUCCEEDED)
    read_only.on = False
    watch.flush()
    assert store.get(first.id).state == FAILED and store.get(first.id).error == "boom"
    assert store.get(second.id).state == SUCCEEDED
    assert watch.waiting() == {}


def test_the_probe_is_a_real_write_and_names_the_reason(store):
    watch = StoreWatch(store)
    assert watch.problem() is None
    read_only = ReadOnly(store)
    read_only.on = True
    time.sleep(store_watch.PROBE_TTL_S)
    problem = watch.problem()
    assert problem is not None and problem.reason == READ_ONLY
    read_only.on = False
    time.sleep(store_watch.PROBE_TTL_S)
    assert watch.problem() is None  # the probe's own failure ends with a probe that works


def test_the_probe_is_cached_under_load(store, monkeypatch):
    watch = StoreWatch(store)
    probes = []
    real = store.probe_write
    monkeypatch.setattr(store, "probe_write", lambda: probes.append(1) or real())
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda _: watch.problem(), range(200)))
    assert len(probes) <= 2  # one, or two when the run straddles the cache's end


def test_a_failure_of_the_stores_own_calls_is_reported_until_a_job_is_taken(store):
    """A full disk may take the probe's one-row update and still refuse every new job:
    /health must not say ok while submits fail."""
    watch = StoreWatch(store)
    failure = StoreUnavailable(DISK_FULL, "database or disk is full")
    store._remember(failure)  # what _begin does when a call fails
    assert watch.problem() is failure
    store.add(JobRecord(task="upscale", input_path="/in.mp4", input_kind="path"))
    assert watch.problem() is None


def test_an_old_failure_is_no_longer_reported(store, monkeypatch):
    watch = StoreWatch(store)
    store._remember(StoreUnavailable(DISK_FULL, "database or disk is full"))
    monkeypatch.setattr(store_watch, "FAILURE_WINDOW_S", 0.0)
    assert watch.problem() is None


def test_concurrent_finishes_and_flushes_write_each_state_once(store):
    watch = StoreWatch(store)
    records = [running_job(store) for _ in range(10)]
    read_only = ReadOnly(store)
    read_only.on = True
    for record in records:
        watch.finish(record.id, SUCCEEDED)
    read_only.on = False
    threads = [threading.Thread(target=watch.flush) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert watch.waiting() == {}
    assert {store.get(r.id).state for r in records} == {SUCCEEDED}
