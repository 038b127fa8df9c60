import dataclasses
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy.exc import IntegrityError

from vidshard.errors import ConfigError
from vidshard.service.store import (
    CANCELLED,
    FAILED,
    FINAL_STATES,
    QUEUED,
    RUNNING,
    STATES,
    SUCCEEDED,
    JobRecord,
    JobStore,
)

POSTGRES_ENV = "VIDSHARD_TEST_POSTGRES_URL"  # e.g. postgresql+psycopg://u:p@127.0.0.1/db


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request, tmp_path):
    """The same tests on SQLite, and on PostgreSQL when $VIDSHARD_TEST_POSTGRES_URL names
    a database to use (emptied first)."""
    if request.param == "sqlite":
        store = JobStore(f"sqlite:///{tmp_path / 'db' / 'jobs.db'}")  # db/ does not exist yet
    else:
        url = os.environ.get(POSTGRES_ENV)
        if not url:
            pytest.skip(f"no PostgreSQL: set {POSTGRES_ENV} to run the store tests on one")
        store = JobStore(url)
        store.create_all()
        for record in store.list(limit=100_000)[0]:
            store.delete(record.id)
    store.create_all()
    yield store
    store.close()


def job(**fields) -> JobRecord:
    fields.setdefault("task", "upscale")
    fields.setdefault("input_path", "/videos/in.mp4")
    fields.setdefault("input_kind", "path")
    return JobRecord(**fields)


def test_add_assigns_seq_and_times_and_round_trips(store):
    before = time.time()
    record = job(params={"model": "lanczos", "scale": 2, "nested": [1, {"a": None}]})
    stored, created = store.add(record)
    assert created
    assert stored.seq >= 1
    assert before <= stored.created_at == stored.updated_at <= time.time()
    assert stored == store.get(record.id)
    # Everything but what the store fills in comes back as given.
    assert stored == dataclasses.replace(
        record, seq=stored.seq, created_at=stored.created_at, updated_at=stored.updated_at
    )


def test_add_keeps_given_times(store):
    stored, _ = store.add(job(created_at=1000.5, updated_at=1001.25))
    assert (stored.created_at, stored.updated_at) == (1000.5, 1001.25)


def test_get_unknown_is_none(store):
    assert store.get("0" * 32) is None


def test_seq_follows_submission_order(store):
    seqs = [store.add(job())[0].seq for _ in range(5)]
    assert seqs == sorted(seqs)
    assert len(set(seqs)) == 5


def test_seq_is_not_reused_after_delete(store):
    last, _ = store.add(job())
    store.delete(last.id)
    assert store.add(job())[0].seq > last.seq


def test_list_is_newest_first_and_paged(store):
    ids = [store.add(job())[0].id for _ in range(7)]
    page, total = store.list(limit=3)
    assert total == 7
    assert [r.id for r in page] == ids[::-1][:3]
    page, total = store.list(limit=3, offset=6)
    assert total == 7
    assert [r.id for r in page] == [ids[0]]
    assert store.list(offset=7) == ([], 7)


def test_list_filters_by_state(store):
    a, _ = store.add(job())
    b, _ = store.add(job())
    c, _ = store.add(job())
    store.transition(b.id, [QUEUED], RUNNING)
    store.transition(c.id, [QUEUED], FAILED)
    page, total = store.list(states=[RUNNING, FAILED])
    assert ([r.id for r in page], total) == ([c.id, b.id], 2)
    assert store.list(states=[QUEUED]) == ([store.get(a.id)], 1)
    assert store.list(states=[]) == ([], 0)


def test_list_rejects_an_unknown_state(store):
    with pytest.raises(ValueError, match="bogus"):
        store.list(states=["bogus"])


def test_queue_order_is_priority_then_seq(store):
    low1, _ = store.add(job(priority=0))
    high1, _ = store.add(job(priority=5))
    low2, _ = store.add(job(priority=0))
    high2, _ = store.add(job(priority=5))
    urgent, _ = store.add(job(priority=9))
    running, _ = store.add(job(priority=99))
    store.transition(running.id, [QUEUED], RUNNING)  # not queued any more
    order = [urgent.id, high1.id, high2.id, low1.id, low2.id]
    assert [r.id for r in store.queued()] == order
    assert store.queue_positions() == {job_id: i for i, job_id in enumerate(order, start=1)}


@pytest.mark.parametrize(
    "states, limit, offset",
    [
        (None, 50, 0),  # everything
        (None, 3, 2),  # a page in the middle
        ([QUEUED], 50, 0),  # only the queue
        ([QUEUED, FAILED], 2, 1),  # a filter and a page
        ([RUNNING], 50, 0),  # nothing queued on the page
        (None, 50, 100),  # past the end: no rows, the total still counted
    ],
)
def test_list_with_positions_is_list_and_queue_positions_at_once(store, states, limit, offset):
    records = [store.add(job(priority=p))[0] for p in (0, 5, 0, 9, 5, 1, 0)]
    store.transition(records[1].id, [QUEUED], RUNNING)
    store.transition(records[5].id, [QUEUED], FAILED)
    page, total = store.list_with_positions(states, limit, offset)
    assert ([r for r, _ in page], total) == store.list(states, limit=limit, offset=offset)
    positions = store.queue_positions()
    assert [position for _, position in page] == [positions.get(r.id) for r, _ in page]
    assert all((position is None) == (r.state != QUEUED) for r, position in page)


def test_get_with_position(store):
    first, _ = store.add(job())
    urgent, _ = store.add(job(priority=3))
    assert store.get_with_position(first.id) == (first, 2)
    assert store.get_with_position(urgent.id) == (urgent, 1)
    started = store.transition(urgent.id, [QUEUED], RUNNING)
    assert store.get_with_position(urgent.id) == (started, None)
    assert store.get_with_position(first.id) == (first, 1)
    assert store.get_with_position("0" * 32) is None
    assert store.get_with_position("not an id") is None


def test_positions_never_miss_a_listed_queued_job_while_jobs_start(store):
    """Dispatchers start jobs while readers list and get: a job read as queued has its
    place every time, however the reads and the starts interleave."""
    ids = [store.add(job(priority=i % 3))[0].id for i in range(60)]
    stop = threading.Event()
    seen: list[str] = []

    def dispatch() -> None:
        for record in store.queued():
            if stop.is_set():
                return
            store.transition(record.id, [QUEUED], RUNNING)

    def read(_) -> None:
        while not stop.is_set():
            page, _total = store.list_with_positions(limit=500)
            seen.extend(r.id for r, position in page if r.state == QUEUED and position is None)
            for job_id in ids[::7]:
                found = store.get_with_position(job_id)
                if found is not None and found[0].state == QUEUED and found[1] is None:
                    seen.append(job_id)

    with ThreadPoolExecutor(4) as pool:
        readers = [pool.submit(read, i) for i in range(3)]
        dispatch()
        stop.set()
        for reader in readers:
            reader.result()
    assert seen == []
    assert store.counts_by_state()[QUEUED] == 0


def test_idempotency_key_returns_the_existing_job(store):
    first, created = store.add(job(idempotency_key="k1"))
    again, created_again = store.add(job(idempotency_key="k1", task="other"))
    assert created and not created_again
    assert again == first
    assert store.list()[1] == 1


def test_jobs_without_a_key_never_clash(store):
    assert all(store.add(job())[1] for _ in range(3))


def test_a_duplicate_id_is_not_swallowed(store):
    record, _ = store.add(job(idempotency_key="a"))
    with pytest.raises(IntegrityError):
        store.add(job(id=record.id, idempotency_key="b"))


def test_idempotency_race_creates_exactly_one(store):
    barrier = threading.Barrier(20)

    def submit(_):
        barrier.wait()
        return store.add(job(idempotency_key="race"))

    with ThreadPoolExecutor(20) as pool:
        results = list(pool.map(submit, range(20)))
    assert sum(created for _, created in results) == 1
    assert len({record.id for record, _ in results}) == 1
    assert store.list()[1] == 1


def test_update_sets_fields_and_updated_at(store):
    record, _ = store.add(job(created_at=100.0, updated_at=100.0))
    updated = store.update(record.id, frames_done=10, frames_total=100, output_path="/o.mp4")
    assert updated is not None
    assert (updated.frames_done, updated.frames_total, updated.output_path) == (10, 100, "/o.mp4")
    assert updated.updated_at > 100.0
    assert updated.created_at == 100.0
    assert store.get(record.id) == updated


def test_update_unknown_job_is_none(store):
    assert store.update("f" * 32, frames_done=1) is None


@pytest.mark.parametrize(
    "fields",
    [
        {"seq": 5},  # assigned by the store
        {"id": "a" * 32},  # never changes
        {"colour": "red"},  # not a field
    ],
)
def test_update_refuses_fields_it_cannot_set(store, fields):
    record, _ = store.add(job())
    with pytest.raises(TypeError):
        store.update(record.id, **fields)


def test_update_refuses_an_unknown_state(store):
    record, _ = store.add(job())
    with pytest.raises(ValueError):
        store.update(record.id, state="paused")


def test_concurrent_updates_from_threads(store):
    records = [store.add(job())[0] for _ in range(4)]

    def progress(record):
        for frame in range(1, 26):
            store.update(record.id, frames_done=frame)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(progress, records * 2))  # two writers per job, four jobs
    assert [store.get(r.id).frames_done for r in records] == [25] * 4


def test_transition_is_compare_and_set(store):
    record, _ = store.add(job())
    started = store.transition(record.id, [QUEUED], RUNNING, frames_total=50)
    assert started is not None
    assert started.state == RUNNING
    assert started.attempts == 1
    assert started.started_at is not None
    assert started.frames_total == 50
    # A second runner that saw it queued loses the race.
    assert store.transition(record.id, [QUEUED], RUNNING) is None
    assert store.get(record.id) == started
    done = store.transition(record.id, [RUNNING], SUCCEEDED, output_path="/out.mp4")
    assert done is not None
    assert done.state == SUCCEEDED
    assert done.finished_at is not None
    assert done.finished_at >= started.started_at


def test_transition_race_has_one_winner(store):
    record, _ = store.add(job())
    barrier = threading.Barrier(10)

    def claim(_):
        barrier.wait()
        return store.transition(record.id, [QUEUED], RUNNING)

    with ThreadPoolExecutor(10) as pool:
        results = list(pool.map(claim, range(10)))
    assert sum(r is not None for r in results) == 1
    assert store.get(record.id).attempts == 1


def test_transition_of_unknown_job_is_none(store):
    assert store.transition("e" * 32, [QUEUED], RUNNING) is None


def test_transition_checks_its_arguments(store):
    record, _ = store.add(job())
    with pytest.raises(ValueError):
        store.transition(record.id, [QUEUED], "paused")
    with pytest.raises(TypeError):
        store.transition(record.id, [QUEUED], RUNNING, state=FAILED)


def test_requeue_interrupted(store):
    first, _ = store.add(job())
    cancelled, _ = store.add(job())
    finished, _ = store.add(job())
    later, _ = store.add(job())
    for record in (first, cancelled, finished):
        store.transition(record.id, [QUEUED], RUNNING)
    store.update(cancelled.id, cancel_requested=True)
    store.transition(finished.id, [RUNNING], SUCCEEDED)

    assert store.requeue_interrupted() == [first.id]

    back = store.get(first.id)
    assert (back.state, back.seq, back.attempts) == (QUEUED, first.seq, 1)
    assert [r.id for r in store.queued()] == [first.id, later.id]  # it keeps its place
    gone = store.get(cancelled.id)
    assert gone.state == CANCELLED
    assert gone.finished_at is not None
    assert store.get(finished.id).state == SUCCEEDED
    assert store.requeue_interrupted() == []


def test_finished_before_and_delete(store):
    old, _ = store.add(job())
    new, _ = store.add(job())
    queued, _ = store.add(job())
    store.transition(old.id, [QUEUED], FAILED, finished_at=1000.0)
    store.transition(new.id, [QUEUED], CANCELLED, finished_at=3000.0)
    assert [r.id for r in store.finished_before(2000.0)] == [old.id]
    assert [r.id for r in store.finished_before(5000.0)] == [old.id, new.id]
    assert queued.id not in {r.id for r in store.finished_before(time.time() + 10)}
    assert store.delete(old.id)
    assert not store.delete(old.id)
    assert store.get(old.id) is None


def test_counts_by_state(store):
    assert store.counts_by_state() == dict.fromkeys(STATES, 0)
    a, _ = store.add(job())
    store.add(job())
    store.transition(a.id, [QUEUED], RUNNING)
    assert store.counts_by_state() == {**dict.fromkeys(STATES, 0), QUEUED: 1, RUNNING: 1}


def test_ping(store):
    assert store.ping()


def test_ping_on_a_broken_database_is_false(tmp_path):
    broken = JobStore(f"sqlite:///{tmp_path}")  # a directory, not a database file
    assert broken.ping() is False


def test_data_survives_reopening(tmp_path):
    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    first = JobStore(url)
    first.create_all()
    record, _ = first.add(job(idempotency_key="keep"))
    first.close()
    second = JobStore(url)
    second.create_all()
    assert second.get(record.id) == record
    assert second.add(job(idempotency_key="keep")) == (record, False)
    second.close()


def test_in_memory_database_is_shared_between_threads():
    store = JobStore("sqlite://")
    store.create_all()
    with ThreadPoolExecutor(4) as pool:
        ids = list(pool.map(lambda _: store.add(job())[0].id, range(8)))
    assert store.list()[1] == 8
    assert {r.id for r in store.list()[0]} == set(ids)


def test_sqlite_uses_wal(store, tmp_path, request):
    if request.node.callspec.params["store"] != "sqlite":
        pytest.skip("WAL is SQLite's")
    store.add(job())
    assert (tmp_path / "db" / "jobs.db-wal").exists()


@pytest.mark.parametrize(
    "url",
    [
        "not a url",  # unparseable
        "nosuchdialect://host/db",  # unknown dialect
        "postgresql+nosuchdriver://user:hunter2@127.0.0.1:1/jobs",  # unknown driver
        "postgresql://user:hunter2@127.0.0.1:1/jobs",  # no driver installed, or nothing there
    ],
)
def test_bad_url_is_a_config_error(url):
    with pytest.raises(ConfigError, match="job database") as caught:
        JobStore(url).create_all()
    assert "hunter2" not in str(caught.value)


def test_unreachable_database_is_a_config_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(ConfigError, match="cannot open job database"):
        JobStore(f"sqlite:///{blocker / 'jobs.db'}").create_all()  # parent is a file


@pytest.mark.parametrize(
    "fields",
    [
        {"id": "short"},  # not 32 hex digits
        {"state": "paused"},  # not a state
        {"input_kind": "ftp"},  # not an input kind
    ],
)
def test_record_validates_itself(fields):
    with pytest.raises(ValueError):
        job(**fields)


def test_final_states():
    assert set(FINAL_STATES) == {SUCCEEDED, FAILED, CANCELLED}
    assert job(state=FAILED).is_final
    assert not job().is_final
