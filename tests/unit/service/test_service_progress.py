"""A service job's progress never goes down: not when it is cancelled or fails between
two writes of its progress, and not when it resumes after a restart with fewer frames
counted than it had shown."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.clips import ClipSpec, write_clip

from vidshard.engine.progress import ProgressSnapshot
from vidshard.errors import Cancelled, ModelError
from vidshard.executors.local import LocalExecutor
from vidshard.service.jobs import JobService, _Running
from vidshard.service.schemas import JobRequest
from vidshard.service.settings import load_settings
from vidshard.service.store import QUEUED, RUNNING


def snapshot(done: int, total: int = 100) -> ProgressSnapshot:
    return ProgressSnapshot(done, total, elapsed_s=1.0, fps=10.0, eta_s=1.0, slots=())


@pytest.fixture
def service(tmp_path: Path):
    clips = tmp_path / "clips"
    clips.mkdir()
    write_clip(clips / "clip.mp4", ClipSpec(frames=4, size_wh=(32, 24)))
    (tmp_path / "data").mkdir()
    settings = load_settings(data_dir=tmp_path / "data", input_roots=[clips], devices="cpu:1")
    service = JobService(settings, pool=LocalExecutor())  # not started: nothing runs
    service.store.create_all()
    yield service
    service.store.close()


def running_job(service: JobService) -> _Running:
    record, _ = service.submit(JobRequest(input="clip.mp4", params={"model": "lanczos"}))
    moved = service.store.transition(record.id, [QUEUED], RUNNING)
    assert moved is not None
    return _Running(moved)


@pytest.mark.parametrize(
    ("error", "state"),
    [
        # cancelled by its user
        (Cancelled("job cancelled"), "cancelled"),
        # failed (a model that does not load)
        (ModelError("cannot load"), "failed"),
    ],
)
def test_a_job_that_ends_unfinished_keeps_its_last_progress(
    service: JobService, tmp_path: Path, error: Exception, state: str
) -> None:
    job = running_job(service)
    service._progress(job, snapshot(40))  # written to the store
    service._progress(job, snapshot(70))  # within a second: shown live, not yet written
    with service._lock:
        service._running[job.record.id] = job
    assert service.get(job.record.id).frames_done == 70
    with service._lock:
        del service._running[job.record.id]
    service._finish_failed(job, tmp_path / "out" / "x.mp4", error)
    ended = service.get(job.record.id)
    assert ended.record.state == state
    assert (ended.frames_done, ended.frames_total, ended.progress) == (70, 100, 0.7)


def test_a_resumed_job_does_not_show_fewer_frames_than_before(service: JobService) -> None:
    job = running_job(service)
    service.store.update(job.record.id, frames_done=50, frames_total=100)
    resumed = _Running(service.store.get(job.record.id))  # the next server's run
    with service._lock:
        service._running[job.record.id] = resumed
    service._progress(resumed, snapshot(20))  # only the finished segments so far
    assert service.get(job.record.id).frames_done == 50
    service._progress(resumed, snapshot(80))
    assert service.get(job.record.id).frames_done == 80
