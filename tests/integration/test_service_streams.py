"""Live streams through a real ``vidshard serve`` (its own process, two CPU slots) and a
real RTSP server on loopback (GStreamer, the clips looped): streams added, read and
stopped at run time; their events, snapshot, files, webhook and metrics; bad URLs; keys
and ownership; seed 001's endpoints; ``/process_video`` recording an RTSP window; file
jobs beside streams; and a restart that brings the streams back.

The detector is a fake class in the server's model dir (``stream_detectors.py``: one box
a frame). Bounds are generous: CI's two cores are shared with the RTSP server.
"""

from __future__ import annotations

import io
import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image
from tests.clips import ClipSpec, write_clip
from tests.service_helpers import Server, running_server

from rtsp_fixtures import RtspServer, rtsp_server_fixture
from stream_fixtures import closed_port, write_detectors
from webhook_receiver import Receiver

WAIT_S = 90.0
DETECTOR = "stream_detectors.py:Counting"
KEYS = {"alice": "alice-key", "bob": "bob-key", "root": {"key": "root-key", "admin": True}}
ENV = {
    "VIDSHARD_API_KEYS": json.dumps(KEYS),
    "VIDSHARD_URL_ALLOWED_HOSTS": "127.0.0.1",  # the test's webhook receiver
    "VIDSHARD_MAX_RUNNING_JOBS": "1",
}
QUICK_FAIL = {"max_reconnects": 1, "reconnect_delay_s": 0.1, "open_timeout_s": 5}

rtsp_server = rtsp_server_fixture()


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("service-streams")
    models, clips = root / "models", root / "clips"
    models.mkdir()
    clips.mkdir()
    write_detectors(models)
    write_clip(clips / "loop.mp4", ClipSpec(frames=50, size_wh=(160, 120), gop=5))
    write_clip(clips / "small.mp4", ClipSpec(frames=12, size_wh=(64, 48)))
    (clips / "not-a-video.mp4").write_text("hello")
    return {"root": root, "models": models, "clips": clips}


def serve_args(folders: dict[str, Path]) -> tuple[str, ...]:
    return (
        "--devices",
        "cpu:2",
        "--model-dir",
        str(folders["models"]),
        "--input-root",
        str(folders["clips"]),
    )


@pytest.fixture(scope="module")
def server(folders: dict[str, Path]) -> Iterator[Server]:
    with running_server(folders["root"] / "data", *serve_args(folders), env=ENV) as running:
        yield running


def client(server: Server, key: str = "root-key") -> httpx.Client:
    return httpx.Client(base_url=server.url, headers={"X-API-Key": key}, timeout=60)


@pytest.fixture
def root(server: Server) -> Iterator[httpx.Client]:
    """The admin's client; every stream still live is stopped after the test."""
    with client(server) as admin:
        yield admin
        for stream in admin.get("/v1/streams").json()["streams"]:
            if stream["state"] not in ("stopped", "failed"):
                admin.delete(f"/v1/streams/{stream['id']}")


def add(c: httpx.Client, url: str, **params: Any) -> dict[str, Any]:
    response = c.post("/v1/streams", json={"url": url, "model": DETECTOR, "params": params})
    assert response.status_code == 201, response.text
    assert response.headers["Location"] == f"/v1/streams/{response.json()['id']}"
    return response.json()


def wait_for(
    c: httpx.Client, stream_id: str, condition: Callable[[dict[str, Any]], bool]
) -> dict[str, Any]:
    deadline = time.monotonic() + WAIT_S
    while True:
        view = c.get(f"/v1/streams/{stream_id}").json()
        if condition(view):
            return view
        assert time.monotonic() < deadline, f"not true within {WAIT_S} s: {view}"
        time.sleep(0.2)


def processing(view: dict[str, Any], frames: int = 5) -> bool:
    return view["state"] == "live" and view["frames_processed"] >= frames


def read_events(
    c: httpx.Client, stream_id: str, until: Callable[[list[tuple[str, Any]]], bool]
) -> list[tuple[str, Any]]:
    """(event name, data) of a stream's Server-Sent Events until ``until`` or the end."""
    events: list[tuple[str, Any]] = []
    with c.stream("GET", f"/v1/streams/{stream_id}/events", timeout=WAIT_S) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        name = "record"
        for line in response.iter_lines():
            if line.startswith("event: "):
                name = line.removeprefix("event: ")
            elif line.startswith("data: "):
                events.append((name, json.loads(line.removeprefix("data: "))))
                name = "record"
                if until(events):
                    break
    return events


# --- the API at run time -------------------------------------------------------------


def test_streams_are_added_listed_and_stopped_at_run_time(
    root: httpx.Client, rtsp_server: RtspServer
) -> None:
    first = add(root, rtsp_server.url("squares"))
    assert first["state"] == "connecting" and first["frames_processed"] == 0
    first = wait_for(root, first["id"], processing)
    second = add(root, rtsp_server.url("car"))  # while the first runs
    second = wait_for(root, second["id"], processing)
    assert first["slot"] != second["slot"]  # one each: the slot with the most headroom
    for view in (first, second):
        assert view["fps"] > 0 and view["latency_ms"]["p50"] is not None
        assert view["latency_ms"]["p95"] >= view["latency_ms"]["p50"]
    listed = {s["id"]: s for s in root.get("/v1/streams").json()["streams"]}
    assert {first["id"], second["id"]} <= set(listed)

    stopped = root.delete(f"/v1/streams/{first['id']}")
    assert stopped.status_code == 200, stopped.text
    final = stopped.json()
    assert final["state"] == "stopped" and final["frames_processed"] > 0
    assert final["ended_at"] is not None
    assert root.delete(f"/v1/streams/{first['id']}").status_code == 409  # already stopped
    again = root.get(f"/v1/streams/{first['id']}").json()
    assert again["state"] == "stopped" and again["frames_processed"] == final["frames_processed"]
    # the other goes on
    count = second["frames_processed"]
    wait_for(root, second["id"], lambda v: processing(v, count + 10))
    # the stopped one's results stay, whole lines of JSON
    assert again["files"], again
    text = root.get(again["files"][0]["url"]).text
    lines = [json.loads(line) for line in text.splitlines()]
    assert lines and all(line["stream"] == first["id"] for line in lines)
    assert len(lines) <= final["frames_processed"]


def test_events_carry_each_record_and_the_status_changes(
    root: httpx.Client, rtsp_server: RtspServer
) -> None:
    stream = add(root, rtsp_server.url("squares"))
    wait_for(root, stream["id"], processing)
    records = read_events(root, stream["id"], lambda e: sum(n == "record" for n, _ in e) >= 20)
    assert records[0][0] == "status" and records[0][1]["state"] == "live"
    frames = [data for name, data in records if name == "record"]
    assert all(f["stream"] == stream["id"] and f["objects"] for f in frames)
    numbers = [f["frame"] for f in frames]
    assert numbers == sorted(numbers) and len(set(numbers)) == len(numbers)
    assert {"captured_at", "processed_at", "latency_ms", "slot"} <= set(frames[0])

    # a stop while a client listens: its last event is the final status, then it ends
    stopper = threading.Timer(2.0, root.delete, args=(f"/v1/streams/{stream['id']}",))
    stopper.start()
    try:
        tail = read_events(root, stream["id"], lambda e: False)  # to the end
    finally:
        stopper.join()
    assert tail[-1] == ("status", tail[-1][1]) and tail[-1][1]["state"] == "stopped"
    # a client of a stream that ended gets its final status and the end
    ended = read_events(root, stream["id"], lambda e: False)
    assert [(n, d["state"]) for n, d in ended] == [("status", "stopped")]


def test_the_snapshot_appears(root: httpx.Client, rtsp_server: RtspServer) -> None:
    stream = add(root, rtsp_server.url("squares"), snapshot_interval_s=0.2)
    deadline = time.monotonic() + WAIT_S
    while (response := root.get(f"/v1/streams/{stream['id']}/snapshot.jpg")).status_code == 404:
        assert response.json()["error"] == "NotFound"
        assert time.monotonic() < deadline, "no snapshot"
        time.sleep(0.2)
    assert response.status_code == 200 and response.headers["content-type"] == "image/jpeg"
    assert Image.open(io.BytesIO(response.content)).size == (320, 240)
    view = root.get(f"/v1/streams/{stream['id']}").json()
    assert view["snapshot_url"] == f"/v1/streams/{stream['id']}/snapshot.jpg"


def test_a_webhook_gets_batches_and_retries_after_a_failure(
    root: httpx.Client, rtsp_server: RtspServer
) -> None:
    receiver = Receiver(lambda n: 500 if n == 0 else 200)  # the first POST fails
    try:
        hook = {"webhook_url": receiver.url, "webhook_batch": 10, "webhook_interval_s": 0.3}
        stream = add(root, rtsp_server.url("squares"), **hook)
        deadline = time.monotonic() + WAIT_S
        while sum(status == 200 for status, _b, _h in receiver.posts) < 3:
            assert time.monotonic() < deadline, receiver.posts
            time.sleep(0.2)
        status, failed, _headers = receiver.posts[0]
        assert status == 500 and failed
        taken = [record["frame"] for record in receiver.taken()]
        assert {record["frame"] for record in failed} <= set(taken)  # sent again, not lost
        assert all(len(body) <= 10 for _s, body, _h in receiver.posts)
        assert all(r["stream"] == stream["id"] for r in receiver.taken())
        view = root.get(f"/v1/streams/{stream['id']}").json()
        assert view["webhook"]["failures"] >= 1 and view["webhook"]["sent"] >= len(taken)
    finally:
        receiver.close()


# --- bad URLs and refusals --------------------------------------------------------------


@pytest.mark.parametrize(
    "where, words",
    [
        ("closed-port", ""),  # nothing listens: connection refused
        ("no-such-mount", ""),  # the RTSP server answers 404
        ("not-a-video", "not a video"),  # a file inside the input roots that is no video
    ],
)
def test_a_bad_url_ends_failed_with_a_reason(
    root: httpx.Client, rtsp_server: RtspServer, folders: dict[str, Path], where: str, words: str
) -> None:
    url = {
        "closed-port": f"rtsp://127.0.0.1:{closed_port()}/cam",
        "no-such-mount": rtsp_server.url("squares").rsplit("/", 1)[0] + "/nosuch",
        "not-a-video": "not-a-video.mp4",
    }[where]
    stream = add(root, url, **QUICK_FAIL)
    failed = wait_for(root, stream["id"], lambda v: v["state"] == "failed")
    assert failed["reason"] and words in failed["reason"]
    assert failed["ended_at"] is not None
    assert root.get("/health").status_code == 200  # the server is fine
    assert root.delete(f"/v1/streams/{stream['id']}").status_code == 409


@pytest.mark.parametrize(
    "body, status, words",
    [
        ({"url": "ftp://127.0.0.1/cam", "model": DETECTOR}, 403, "stream_url_schemes"),
        ({"url": "/dev/video0", "model": DETECTOR}, 403, "stream_allow_devices"),
        ({"url": "/etc/hostname", "model": DETECTOR}, 403, "outside"),
        ({"url": "rtsp://", "model": DETECTOR}, 422, "host"),
        ({"url": "rtsp://127.0.0.1/cam"}, 422, "model: required"),
        ({"url": "rtsp://127.0.0.1/cam", "model": "/tmp/elsewhere.py:X"}, 403, "model_dirs"),
        ({"url": "rtsp://127.0.0.1/cam", "model": DETECTOR, "params": {"fps": 3}}, 422, "fps"),
        (
            {
                "url": "rtsp://127.0.0.1/cam",
                "model": DETECTOR,
                "params": {"webhook_url": "http://10.0.0.1/hook"},  # internal, not allowed
            },
            403,
            "url_allowed_hosts",
        ),
        ({"url": "rtsp://127.0.0.1/cam", "model": DETECTOR, "extra": 1}, 422, "extra"),
    ],
)
def test_refused_streams(root: httpx.Client, body: dict[str, Any], status: int, words: str) -> None:
    before = len(root.get("/v1/streams").json()["streams"])
    response = root.post("/v1/streams", json=body)
    assert response.status_code == status, response.text
    assert words in response.json()["detail"]
    assert len(root.get("/v1/streams").json()["streams"]) == before  # nothing stays


# --- keys and ownership -----------------------------------------------------------------


def test_a_stream_belongs_to_its_key(
    server: Server, root: httpx.Client, folders: dict[str, Path]
) -> None:
    with client(server, "alice-key") as alice, client(server, "bob-key") as bob:
        stream = add(alice, "loop.mp4", loop=True)
        sid = stream["id"]
        assert stream["owner"] == "alice"
        assert stream["url"] == "loop.mp4"  # no server folder for a key that is not an admin
        wait_for(alice, sid, processing)
        for method, path in (
            ("GET", f"/v1/streams/{sid}"),
            ("DELETE", f"/v1/streams/{sid}"),
            ("GET", f"/v1/streams/{sid}/events"),
            ("GET", f"/v1/streams/{sid}/snapshot.jpg"),
            ("GET", f"/api/v1/realtime-ai/status/{sid}"),
            ("POST", f"/api/v1/realtime-ai/stop/{sid}"),
        ):
            assert bob.request(method, path).status_code == 404, (method, path)
        assert sid not in {s["id"] for s in bob.get("/v1/streams").json()["streams"]}
        assert bob.post("/v1/streams/rebalance").status_code == 403
        seen = root.get(f"/v1/streams/{sid}").json()  # an admin sees every stream
        assert seen["url"] == str(folders["clips"] / "loop.mp4")
        moves = root.post("/v1/streams/rebalance")
        assert moves.status_code == 200 and "moves" in moves.json()
        assert httpx.get(f"{server.url}/v1/streams").status_code == 401  # no key
        assert alice.delete(f"/v1/streams/{sid}").json()["state"] == "stopped"


# --- streams and file jobs share the pool -------------------------------------------------


def test_a_file_job_completes_while_a_stream_runs(
    root: httpx.Client, rtsp_server: RtspServer
) -> None:
    stream = add(root, rtsp_server.url("squares"))
    stream = wait_for(root, stream["id"], processing)
    job = root.post(
        "/v1/jobs", json={"input": "small.mp4", "params": {"model": "lanczos", "scale": 2}}
    ).json()
    deadline = time.monotonic() + WAIT_S
    while (state := root.get(f"/v1/jobs/{job['id']}").json())["state"] not in (
        "succeeded",
        "failed",
    ):
        assert time.monotonic() < deadline, state
        time.sleep(0.3)
    assert state["state"] == "succeeded", state
    after = wait_for(root, stream["id"], lambda v: processing(v, stream["frames_processed"] + 10))
    assert after["slot"] == stream["slot"]  # not moved: the job ran on the other slot
    assert after["failovers"] == 0 and after["reconnects"] == 0


# --- metrics ------------------------------------------------------------------------------


def test_metrics_per_stream_without_credentials(
    root: httpx.Client, rtsp_server: RtspServer
) -> None:
    url = rtsp_server.url("squares").replace("rtsp://", "rtsp://viewer:s3cret@")
    stream = add(root, url)
    assert stream["url"] == rtsp_server.url("squares").replace("rtsp://", "rtsp://***@")
    wait_for(root, stream["id"], lambda v: processing(v) and v["latency_ms"]["p95"] is not None)
    text = root.get("/metrics").text
    label = f'stream="{stream["id"]}"'
    for line in (
        f'vidshard_stream_up{{{label},state="live"}} 1',
        f"vidshard_stream_fps{{{label}}} ",
        f"vidshard_stream_frames_processed_total{{{label}}} ",
        f"vidshard_stream_frames_dropped_total{{{label}}} ",
        f'vidshard_stream_latency_seconds{{{label},quantile="0.5"}} ',
        f'vidshard_stream_latency_seconds{{{label},quantile="0.95"}} ',
        f"vidshard_stream_reconnects_total{{{label}}} 0",
        f"vidshard_stream_failovers_total{{{label}}} 0",
    ):
        assert line in text, line
    view = root.get(f"/v1/streams/{stream['id']}").text
    for shown in (text, view, root.get("/v1/streams").text):
        assert "s3cret" not in shown and "viewer" not in shown


# --- seed 001 ------------------------------------------------------------------------------


def seed_body(url: str, **model_settings: Any) -> dict[str, Any]:
    """The seed's own example, with a model this server has."""
    return {
        "stream_config": {"url": url, "protocol": "rtsp"},
        "model_settings": {
            "variant": DETECTOR,
            "device": "auto",
            "enable_multi_gpu": True,
            "load_balancing": True,
            "gpu_devices": None,
            "max_workers": 4,
            **model_settings,
        },
        "processing_settings": {"max_fps": 30, "batch_size": 2},
    }


def test_the_seed_001_flow(root: httpx.Client, rtsp_server: RtspServer) -> None:
    started = root.post("/api/v1/realtime-ai/start", json=seed_body(rtsp_server.url("squares")))
    assert started.status_code == 201, started.text
    body = started.json()
    service_id = body["service_id"]
    assert body["success"] and body["settings"]["device"].startswith("auto")
    stream = root.get(f"/v1/streams/{service_id}").json()  # the same stream
    assert stream["params"]["max_fps"] == 30 and stream["params"]["batch_size"] == 2
    deadline = time.monotonic() + WAIT_S
    while not (status := root.get(f"/api/v1/realtime-ai/status/{service_id}").json())["fps"]:
        assert time.monotonic() < deadline, status
        time.sleep(0.3)
    assert status["status"] == "live" and status["is_running"]
    assert status["frames_processed"] > 0 and status["gpu"] == "cpu"
    assert status["slot"].startswith("cpu#") and status["latency_ms"]["p50"] is not None
    info = root.get("/api/v1/realtime-ai/gpu-info").json()
    assert info["gpu_count"] == 0 and info["devices"][0]["device"] == "cpu"
    assert "memory_total_bytes" in info["devices"][0]
    stopped = root.post(f"/api/v1/realtime-ai/stop/{service_id}").json()
    assert stopped["status"] == "stopped" and not stopped["is_running"]
    assert root.get(f"/api/v1/realtime-ai/status/{service_id}").json()["status"] == "stopped"


@pytest.mark.parametrize(
    "change, words",
    [
        ({"variant": "multi_gpu_yolov11s"}, "put yolo11s.pt in one of its model_dirs"),
        ({"device": "cuda:1"}, "does not pin"),
        ({"gpu_devices": [0, 1]}, "not part of it"),
    ],
)
def test_seed_001_requests_vidshard_cannot_honour(
    root: httpx.Client, rtsp_server: RtspServer, change: dict[str, Any], words: str
) -> None:
    response = root.post(
        "/api/v1/realtime-ai/start", json=seed_body(rtsp_server.url("squares"), **change)
    )
    assert response.status_code == 422, response.text
    assert words in response.json()["detail"]


def test_seed_001_protocol_must_match(root: httpx.Client) -> None:
    body = seed_body("rtmp://127.0.0.1/live")
    response = root.post("/api/v1/realtime-ai/start", json=body)
    assert response.status_code == 422 and "protocol" in response.json()["detail"]


# --- /process_video records an RTSP window -----------------------------------------------


def test_process_video_records_an_rtsp_window(root: httpx.Client, rtsp_server: RtspServer) -> None:
    url = rtsp_server.url("squares").replace("rtsp://", "rtsp://viewer:s3cret@")
    response = root.post("/process_video", json={"video_path": url, "duration": 3, "scale": 2})
    assert response.status_code == 202, response.text
    task_id = response.json()["task_id"]
    deadline = time.monotonic() + 180
    while (status := root.get(f"/status/{task_id}").json())["status"] not in (
        "SUCCESS",
        "FAILURE",
    ):
        assert time.monotonic() < deadline, status
        time.sleep(0.5)
    assert status["status"] == "SUCCESS", status
    job = root.get(f"/v1/jobs/{task_id}").json()
    assert 60 <= job["frames_done"] <= 90, job  # about 3 s at 25 fps
    assert "s3cret" not in json.dumps(job) and job["input"].startswith("rtsp://***@")
    video = root.get(job["result"]["url"])
    assert video.status_code == 200 and len(video.content) > 1000


@pytest.mark.parametrize(
    "body, words",
    [
        ({"video_path": "rtsp://127.0.0.1/cam"}, "duration: required"),
        ({"video_path": "small.mp4", "duration": 3}, "only for a live stream"),
        ({"video_path": "http://127.0.0.1/a.mp4", "duration": 3}, "input_url"),
        ({"video_path": "rtsp://127.0.0.1/cam", "duration": 1e9}, "max_recording_s"),
    ],
)
def test_process_video_refusals(root: httpx.Client, body: dict[str, Any], words: str) -> None:
    response = root.post("/process_video", json=body)
    assert response.status_code == 422, response.text
    assert words in response.json()["detail"]


# --- restart ------------------------------------------------------------------------------


def test_streams_come_back_after_a_restart(
    folders: dict[str, Path], rtsp_server: RtspServer, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    env = {"VIDSHARD_STREAM_ALLOWED_HOSTS": "127.0.0.1"}  # cameras on loopback only
    first = running_server(data, *serve_args(folders), env=env)
    with first as server, client(server) as c:
        refused = c.post("/v1/streams", json={"url": "rtsp://10.9.8.7/cam", "model": DETECTOR})
        assert refused.status_code == 403 and "stream_allowed_hosts" in refused.json()["detail"]
        kept = wait_for(c, add(c, rtsp_server.url("squares"))["id"], processing)
        gone = add(c, rtsp_server.url("car"))
        c.delete(f"/v1/streams/{gone['id']}")
        listener = threading.Thread(
            target=read_events, args=(c, kept["id"], lambda e: False), daemon=True
        )
        listener.start()  # a client still listening must not hold up the stop
        time.sleep(1.0)
        started_s = time.monotonic()
        assert server.stop() == 0
        assert time.monotonic() - started_s < 18  # before uvicorn's 20 s grace for it
        listener.join(10)
        assert not listener.is_alive()
    with running_server(data, *serve_args(folders), env=env) as server, client(server) as c:
        back = wait_for(c, kept["id"], lambda v: processing(v, kept["frames_processed"] + 10))
        assert back["created_at"] == kept["created_at"]
        assert c.get(f"/v1/streams/{gone['id']}").json()["state"] == "stopped"  # not restored
        assert [
            s["id"] for s in c.get("/v1/streams").json()["streams"] if s["state"] == "live"
        ] == [kept["id"]]
