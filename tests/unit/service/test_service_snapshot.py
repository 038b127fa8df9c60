"""A job that the service lists as queued always has its queue position: the list and
the positions come from one snapshot of the store, however the dispatcher starts jobs
between the service's reads."""

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from sqlalchemy import event

from vidshard.service.jobs import JobService
from vidshard.service.settings import load_settings
from vidshard.service.store import QUEUED, RUNNING, JobRecord


@pytest.fixture
def service(tmp_path: Path):
    settings = load_settings(data_dir=tmp_path / "data", devices="cpu:1", input_roots=[tmp_path])
    service = JobService(settings)  # not started: no pool, the store alone
    service.store.create_all()
    yield service
    service.store.close()


def queue(service: JobService, count: int) -> list[str]:
    return [
        service.store.add(JobRecord(task="upscale", input_path="/in.mp4", input_kind="path"))[0].id
        for _ in range(count)
    ]


def start_next(service: JobService) -> None:
    """What the dispatcher does: start the first queued job."""
    waiting = service.store.queued()
    if waiting:
        service.store.transition(waiting[0].id, [QUEUED], RUNNING)


class StartBeforeEachRead:
    """Before each statement the reading thread sends, another thread starts the next
    queued job: the worst interleaving of a dispatcher with a reader, every time."""

    def __init__(self, service: JobService) -> None:
        self.service = service
        self.reader: int | None = None
        event.listen(service.store.engine, "before_cursor_execute", self._before)

    def _before(self, _conn, _cursor, statement, *_args) -> None:
        if threading.get_ident() != self.reader or not statement.lstrip().startswith("SELECT"):
            return
        dispatcher = threading.Thread(target=start_next, args=(self.service,))
        dispatcher.start()
        dispatcher.join()


def test_a_listed_queued_job_has_its_position_when_jobs_start_between_reads(service):
    queue(service, 6)
    hook = StartBeforeEachRead(service)
    hook.reader = threading.get_ident()
    while True:
        jobs, _total = service.list_jobs(None, limit=50, offset=0)
        queued = [live for live in jobs if live.record.state == QUEUED]
        assert all(live.queue_position is not None for live in queued), [
            (live.record.id[:8], live.queue_position) for live in queued
        ]
        assert sorted(live.queue_position for live in queued) == list(range(1, len(queued) + 1))
        if not queued:
            break


def test_a_queued_job_read_alone_has_its_position_when_jobs_start_between_reads(service):
    queue(service, 6)
    hook = StartBeforeEachRead(service)
    while len(waiting := service.store.queued()) >= 2:
        target = waiting[1].id  # next in line once the head starts: the worst case
        hook.reader = threading.get_ident()
        live = service.get(target)
        hook.reader = None
        assert (live.record.state == QUEUED) == (live.queue_position is not None), live


def test_listing_while_the_dispatcher_runs_never_shows_a_queued_job_without_position(
    service,
):
    queue(service, 80)
    stop = threading.Event()

    def read(_) -> list[str]:
        missing = []
        while not stop.is_set():
            jobs, _total = service.list_jobs([QUEUED, RUNNING], limit=500, offset=0)
            missing += [
                live.record.id
                for live in jobs
                if live.record.state == QUEUED and live.queue_position is None
            ]
        return missing

    with ThreadPoolExecutor(3) as pool:
        readers = [pool.submit(read, i) for i in range(3)]
        while service.store.counts_by_state()[QUEUED]:
            start_next(service)
        stop.set()
        assert [reader.result() for reader in readers] == [[], [], []]
