"""The endpoints of the two older services (seed 000: Celery SR; seed 002: video
generation) against a real app and worker pool: their flows end on the same vidshard jobs
as /v1, and what vidshard cannot do yet is refused with a clear 422."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from clips import ClipSpec, write_clip
from vidshard.media import probe
from vidshard.service.app import create_app
from vidshard.service.settings import load_settings

API_KEY = "k"
AUTH = {"X-API-Key": API_KEY}
PARAMS = {"model": "lanczos", "scale": 2, "preset": "ultrafast"}
WAIT_S = 60.0
FINAL_CELERY = ("SUCCESS", "FAILURE", "REVOKED")
FINAL_GENERATION = ("Succeed", "Failed", "Cancelled")


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("inputs")
    write_clip(root / "clip.mp4", ClipSpec(frames=24, size_wh=(64, 48)))
    # Long enough (a few seconds on 2 cores) to hold the one running slot while the
    # queued jobs behind it are looked at; it is cancelled once they have been.
    write_clip(root / "long.mp4", ClipSpec(frames=480, size_wh=(64, 48)))
    return root


@pytest.fixture(scope="module")
def outside(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real video outside the input roots."""
    return write_clip(tmp_path_factory.mktemp("outside") / "clip.mp4", ClipSpec(frames=2))


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory, inputs: Path) -> Any:
    settings = load_settings(
        data_dir=tmp_path_factory.mktemp("data"),
        devices="cpu:1",
        input_roots=[inputs],
        max_running_jobs=1,
        api_key=API_KEY,
    )
    return create_app(settings)


@pytest.fixture(scope="module")
def client(app: Any) -> Iterator[TestClient]:
    with TestClient(app, headers=AUTH) as client:
        yield client


@pytest.fixture(scope="module")
def anonymous(app: Any, client: TestClient) -> TestClient:
    """The same running app, without the API key (not entered: the lifespan is client's)."""
    return TestClient(app)


@pytest.fixture
def idle(client: TestClient) -> TestClient:
    """The client, once no job of an earlier test is queued or running."""
    deadline = time.monotonic() + WAIT_S
    while _busy_jobs(client):
        assert time.monotonic() < deadline, f"jobs still busy: {_busy_jobs(client)}"
        time.sleep(0.05)
    return client


def _busy_jobs(client: TestClient) -> list[str]:
    answer = client.get("/v1/jobs", params={"state": ["queued", "running"]})
    assert answer.status_code == 200, answer.text
    return [job["id"] for job in answer.json()["jobs"]]


def _job_count(client: TestClient) -> int:
    total: int = client.get("/v1/jobs", params={"limit": 1}).json()["total"]
    return total


def _celery(client: TestClient, task_id: str) -> dict[str, Any]:
    answer = client.get(f"/status/{task_id}")
    assert answer.status_code == 200, answer.text
    view: dict[str, Any] = answer.json()
    return view


def _generation(client: TestClient, request_id: str) -> dict[str, Any]:
    answer = client.post("/video/status", json={"requestId": request_id})
    assert answer.status_code == 200, answer.text
    view: dict[str, Any] = answer.json()
    return view


def _watch(
    read: Callable[[], dict[str, Any]], done: Callable[[dict[str, Any]], bool]
) -> tuple[list[str], dict[str, Any]]:
    """Every distinct status seen while polling ``read`` until ``done``, and the last view."""
    seen: list[str] = []
    deadline = time.monotonic() + WAIT_S
    while True:
        view = read()
        if not seen or seen[-1] != view["status"]:
            seen.append(view["status"])
        if done(view):
            return seen, view
        assert time.monotonic() < deadline, f"still {view} after {WAIT_S} s (seen {seen})"
        time.sleep(0.02)


def _until_running(client: TestClient, job_id: str) -> None:
    _watch(lambda: _celery(client, job_id), lambda v: v["status"] != "PENDING")
    assert _celery(client, job_id)["status"] == "STARTED"


# --- the API key ---------------------------------------------------------------------------

ZERO_ID = "0" * 32


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/process_video", {"video_path": "clip.mp4"}),
        ("GET", f"/status/{ZERO_ID}", None),
        ("POST", "/video/submit", {"video_path": "clip.mp4"}),
        ("POST", "/video/status", {"requestId": ZERO_ID}),
        ("POST", "/video/cancel", {"requestId": ZERO_ID}),
    ],
)
@pytest.mark.parametrize(
    "headers",
    [
        {},  # no key at all
        {"X-API-Key": "wrong"},  # a wrong key
        {"Authorization": "Bearer wrong"},  # a wrong key the other way
    ],
)
def test_compat_endpoints_need_the_api_key(
    anonymous: TestClient, client: TestClient, method: str, path: str, body: Any, headers: dict
) -> None:
    before = _job_count(client)
    answer = anonymous.request(method, path, json=body, headers=headers)
    assert answer.status_code == 401, answer.text
    assert _job_count(client) == before


@pytest.mark.parametrize(
    "headers",
    [
        AUTH,  # X-API-Key
        {"Authorization": f"Bearer {API_KEY}"},  # bearer token
    ],
)
def test_the_right_key_gets_through(anonymous: TestClient, headers: dict) -> None:
    answer = anonymous.post("/video/status", json={"requestId": ZERO_ID}, headers=headers)
    assert answer.status_code == 404, answer.text  # past the key check: no such job


# --- seed 000: the Celery SR service -------------------------------------------------------


def test_process_video_runs_to_success(client: TestClient, inputs: Path) -> None:
    body = {
        "video_path": str(inputs / "clip.mp4"),
        "down_sample": False,  # the seed's default, taken
        "model": "lanczos",
        "scale": 2,
        "callback_url": "http://example.invalid/",  # unknown to vidshard: ignored
    }
    answer = client.post("/process_video", json=body)
    assert answer.status_code == 202, answer.text
    submitted = answer.json()
    task_id = submitted["task_id"]
    assert submitted["status"] in ("PENDING", "STARTED", "SUCCESS")
    assert answer.headers["Location"] == f"/status/{task_id}"

    seen, view = _watch(lambda: _celery(client, task_id), lambda v: v["status"] in FINAL_CELERY)
    assert view["status"] == "SUCCESS", view
    assert set(seen) <= {"PENDING", "STARTED", "SUCCESS"}, seen
    assert view["progress"] == 1.0
    assert view["error"] is None
    assert view["queue_position"] is None
    output = Path(view["result"]["output_path"])
    info = probe(output)
    assert (info.video.width, info.video.height, info.video.frame_count) == (128, 96, 24)
    download = client.get(view["result"]["video_url"])
    assert download.status_code == 200
    assert download.content == output.read_bytes()
    # A Celery client may send the id back as a dashed UUID.
    assert _celery(client, str(uuid.UUID(task_id))) == view
    # The same job through /v1.
    assert client.get(f"/v1/jobs/{task_id}").json()["state"] == "succeeded"


def test_down_sample_keeps_the_input_size(client: TestClient, inputs: Path) -> None:
    """The seed's only example: the input is shrunk by the scale first, so the output
    comes back at the input's own size, every frame kept."""
    body = {"video_path": str(inputs / "clip.mp4"), "down_sample": True}
    answer = client.post("/process_video", json=body)
    assert answer.status_code == 202, answer.text
    task_id = answer.json()["task_id"]
    _seen, view = _watch(lambda: _celery(client, task_id), lambda v: v["status"] in FINAL_CELERY)
    assert view["status"] == "SUCCESS", view
    info = probe(Path(view["result"]["output_path"]))
    assert (info.video.width, info.video.height, info.video.frame_count) == (64, 48, 24)
    assert client.get(f"/v1/jobs/{task_id}").json()["params"]["down_sample"] is True


@pytest.mark.parametrize(
    ("body", "where"),
    [
        ({}, "video_path"),  # no input
        ({"video_path": ""}, "video_path"),  # an empty path
        ({"video_path": "clip.mp4", "scale": 0}, "scale"),  # scale out of range
        ({"video_path": "clip.mp4", "priority": 101}, "priority"),  # priority out of range
        ({"video_path": "clip.mp4", "down_sample": "maybe"}, "down_sample"),  # not a bool
        ({"video_path": "rtsp://camera/stream"}, "video_path"),  # a stream: not supported
        ({"video_path": "missing.mp4"}, "not found"),  # inside the roots, but missing
    ],
)
def test_process_video_checks_its_body(
    client: TestClient, body: dict[str, Any], where: str
) -> None:
    before = _job_count(client)
    answer = client.post("/process_video", json=body)
    assert answer.status_code == 422, answer.text
    assert where in answer.json()["detail"]
    assert _job_count(client) == before


# --- seed 002: the video-generation service --------------------------------------------------


@pytest.mark.parametrize("input_field", ["video_path", "input"])  # seed name, vidshard name
def test_video_submit_runs_to_success(client: TestClient, inputs: Path, input_field: str) -> None:
    body = {"task": "upscale", input_field: "clip.mp4", "params": PARAMS, "priority": 5}
    answer = client.post("/video/submit", json=body)
    assert answer.status_code == 202, answer.text
    request_id = answer.json()["requestId"]
    assert len(request_id) == 32 and int(request_id, 16) >= 0

    seen, view = _watch(
        lambda: _generation(client, request_id), lambda v: v["status"] in FINAL_GENERATION
    )
    assert view["status"] == "Succeed", view
    assert set(seen) <= {"InQueue", "InProgress", "Succeed"}, seen
    assert view["reason"] is None
    assert view["progress"] == 1.0
    assert view["queue_position"] is None
    assert view["created_at"] <= view["updated_at"] <= time.time()
    results = view["results"]
    # As the seed's service answered: /videos/<id>.mp4, and a path relative to the
    # server's output folder (never an absolute server path)
    assert results["video_url"] == f"/videos/{request_id}.mp4"
    assert results["video_path"] == f"{request_id}/clip-x2.mp4"
    download = client.get(results["video_url"])
    assert download.status_code == 200
    assert download.headers["content-type"] == "video/mp4"
    outputs = Path(client.app.state.settings.outputs_dir)  # type: ignore[attr-defined]
    assert download.content == (outputs / results["video_path"]).read_bytes()
    assert probe(outputs / results["video_path"]).video.width == 128
    assert download.content == client.get(f"/v1/jobs/{request_id}/result").content
    assert client.get(f"/v1/jobs/{request_id}").json()["priority"] == 5

    # Finished: cancelling it is a conflict, and it stays succeeded.
    answer = client.post("/video/cancel", json={"requestId": request_id})
    assert answer.status_code == 409, answer.text
    assert answer.json()["error"] == "Conflict"
    assert _generation(client, request_id)["status"] == "Succeed"


SEED_GENERATION_BODY = {
    "prompt": "A white cat wearing sunglasses sits on a surfboard at the beach",
    "image_url": "https://example.com/input.jpg",
    "image_size": "1280*720",
    "num_frames": 81,
    "guidance_scale": 3.0,
    "infer_steps": 30,
    "seed": 42,
}
SEED_LOCAL_BODY = {
    **{k: v for k, v in SEED_GENERATION_BODY.items() if k != "image_url"},
    "image_path": "clip.mp4",
}


@pytest.mark.parametrize(
    ("body", "where"),
    [
        # the seed's own example (its image a server path: tests resolve no host names),
        # on a server with no generation model set
        (SEED_LOCAL_BODY, "default_generate_model"),
        ({"prompt": "a swan on a lake"}, "exactly one of image_url"),  # no image
        ({"image_url": "https://picsum.photos/1280/720"}, "prompt"),  # no prompt
        ({**SEED_LOCAL_BODY, "cfg_size": 4}, "cfg_size"),
        ({**SEED_LOCAL_BODY, "num_frames": 80}, "num_frames"),  # in the seed's words
        ({"task": "generate", "video_path": "clip.mp4"}, "params.prompt"),  # the envelope
    ],
)
def test_generation_requests_that_cannot_run(
    client: TestClient, body: dict[str, Any], where: str
) -> None:
    before = _job_count(client)
    answer = client.post("/video/submit", json=body)
    assert answer.status_code == 422, answer.text
    assert where in json.dumps(answer.json()["detail"])
    assert _job_count(client) == before


@pytest.mark.parametrize(
    ("body", "where"),
    [
        ({"task": "upscale", "params": PARAMS}, "exactly one"),  # no input
        ({"video_path": "clip.mp4", "input": "clip.mp4"}, "exactly one"),  # two inputs
        ({"task": "paint", "video_path": "clip.mp4"}, "task"),  # a task vidshard lacks
        ({"video_path": "clip.mp4", "params": {"crf": 99}}, "params.crf"),  # out of range
        ({"video_path": "clip.mp4", "params": {"colour": 1}}, "params.colour"),  # unknown
        ({"video_path": "clip.mp4", "priority": -101}, "priority"),  # out of range
        ({"video_path": "clip.mp4", "extra": 1}, "extra"),  # unknown field
        ({"upload_id": "f" * 32}, "no upload"),  # well formed, but no such upload
    ],
)
def test_video_submit_checks_its_body(client: TestClient, body: dict[str, Any], where: str) -> None:
    before = _job_count(client)
    answer = client.post("/video/submit", json=body)
    assert answer.status_code in (404, 422), answer.text
    assert where in answer.json()["detail"]
    assert _job_count(client) == before


@pytest.mark.parametrize("path", ["/video/status", "/video/cancel"])
@pytest.mark.parametrize(
    "request_id",
    [
        "a1b2c3d4e5f6g7h8i9j0k1l2m3n4o5p6",  # the seed's example: not hex
        "0" * 31,  # too short
        "0" * 33,  # too long
        "",  # empty
        "../" + "0" * 32,  # a path
    ],
)
def test_request_ids_of_another_shape_are_404(
    client: TestClient, path: str, request_id: str
) -> None:
    """As the old service: an id that names no request is not found, whatever its shape."""
    answer = client.post(path, json={"requestId": request_id})
    assert answer.status_code == 404, answer.text
    assert answer.json()["error"] == "NotFound"


@pytest.mark.parametrize("path", ["/video/status", "/video/cancel"])
@pytest.mark.parametrize(
    "body",
    [
        {"requestId": 12345},  # not a string
        {},  # missing
        {"requestId": ZERO_ID, "extra": 1},  # an unknown field
    ],
)
def test_malformed_bodies_are_422(client: TestClient, path: str, body: Any) -> None:
    answer = client.post(path, json=body)
    assert answer.status_code == 422, answer.text
    assert answer.json()["error"] == "InvalidRequest"


@pytest.mark.parametrize(
    "name",
    [
        f"{ZERO_ID}.mp4",  # a well formed name, no such request
        "a1b2c3d4e5f6g7h8i9j0k1l2m3n4o5p6.mp4",  # not hex
        ZERO_ID,  # no suffix
        "..%2Fjobs.db",  # a path
    ],
)
def test_videos_of_no_request_are_404(client: TestClient, name: str) -> None:
    assert client.get(f"/videos/{name}").status_code == 404


def test_a_video_is_served_only_once_it_succeeded(client: TestClient, inputs: Path) -> None:
    answer = client.post("/video/submit", json={"video_path": "clip.mp4", "params": PARAMS})
    request_id = answer.json()["requestId"]
    _seen, view = _watch(
        lambda: _generation(client, request_id), lambda v: v["status"] in FINAL_GENERATION
    )
    assert view["status"] == "Succeed", view
    assert client.get(f"/videos/{request_id}.mp4").status_code == 200
    assert client.get(f"/videos/{request_id}.mkv").status_code == 404  # not its file


def test_health_carries_the_generation_services_fields(client: TestClient) -> None:
    health = client.get("/health").json()
    assert health["status"] == "healthy"
    assert health["rank"] == 0 and health["pipeline_rank"] == 0
    assert health["pipeline_world_size"] == health["slots_total"] == 1
    assert health["total_tasks"] == _job_count(client)


# --- both --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", f"/status/{ZERO_ID}", None),  # a well-formed id
        ("GET", "/status/not-a-task", None),  # anything else: also just unknown
        ("POST", "/video/status", {"requestId": ZERO_ID}),
        ("POST", "/video/cancel", {"requestId": ZERO_ID}),
    ],
)
def test_unknown_ids_are_404(client: TestClient, method: str, path: str, body: Any) -> None:
    answer = client.request(method, path, json=body)
    assert answer.status_code == 404, answer.text
    error = answer.json()
    assert error["error"] == "NotFound" and error["detail"]


@pytest.mark.parametrize(
    ("path", "field"),
    [("/process_video", "video_path"), ("/video/submit", "video_path"), ("/video/submit", "input")],
)
@pytest.mark.parametrize("relative", [False, True])  # absolute, or climbing out with '..'
def test_paths_outside_the_input_roots_are_403(
    client: TestClient, inputs: Path, outside: Path, path: str, field: str, relative: bool
) -> None:
    given = f"../{outside.parent.name}/{outside.name}" if relative else str(outside)
    before = _job_count(client)
    answer = client.post(path, json={field: given})
    assert answer.status_code == 403, answer.text
    assert answer.json()["error"] == "AccessDenied"
    assert _job_count(client) == before


@pytest.mark.parametrize(
    ("path", "body", "id_field"),
    [
        ("/process_video", {"video_path": "clip.mp4", "scale": 2}, "task_id"),
        ("/video/submit", {"video_path": "clip.mp4", "params": PARAMS}, "requestId"),
    ],
)
def test_idempotency_key_returns_the_first_job(
    idle: TestClient, path: str, body: dict[str, Any], id_field: str
) -> None:
    headers = {"Idempotency-Key": f"compat-{uuid.uuid4().hex}"}
    first = idle.post(path, json=body, headers=headers)
    again = idle.post(path, json=body, headers=headers)
    assert (first.status_code, again.status_code) == (202, 200), (first.text, again.text)
    assert first.json()[id_field] == again.json()[id_field]
    other = idle.post(path, json=body)  # no key: a new job
    assert other.status_code == 202
    assert other.json()[id_field] != first.json()[id_field]
    for job_id in (first.json()[id_field], other.json()[id_field]):
        idle.post(f"/v1/jobs/{job_id}/cancel")  # 409 if it has already finished: fine


def test_states_of_queued_and_running_jobs_and_cancel(idle: TestClient) -> None:
    """One running slot: a long /v1 job runs, a /process_video job and a /video/submit job
    wait behind it; each is seen the same through both old APIs, then cancelled."""
    client = idle
    long_job = {"input": "long.mp4", "params": {"model": "lanczos", "scale": 2}}
    answer = client.post("/v1/jobs", json=long_job)
    assert answer.status_code == 202, answer.text
    running = answer.json()["id"]
    _until_running(client, running)

    answer = client.post("/process_video", json={"video_path": "clip.mp4", "scale": 2})
    assert answer.status_code == 202, answer.text
    assert answer.json()["status"] == "PENDING"
    first = answer.json()["task_id"]
    answer = client.post("/video/submit", json={"video_path": "clip.mp4", "params": PARAMS})
    assert answer.status_code == 202, answer.text
    second = answer.json()["requestId"]

    # The /v1 job, through both old APIs.
    celery = _celery(client, running)
    assert (celery["status"], celery["queue_position"], celery["result"]) == ("STARTED", None, None)
    assert 0.0 <= celery["progress"] < 1.0
    assert _generation(client, running)["status"] == "InProgress"
    # The queued ones, in order, through both.
    for position, job_id in enumerate((first, second), start=1):
        celery = _celery(client, job_id)
        assert (celery["status"], celery["queue_position"]) == ("PENDING", position), celery
        assert (celery["progress"], celery["result"], celery["error"]) == (0.0, None, None)
        view = _generation(client, job_id)
        assert (view["status"], view["queue_position"]) == ("InQueue", position), view
        assert (view["results"], view["reason"], view["progress"]) == (None, None, 0.0)

    # Cancel the queued ones while the long job still holds the slot.
    for job_id in (first, second):
        answer = client.post("/video/cancel", json={"requestId": job_id})
        assert answer.status_code == 200, answer.text
        assert answer.json() == {"status": "Cancelled"}
    assert _celery(client, running)["status"] == "STARTED"  # they were queued all along
    for job_id in (first, second):
        assert _celery(client, job_id)["status"] == "REVOKED"
        assert _generation(client, job_id)["status"] == "Cancelled"
        assert client.get(f"/v1/jobs/{job_id}").json()["state"] == "cancelled"
        # Finished now: a second cancel is a conflict.
        again = client.post("/video/cancel", json={"requestId": job_id.upper()})
        assert again.status_code == 409, again.text
        assert again.json()["error"] == "Conflict"

    # The running one stops within a batch.
    answer = client.post("/video/cancel", json={"requestId": running})
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"status": "Cancelled"}
    assert _celery(client, running)["status"] == "REVOKED"
    assert client.get(f"/v1/jobs/{running}/result").status_code == 409
