"""The /v1 API through FastAPI's TestClient, with a real pool of worker processes.

Clips are tiny and the model is lanczos, so a job takes about a second; a slow stand-in
model (a file in the server's model dir) keeps jobs running long enough to watch,
reorder and cancel.
"""

from __future__ import annotations

import http.server
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

import av
import pytest
from fastapi.testclient import TestClient
from tests.clips import ClipSpec, write_clip
from tests.helpers import slow_model_source

from vidshard.service import store_watch
from vidshard.service.app import create_app
from vidshard.service.settings import load_settings
from vidshard.service.store import RUNNING, JobRecord
from vidshard.service.store_errors import UNREACHABLE, StoreUnavailable

SLOW_MODEL = slow_model_source("Slow", 0.05)
FAST = {"model": "lanczos", "scale": 2, "preset": "ultrafast"}
SLOW = {"model": "slow.py:Slow", "preset": "ultrafast", "segment_seconds": 0.5}
# Holds the one running place for a minute however slow the machine: the tests that
# queue jobs behind it cancel it when done (a cancel stops it within a batch).
BLOCKER = {**SLOW, "model": "blocker.py:Blocker"}
FINAL = ("succeeded", "failed", "cancelled")


@pytest.fixture(scope="module")
def dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("service")
    clips = root / "clips"
    models = root / "models"
    clips.mkdir()
    models.mkdir()
    (models / "slow.py").write_text(SLOW_MODEL)
    (models / "blocker.py").write_text(slow_model_source("Blocker", 1.0))
    write_clip(clips / "small.mp4", ClipSpec(frames=24, size_wh=(64, 48)))
    write_clip(clips / "long.mp4", ClipSpec(frames=100, size_wh=(64, 48), gop=10))
    (clips / "notes.txt").write_text("not a video")
    return {"root": root, "clips": clips, "models": models}


def make_client(dirs: dict[str, Path], name: str, **settings: Any) -> TestClient:
    options: dict[str, Any] = {
        "data_dir": dirs["root"] / name,
        "devices": "cpu:2",
        "input_roots": [dirs["clips"]],
        "model_dirs": [dirs["models"]],
        "url_allowed_hosts": ["127.0.0.1"],  # the local HTTP server of the URL tests
        **settings,
    }
    return TestClient(create_app(load_settings(**options)))


@pytest.fixture(scope="module")
def client(dirs: dict[str, Path]) -> Iterator[TestClient]:
    with make_client(dirs, "main") as test_client:
        yield test_client


def submit(client: TestClient, input: str = "small.mp4", **body: Any) -> dict[str, Any]:
    params = body.pop("params", FAST)
    response = client.post("/v1/jobs", json={"input": input, "params": params, **body})
    assert response.status_code in (200, 202), response.text
    job: dict[str, Any] = response.json()
    return job


def wait_for(
    client: TestClient, job_id: str, states: tuple[str, ...] = FINAL, timeout_s: float = 60
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        job: dict[str, Any] = client.get(f"/v1/jobs/{job_id}").json()
        if job["state"] in states or time.monotonic() > deadline:
            return job
        time.sleep(0.05)


def wait_running_with_frames(client: TestClient, job_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        job: dict[str, Any] = client.get(f"/v1/jobs/{job_id}").json()
        if job["state"] == "running" and job["frames_done"] > 0:
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} never made progress: {job}")


def cancel_all(client: TestClient) -> None:
    for job in client.get("/v1/jobs", params={"limit": 500}).json()["jobs"]:
        if job["state"] in ("queued", "running"):
            client.post(f"/v1/jobs/{job['id']}/cancel")


# --- submit, watch, download ---------------------------------------------------------


def test_a_job_runs_to_its_result(client: TestClient, dirs: dict[str, Path]) -> None:
    response = client.post("/v1/jobs", json={"input": "small.mp4", "params": FAST})
    assert response.status_code == 202
    job = response.json()
    assert response.headers["location"] == f"/v1/jobs/{job['id']}"
    assert job["state"] in ("queued", "running") and job["task"] == "upscale"
    assert job["created_at"] > 0 and job["params"]["model"] == "lanczos"
    done = wait_for(client, job["id"])
    assert done["state"] == "succeeded", done
    assert done["progress"] == 1.0
    assert done["frames_done"] == done["frames_total"] == 24
    assert done["started_at"] >= done["created_at"] and done["finished_at"] >= done["started_at"]
    assert done["queue_position"] is None and done["error"] is None
    result = done["result"]
    assert result["url"] == f"/v1/jobs/{job['id']}/result"
    assert result["path"].endswith("small-x2.mp4") and result["bytes"] > 0
    download = client.get(result["url"])
    assert download.status_code == 200
    assert download.content == Path(result["path"]).read_bytes()
    out = dirs["root"] / "downloaded.mp4"
    out.write_bytes(download.content)
    with av.open(str(out)) as container:
        frames = list(container.decode(video=0))
    assert len(frames) == 24 and (frames[0].width, frames[0].height) == (128, 96)


def test_running_jobs_report_progress_frames_and_eta(client: TestClient) -> None:
    job = submit(client, "long.mp4", params=SLOW)
    seen = wait_running_with_frames(client, job["id"])
    assert 0 < seen["progress"] < 1
    assert seen["frames_total"] == 100
    assert seen["fps"] is not None and seen["fps"] > 0
    assert seen["eta_s"] is not None and seen["eta_s"] >= 0
    done = wait_for(client, job["id"])
    assert done["state"] == "succeeded" and done["frames_done"] == 100


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        ({"input": "small.mp4", "params": {"crf": 99}}, 422, "params.crf"),
        ({"input": "small.mp4", "params": {"scale": 0}}, 422, "params.scale"),
        ({"input": "small.mp4", "params": {"preset": "warp"}}, 422, "preset"),
        ({"input": "small.mp4", "params": {"colour": "red"}}, 422, "params.colour"),
        ({"input": "small.mp4", "priority": 1000}, 422, "priority"),
        ({"input": "small.mp4", "upload_id": "0" * 32}, 422, "exactly one of"),
        ({"params": FAST}, 422, "exactly one of"),
        ({"input": "small.mp4", "task": "paint"}, 422, "task"),
        ({"input": "../small.mp4"}, 403, "'..'"),
        ({"input": "/etc/passwd"}, 403, "outside"),
        ({"input": "missing.mp4"}, 422, "not found"),
        ({"input": "notes.txt"}, 422, "notes.txt"),
        ({"input": "small.mp4", "output_name": "out.exe"}, 422, "output_name"),
        ({"input": "small.mp4", "params": {"model": "no-such-model"}}, 422, "no-such-model"),
        ({"input": "small.mp4", "params": {"model": "/tmp/evil.py:Evil"}}, 403, "model_dirs"),
        ({"input_url": "file:///etc/passwd"}, 403, "file"),
        ({"input_url": "ftp://127.0.0.1/a.mp4"}, 403, "ftp"),
    ],
)
def test_bad_requests_get_a_clear_4xx(
    client: TestClient, body: dict[str, Any], status: int, words: str
) -> None:
    response = client.post("/v1/jobs", json=body)
    assert response.status_code == status, response.text
    detail = response.json()["detail"]
    assert isinstance(detail, str) and words in detail


def test_unknown_jobs_are_404(client: TestClient) -> None:
    for method, path in [
        ("get", "/v1/jobs/0123456789abcdef0123456789abcdef"),
        ("post", "/v1/jobs/0123456789abcdef0123456789abcdef/cancel"),
        ("get", "/v1/jobs/nope/result"),
    ]:
        response = getattr(client, method)(path)
        assert response.status_code == 404, (path, response.text)
        assert response.json()["error"] == "NotFound"


def test_listing_filters_by_state_and_pages(client: TestClient) -> None:
    ids = [submit(client)["id"] for _ in range(3)]
    for job_id in ids:
        assert wait_for(client, job_id)["state"] == "succeeded"
    everything = client.get("/v1/jobs", params={"limit": 500}).json()
    assert everything["total"] == len(everything["jobs"]) >= 3
    page = client.get("/v1/jobs", params={"state": "succeeded", "limit": 2, "offset": 1}).json()
    assert page["limit"] == 2 and page["offset"] == 1 and len(page["jobs"]) == 2
    assert all(j["state"] == "succeeded" for j in page["jobs"])
    newest_first = [j["id"] for j in everything["jobs"] if j["id"] in ids]
    assert newest_first == ids[::-1]
    assert client.get("/v1/jobs", params={"state": "bogus"}).status_code == 422
    assert client.get("/v1/jobs", params={"limit": 0}).status_code == 422


def test_idempotency_key_returns_the_same_job(client: TestClient) -> None:
    headers = {"Idempotency-Key": "order-42"}
    first = client.post("/v1/jobs", json={"input": "small.mp4", "params": FAST}, headers=headers)
    again = client.post("/v1/jobs", json={"input": "small.mp4", "params": FAST}, headers=headers)
    assert (first.status_code, again.status_code) == (202, 200)
    assert first.json()["id"] == again.json()["id"]
    assert wait_for(client, first.json()["id"])["state"] == "succeeded"


# --- cancel --------------------------------------------------------------------------


def test_cancel_a_running_job_frees_its_slots_and_removes_outputs(client: TestClient) -> None:
    job = submit(client, "long.mp4", params=SLOW)
    wait_running_with_frames(client, job["id"])
    pool = client.app.state.service.pool  # type: ignore[attr-defined]
    pids = {s.label: s.pid for s in pool.slot_states()}
    restarts = pool.restarts
    response = client.post(f"/v1/jobs/{job['id']}/cancel")
    assert response.status_code == 200
    cancelled = response.json()
    assert cancelled["state"] == "cancelled" and cancelled["cancel_requested"]
    # the units stopped at a batch boundary by themselves: no worker killed or restarted
    assert {s.label: s.pid for s in pool.slot_states()} == pids
    assert pool.restarts == restarts
    output_dir = Path(client.app.state.settings.outputs_dir) / job["id"]  # type: ignore[attr-defined]
    assert not output_dir.exists()
    slots = [s for d in client.get("/v1/devices").json() for s in d["slots"]]
    assert all(s["job"] != job["id"] for s in slots)
    assert client.post(f"/v1/jobs/{job['id']}/cancel").status_code == 409
    # the slots take the next job
    assert wait_for(client, submit(client)["id"])["state"] == "succeeded"


def test_cancel_a_queued_job(dirs: dict[str, Path]) -> None:
    with make_client(dirs, "one-at-a-time", max_running_jobs=1) as client:
        blocker = submit(client, "long.mp4", params=BLOCKER)
        queued = submit(client)
        assert client.get(f"/v1/jobs/{queued['id']}").json()["queue_position"] == 1
        cancelled = client.post(f"/v1/jobs/{queued['id']}/cancel").json()
        assert cancelled["state"] == "cancelled" and cancelled["started_at"] is None
        client.post(f"/v1/jobs/{blocker['id']}/cancel")
        assert wait_for(client, blocker["id"])["state"] == "cancelled"


# --- the queue -----------------------------------------------------------------------


def test_priority_orders_the_queue(dirs: dict[str, Path]) -> None:
    with make_client(dirs, "priorities", max_running_jobs=1) as client:
        blocker = submit(client, "long.mp4", params=BLOCKER)
        wait_running_with_frames(client, blocker["id"])
        low = submit(client, priority=0)
        high = submit(client, priority=5)
        assert client.get(f"/v1/jobs/{high['id']}").json()["queue_position"] == 1
        assert client.get(f"/v1/jobs/{low['id']}").json()["queue_position"] == 2
        client.post(f"/v1/jobs/{blocker['id']}/cancel")
        high_done = wait_for(client, high["id"])
        low_done = wait_for(client, low["id"])
        assert high_done["state"] == low_done["state"] == "succeeded"
        assert high_done["started_at"] < low_done["started_at"]


def test_concurrent_jobs_share_the_pool(client: TestClient) -> None:
    a = submit(client, "long.mp4", params=SLOW)
    b = submit(client, "long.mp4", params=SLOW)
    deadline = time.monotonic() + 60
    both_moving = False
    while time.monotonic() < deadline and not both_moving:
        jobs = [client.get(f"/v1/jobs/{j['id']}").json() for j in (a, b)]
        both_moving = all(j["state"] == "running" and 0 < j["frames_done"] < 100 for j in jobs)
        slots = [s for d in client.get("/v1/devices").json() for s in d["slots"]]
        busy_for = {s["job"] for s in slots if s["state"] == "busy"}
        both_moving = both_moving and busy_for == {a["id"], b["id"]}
        time.sleep(0.05)
    assert both_moving, "the two jobs never ran side by side, one slot each"
    for job in (a, b):
        assert wait_for(client, job["id"])["state"] == "succeeded"


def test_fifty_parallel_submits_are_all_accepted_in_a_consistent_queue(
    dirs: dict[str, Path],
) -> None:
    with make_client(dirs, "burst", max_running_jobs=1) as client:
        blocker = submit(client, "long.mp4", params=BLOCKER)
        wait_running_with_frames(client, blocker["id"])

        def post(i: int) -> tuple[int, str]:
            response = client.post(
                "/v1/jobs",
                json={"input": "small.mp4", "params": FAST},
                headers={"Idempotency-Key": f"burst-{i}"},
            )
            return response.status_code, response.json()["id"]

        with ThreadPoolExecutor(16) as pool:
            results = list(pool.map(post, range(50)))
        assert [status for status, _ in results] == [202] * 50
        ids = [job_id for _, job_id in results]
        assert len(set(ids)) == 50
        listed = client.get("/v1/jobs", params={"state": "queued", "limit": 500}).json()
        positions = sorted(j["queue_position"] for j in listed["jobs"])
        assert listed["total"] == 50 and positions == list(range(1, 51))
        # first come, first served: the list (newest first) is the queue back to front
        assert [j["queue_position"] for j in listed["jobs"]] == list(range(50, 0, -1))
        cancel_all(client)


# --- inputs --------------------------------------------------------------------------


def test_an_uploaded_file_is_an_input(client: TestClient, dirs: dict[str, Path]) -> None:
    data = (dirs["clips"] / "small.mp4").read_bytes()
    response = client.post("/v1/uploads", files={"file": ("my clip.mp4", data, "video/mp4")})
    assert response.status_code == 201, response.text
    upload = response.json()
    assert upload["bytes"] == len(data) and upload["filename"] == "myclip.mp4"
    job = client.post("/v1/jobs", json={"upload_id": upload["upload_id"], "params": FAST})
    assert job.status_code == 202, job.text
    done = wait_for(client, job.json()["id"])
    assert done["state"] == "succeeded" and done["input_kind"] == "upload"
    assert done["input"] == "myclip.mp4"  # not the server's folder layout


def test_a_url_input_is_downloaded_first(client: TestClient, dirs: dict[str, Path]) -> None:
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(dirs["clips"]))
    http.server.SimpleHTTPRequestHandler.log_message = lambda *_a: None  # type: ignore[method-assign]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        ok = client.post("/v1/jobs", json={"input_url": f"{base}/small.mp4", "params": FAST})
        assert ok.status_code == 202, ok.text
        assert wait_for(client, ok.json()["id"])["state"] == "succeeded"
        missing = client.post("/v1/jobs", json={"input_url": f"{base}/gone.mp4", "params": FAST})
        failed = wait_for(client, missing.json()["id"])
        assert failed["state"] == "failed" and "404" in failed["error"]
        assert failed["error_type"] == "InputError"
    finally:
        server.shutdown()


def test_size_limits(dirs: dict[str, Path]) -> None:
    with make_client(dirs, "limits", max_upload_bytes=1000, max_request_bytes=600) as client:
        big = client.post("/v1/uploads", files={"file": ("a.mp4", b"x" * 5000, "video/mp4")})
        assert big.status_code == 413 and "limit" in big.json()["detail"]
        assert not any((dirs["root"] / "limits" / "uploads").iterdir())
        huge_json = {"input": "small.mp4", "output_name": "a" * 190 + ".mp4", "pad": "x" * 1000}
        assert client.post("/v1/jobs", json=huge_json).status_code == 413


# --- auth, health, devices, metrics --------------------------------------------------


def test_api_key_guards_everything_but_health(dirs: dict[str, Path]) -> None:
    with make_client(dirs, "keyed", api_key="s3cret") as client:
        assert client.get("/health").status_code == 200
        for path in ("/v1/jobs", "/v1/devices", "/metrics", "/ready"):
            assert client.get(path).status_code == 401, path
            assert client.get(path, headers={"X-API-Key": "wrong"}).status_code == 401
            assert client.get(path, headers={"X-API-Key": "s3cret"}).status_code == 200
        bearer = {"Authorization": "Bearer s3cret"}
        assert client.get("/v1/jobs", headers=bearer).status_code == 200
        unauth = client.post("/v1/jobs", json={"input": "small.mp4"})
        assert unauth.status_code == 401 and "API key" in unauth.json()["detail"]


def test_health_reflects_dead_slots_and_the_store(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    service = client.app.state.service  # type: ignore[attr-defined]
    healthy = client.get("/health")
    assert healthy.status_code == 200 and healthy.json()["slots_alive"] == 2
    assert client.get("/ready").status_code == 200
    monkeypatch.setattr(service.pool, "live_slots", lambda: [])
    dead = client.get("/health")
    assert dead.status_code == 503 and "no worker slot is alive" in dead.json()["reasons"]
    assert client.get("/ready").status_code == 503
    monkeypatch.undo()

    def unreachable() -> None:
        raise StoreUnavailable(UNREACHABLE, "connection refused")

    monkeypatch.setattr(store_watch, "PROBE_TTL_S", 0.0)  # probe on every call
    with monkeypatch.context() as patched:
        patched.setattr(service.store, "probe_write", unreachable)
        no_store = client.get("/health")
    assert no_store.status_code == 503 and no_store.json()["store"] == "unreachable"
    assert client.get("/health").status_code == 200  # probed again: the store is back


def test_devices_show_each_slot(client: TestClient) -> None:
    devices = client.get("/v1/devices").json()
    assert [d["device"] for d in devices] == ["cpu"]
    (cpu,) = devices
    assert cpu["memory_total_bytes"] > 0 and cpu["quarantined"] is False
    assert sorted(s["label"] for s in cpu["slots"]) == ["cpu#0", "cpu#1"]
    assert all(s["state"] in ("idle", "busy", "loading") for s in cpu["slots"])
    assert all(s["pid"] for s in cpu["slots"])


def parse_metrics(text: str) -> dict[str, float]:
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            values[name] = float(value)
    return values


def test_metrics_count_jobs_frames_and_slots(client: TestClient) -> None:
    assert wait_for(client, submit(client)["id"])["state"] == "succeeded"
    response = client.get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    metrics = parse_metrics(response.text)
    listed = client.get("/v1/jobs", params={"state": "succeeded", "limit": 1}).json()
    assert metrics['vidshard_jobs{state="succeeded"}'] == listed["total"]
    assert "vidshard_queue_depth" in metrics
    assert metrics["vidshard_frames_processed_total"] >= 24
    assert metrics['vidshard_slot_up{slot="cpu#0",device="cpu",node="local"}'] == 1
    assert 'vidshard_slot_fps{slot="cpu#1",device="cpu",node="local"}' in metrics
    assert metrics['vidshard_device_memory_total_bytes{device="cpu",node="local"}'] > 0
    assert metrics["vidshard_unit_retries_total"] == 0
    assert metrics["vidshard_worker_restarts_total"] == 0


# --- restarts and expiry ---------------------------------------------------------------


def test_jobs_left_running_are_resumed_at_start(dirs: dict[str, Path]) -> None:
    """A server that died mid-job left it 'running' in the store: the next one runs it."""
    data_dir = dirs["root"] / "restart"
    with make_client(dirs, "restart") as client:
        job = submit(client)
        assert wait_for(client, job["id"])["state"] == "succeeded"
        store = client.app.state.service.store  # type: ignore[attr-defined]
        stranded = store.add(
            JobRecord(
                task="upscale",
                input_path=str(dirs["clips"] / "small.mp4"),
                input_kind="path",
                state=RUNNING,
                params=job["params"],
                output_path=str(data_dir / "outputs" / ("f" * 32) / "small-x2.mp4"),
                id="f" * 32,
            )
        )[0]
    with make_client(dirs, "restart") as client:
        done = wait_for(client, stranded.id)
        assert done["state"] == "succeeded" and done["frames_done"] == 24


def test_finished_jobs_expire_with_their_files(client: TestClient) -> None:
    job = wait_for(client, submit(client)["id"])
    output = Path(job["result"]["path"])
    assert output.exists()
    service = client.app.state.service  # type: ignore[attr-defined]
    assert service.expire(now=time.time() + 10) == 0  # not yet: the TTL is a day
    assert service.expire(now=time.time() + 2 * 86400) >= 1
    assert client.get(f"/v1/jobs/{job['id']}").status_code == 404
    assert not output.parent.exists()
