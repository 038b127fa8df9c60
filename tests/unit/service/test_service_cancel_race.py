"""A cancel that arrives while the dispatcher is starting the job (moved to running in
the store, not yet registered as running in this process) is not lost."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from tests.clips import ClipSpec, write_clip

from vidshard.executors.local import LocalExecutor
from vidshard.service.jobs import JobService
from vidshard.service.schemas import JobRequest
from vidshard.service.settings import load_settings
from vidshard.service.store import RUNNING


def test_a_cancel_during_the_start_of_a_job_cancels_it(tmp_path: Path) -> None:
    clips = tmp_path / "clips"
    clips.mkdir()
    write_clip(clips / "clip.mp4", ClipSpec(frames=4, size_wh=(32, 24)))
    settings = load_settings(data_dir=tmp_path / "data", input_roots=[clips], devices="cpu:1")
    service = JobService(settings, pool=LocalExecutor())  # no workers: the job never runs
    moved, go = threading.Event(), threading.Event()
    transition = service.store.transition

    def paused_transition(job_id: str, from_states: Any, to_state: str, **fields: Any) -> Any:
        record = transition(job_id, from_states, to_state, **fields)
        if to_state == RUNNING and record is not None:
            moved.set()  # running in the store; the dispatcher has not registered it yet
            go.wait(30)
        return record

    service.store.transition = paused_transition  # type: ignore[method-assign]
    service.start()
    try:
        record, _ = service.submit(
            JobRequest(input="clip.mp4", params={"model": "lanczos", "scale": 2})
        )
        assert moved.wait(30), "the dispatcher never started the job"
        answer: list[str] = []
        canceller = threading.Thread(
            target=lambda: answer.append(service.cancel(record.id).record.state)
        )
        canceller.start()
        canceller.join(0.5)  # it waits for the dispatcher to finish starting the job ...
        go.set()
        canceller.join(30)
        assert answer == ["cancelled"]  # ... and then cancels it, not "running"
    finally:
        go.set()
        service.stop()
