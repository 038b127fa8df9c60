"""The ``vidshard serve`` process itself, as real subprocesses on 127.0.0.1: what it
claims before it starts (the data dir, the port) and what it says when it cannot start
(a corrupt store), each as one line on stderr with exit code 2 and nothing touched; and a
running server whose database pages are corrupted under it (503 naming it, never 500).
"""

from __future__ import annotations

import os
import random
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.clips import ClipSpec, write_clip
from tests.helpers import slow_model_source
from tests.service_helpers import free_port, running_server, start_server

from vidshard.service.lock import DataDirLock
from vidshard.service.store import QUEUED, RUNNING, JobRecord, JobStore

PARAMS = {"model": "slow.py:Slow", "preset": "ultrafast", "segment_seconds": 0.4}
START_TIMEOUT_S = 120


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("process")
    clips, models = root / "clips", root / "models"
    clips.mkdir()
    models.mkdir()
    # About 12 s a job: long enough for a second server to try to start beside it.
    (models / "slow.py").write_text(slow_model_source("Slow", 0.1))
    write_clip(clips / "clip.mp4", ClipSpec(frames=120, size_wh=(48, 32), gop=10))
    args = ["--devices", "cpu:1", "--input-root", str(clips), "--model-dir", str(models)]
    return {"root": root, "args": args}


def serve(data_dir: Path, port: int, *args: str) -> subprocess.CompletedProcess[str]:
    """``vidshard serve`` that is expected to stop by itself."""
    command = [sys.executable, "-m", "vidshard", "serve", "--host", "127.0.0.1"]
    command += ["--port", str(port), "--data-dir", str(data_dir), "--devices", "cpu:1", *args]
    return subprocess.run(
        command, capture_output=True, text=True, timeout=START_TIMEOUT_S, check=False
    )


def one_error_line(done: subprocess.CompletedProcess[str]) -> str:
    """The one line a refused start prints, after checking that it is one line."""
    assert done.returncode == 2, (done.returncode, done.stderr)
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    return lines[0].removeprefix("error: ")


def interrupted_store(data_dir: Path) -> str:
    """A store with one job left running, as a killed server leaves it."""
    store = JobStore(f"sqlite:///{data_dir / 'jobs.db'}")
    store.create_all()
    record, _ = store.add(JobRecord(task="upscale", input_path="/in.mp4", input_kind="path"))
    assert store.transition(record.id, [QUEUED], RUNNING) is not None
    store.close()
    return record.id


def stored(data_dir: Path, job_id: str) -> JobRecord:
    store = JobStore(f"sqlite:///{data_dir / 'jobs.db'}")
    try:
        record = store.get(job_id)
    finally:
        store.close()
    assert record is not None
    return record


# --- a store that cannot be opened -------------------------------------------------------


def _garbled(good: bytes) -> bytes:
    pages = bytearray(good)
    pages[4096 * 2 : 4096 * 4] = random.Random(5).randbytes(8192)
    return bytes(pages)


CORRUPT_FILES = {
    "random bytes": lambda good: random.Random(2).randbytes(16384),
    "a truncated copy": lambda good: good[: len(good) // 2],
    "a zero-filled page": lambda good: bytes(4096),
    "garbled pages under an intact header": _garbled,
}


@pytest.fixture(scope="module")
def good_database(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    path = tmp_path_factory.mktemp("good") / "jobs.db"
    store = JobStore(f"sqlite:///{path}")
    store.create_all()
    for _ in range(300):
        store.add(JobRecord(task="upscale", input_path="/in.mp4", input_kind="path"))
    store.close()
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return path.read_bytes()


@pytest.mark.parametrize("case", CORRUPT_FILES)
def test_a_corrupt_store_at_start_is_one_line_and_exit_2(
    good_database: bytes, tmp_path: Path, case: str
) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    content = CORRUPT_FILES[case](good_database)
    (data_dir / "jobs.db").write_bytes(content)
    message = one_error_line(serve(data_dir, free_port()))
    assert message.startswith(f"job database {data_dir / 'jobs.db'} is corrupt")
    assert "move it aside" in message
    assert (data_dir / "jobs.db").read_bytes() == content  # left for its owner to judge


def test_a_directory_in_place_of_the_store_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "data" / "jobs.db").mkdir(parents=True)
    message = one_error_line(serve(tmp_path / "data", free_port()))
    assert message.startswith(f"job database {tmp_path / 'data' / 'jobs.db'} is a directory")


# --- the data dir and the port ------------------------------------------------------------


def test_a_data_dir_in_use_stops_the_server_before_it_touches_the_store(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    job_id = interrupted_store(data_dir)
    lock = DataDirLock(data_dir)
    lock.acquire()  # this test plays the first server
    try:
        message = one_error_line(serve(data_dir, free_port()))
    finally:
        lock.release()
    assert message.startswith(f"data dir {data_dir} in use by pid {os.getpid()} ")
    job = stored(data_dir, job_id)
    assert (job.state, job.attempts) == (RUNNING, 1)  # not requeued by the refused server


def test_a_port_in_use_stops_the_server_before_it_touches_the_store(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    job_id = interrupted_store(data_dir)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        message = one_error_line(serve(data_dir, port))
    assert message == (
        f"port {port} on 127.0.0.1 is in use (by pid {os.getpid()}): "
        "stop that server or give another --port"
    )
    job = stored(data_dir, job_id)
    assert (job.state, job.attempts) == (RUNNING, 1)  # not requeued, nothing started


def test_a_second_server_on_the_same_data_dir_leaves_the_first_ones_job_alone(
    setup: dict[str, Any], tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    with running_server(data_dir, *setup["args"]) as first:
        job = httpx.post(
            f"{first.url}/v1/jobs", json={"input": "clip.mp4", "params": PARAMS}, timeout=30
        ).json()
        url = f"{first.url}/v1/jobs/{job['id']}"
        deadline = time.monotonic() + 60
        while httpx.get(url, timeout=30).json()["frames_done"] == 0:
            assert time.monotonic() < deadline, "the job never started"
            time.sleep(0.1)
        first_port = int(first.url.rsplit(":", 1)[1])
        for port in (free_port(), first_port):  # its own port, and the first one's
            message = one_error_line(serve(data_dir, port, *setup["args"]))
            assert message.startswith(f"data dir {data_dir} in use by pid {first.process.pid} ")
            now = httpx.get(url, timeout=30).json()
            assert now["state"] in ("running", "succeeded") and now["attempts"] == 1, now
        while (current := httpx.get(url, timeout=30).json())["state"] == "running":
            assert time.monotonic() < deadline + 120, current
            time.sleep(0.1)
        assert current["state"] == "succeeded", current
        assert current["attempts"] == 1  # ran once: never requeued behind its back
    assert "requeued" not in first.log.read_text()


# --- corrupt pages under a running server ------------------------------------------------


def corrupt_under(db_file: Path) -> None:
    """Checkpoint the WAL into the file (so the server reads the file next), then write
    random bytes over every page but the first."""
    with sqlite3.connect(db_file) as conn:
        deadline = time.monotonic() + 30
        while conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0] != 0:
            assert time.monotonic() < deadline, "the server never let the WAL be checkpointed"
            time.sleep(0.05)
    size = db_file.stat().st_size
    with db_file.open("r+b") as f:
        f.seek(4096)
        f.write(random.Random(11).randbytes(size - 4096))


def test_corrupt_pages_under_a_running_server_are_503_naming_it(
    setup: dict[str, Any], tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    server = start_server(data_dir, *setup["args"])
    try:
        fast = {"model": "lanczos", "scale": 2, "preset": "ultrafast"}
        job_id = httpx.post(
            f"{server.url}/v1/jobs", json={"input": "clip.mp4", "params": fast}, timeout=30
        ).json()["id"]
        deadline = time.monotonic() + 120
        while httpx.get(f"{server.url}/v1/jobs/{job_id}").json()["state"] != "succeeded":
            assert time.monotonic() < deadline
            time.sleep(0.1)
        corrupt_under(data_dir / "jobs.db")
        calls = [
            ("POST", "/v1/jobs", {"input": "clip.mp4", "params": fast}),
            ("GET", "/v1/jobs", None),
            ("GET", f"/v1/jobs/{job_id}", None),
            ("POST", f"/v1/jobs/{job_id}/cancel", None),
            ("GET", f"/v1/jobs/{job_id}/result", None),
            ("GET", "/metrics", None),
            ("GET", f"/status/{job_id}", None),
            ("POST", "/process_video", {"video_path": "clip.mp4"}),
            ("POST", "/video/status", {"requestId": job_id}),
            ("POST", "/video/submit", {"video_path": "clip.mp4"}),
        ]
        for method, path, body in calls:
            answer = httpx.request(method, f"{server.url}{path}", json=body, timeout=60)
            assert answer.status_code == 503, (path, answer.status_code, answer.text)
            assert answer.json()["error"] == "StoreUnavailable"
            assert "corrupt" in answer.json()["detail"], answer.text
            assert answer.headers["retry-after"].isdigit()
        health = httpx.get(f"{server.url}/health", timeout=60)
        assert health.status_code == 503 and health.json()["store"] == "corrupt"
    finally:
        code = server.stop()
    assert code == 0  # the server stops cleanly around a broken store
    assert "Traceback" not in server.log.read_text()
