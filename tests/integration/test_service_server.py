"""A real ``vidshard serve`` (uvicorn, its own process group) on 127.0.0.1.

Kill it mid-job and start it again: the job completes, from its manifest, with output
identical to an uninterrupted run. Stop it cleanly: it exits 0 and the job resumes at
the next start. Kill its workers until the device is quarantined: /health says so.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from tests.clips import ClipSpec, write_clip
from tests.helpers import frame_hashes, slow_model_source
from tests.service_helpers import Server, running_server, start_server

import vidshard

SLOW_MODEL = slow_model_source("Slow", 0.04)
PARAMS = {"model": "slow.py:Slow", "crf": 0, "preset": "ultrafast", "segment_seconds": 0.4}


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("server")
    clips, models = root / "clips", root / "models"
    clips.mkdir()
    models.mkdir()
    (models / "slow.py").write_text(SLOW_MODEL)
    source = write_clip(clips / "clip.mp4", ClipSpec(frames=120, size_wh=(48, 32), gop=10))
    options = {k: v for k, v in PARAMS.items() if k != "model"}
    reference = vidshard.upscale(
        source,
        root / "reference.mp4",
        model=str(models / "slow.py:Slow"),
        devices="cpu:2",
        **options,
    )
    args = ["--devices", "cpu:2", "--input-root", str(clips), "--model-dir", str(models)]
    return {"root": root, "args": args, "reference": frame_hashes(reference.output)}


def submit(server: Server) -> str:
    response = httpx.post(
        f"{server.url}/v1/jobs", json={"input": "clip.mp4", "params": PARAMS}, timeout=30
    )
    assert response.status_code == 202, response.text
    job_id: str = response.json()["id"]
    return job_id


def job(server: Server, job_id: str) -> dict[str, Any]:
    found: dict[str, Any] = httpx.get(f"{server.url}/v1/jobs/{job_id}", timeout=30).json()
    return found


def wait_until(server: Server, job_id: str, done: Any, timeout_s: float = 90) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        current = job(server, job_id)
        if done(current):
            return current
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} did not get there: {current}")


def finished(current: dict[str, Any]) -> bool:
    return current["state"] in ("succeeded", "failed", "cancelled")


def work_files(data_dir: Path, job_id: str) -> list[Path]:
    return sorted((data_dir / "outputs" / job_id).glob(".*.vidshard/core-*.mp4"))


def test_a_killed_server_finishes_the_job_after_a_restart(
    setup: dict[str, Any], tmp_path: Path
) -> None:
    """One job runs, one waits; kill everything; the next server resumes the first from
    its finished segments and then runs the second, which kept its place."""
    data_dir = tmp_path / "data"
    args = [*setup["args"], "--max-running-jobs", "1"]
    server = start_server(data_dir, *args)
    try:
        job_id = submit(server)
        waiting = submit(server)
        wait_until(server, job_id, lambda j: j["frames_done"] >= 40)
        deadline = time.monotonic() + 30
        while len(work_files(data_dir, job_id)) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(work_files(data_dir, job_id)) >= 2
        assert job(server, waiting)["queue_position"] == 1
    finally:
        server.kill()  # SIGKILL to the whole group: server and workers, mid-job
    with running_server(data_dir, *args) as again:
        assert job(again, waiting)["state"] == "queued"
        done = wait_until(again, job_id, finished)
        assert done["state"] == "succeeded", done
        assert done["attempts"] == 2
        output = Path(done["result"]["path"])
        assert frame_hashes(output) == setup["reference"]
        download = httpx.get(f"{again.url}{done['result']['url']}", timeout=30)
        assert download.status_code == 200 and download.content == output.read_bytes()
        second = wait_until(again, waiting, finished)
        assert second["state"] == "succeeded" and second["attempts"] == 1
        assert second["started_at"] >= done["finished_at"]
    log = again.log.read_text()
    assert "requeued 1 job(s)" in log
    assert "resuming:" in log  # the manifest's finished units were reused


def test_a_clean_stop_exits_zero_and_the_job_resumes(setup: dict[str, Any], tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    server = start_server(data_dir, *setup["args"])
    job_id = submit(server)
    wait_until(server, job_id, lambda j: j["frames_done"] >= 20)
    children = psutil.Process(server.process.pid).children(recursive=True)
    assert server.stop() == 0
    # Workers and multiprocessing's resource tracker end with the server (the tracker
    # may take a moment after its parent is gone to clean up).
    _gone, alive = psutil.wait_procs(children, timeout=5)
    assert [p for p in alive if p.status() != psutil.STATUS_ZOMBIE] == []
    with running_server(data_dir, *setup["args"]) as again:
        done = wait_until(again, job_id, finished)
        assert done["state"] == "succeeded"
        assert frame_hashes(Path(done["result"]["path"])) == setup["reference"]


def test_health_turns_unhealthy_when_every_worker_is_dead(
    setup: dict[str, Any], tmp_path: Path
) -> None:
    with running_server(tmp_path / "data", *setup["args"][:2]) as server:
        assert httpx.get(f"{server.url}/health").status_code == 200
        parent = psutil.Process(server.process.pid)
        deadline = time.monotonic() + 60
        health = httpx.get(f"{server.url}/health")
        while health.status_code == 200 and time.monotonic() < deadline:
            for child in parent.children(recursive=True):  # workers, as they come back
                child.kill()
            time.sleep(0.1)
            health = httpx.get(f"{server.url}/health")
        assert health.status_code == 503
        body = health.json()
        assert body["status"] == "unhealthy" and body["slots_alive"] == 0
        assert body["quarantined"] == ["cpu"]
        assert "no worker slot is alive" in body["reasons"]
        metrics = httpx.get(f"{server.url}/metrics").text
        assert 'vidshard_device_quarantined{device="cpu",node="local"} 1' in metrics
        assert 'vidshard_slot_up{slot="cpu#0",device="cpu",node="local"} 0' in metrics
