"""Generation in the service: seed 002's client flow end to end (submit, status with
progress, the video at /videos/<id>.mp4), the generate task in /v1/jobs with an upload,
the loaded group kept for the next request, cancel mid-run, and refusals.

The tiny random Wan2.1 model (``gen_fixtures``) on a ``cpu:2`` pool; bounds are generous.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
from fastapi.testclient import TestClient

from gen_fixtures import test_image, tiny_wan_i2v
from helpers import same_video
from vidshard.service.app import create_app
from vidshard.service.settings import load_settings

pytest.importorskip("diffusers")

API_KEY = "k"
AUTH = {"X-API-Key": API_KEY}
WAIT_S = 180.0
FINAL = ("Succeed", "Failed", "Cancelled")
SMALL = {"image_size": "32*32", "num_frames": 5, "infer_steps": 2}


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    models = tmp_path_factory.mktemp("models")
    tiny_wan_i2v(models)
    inputs = tmp_path_factory.mktemp("inputs")
    test_image(inputs / "first.png", (40, 32))
    return {"models": models, "inputs": inputs, "data": tmp_path_factory.mktemp("data")}


@pytest.fixture(scope="module")
def client(folders: dict[str, Path]) -> Iterator[TestClient]:
    settings = load_settings(
        data_dir=folders["data"],
        devices="cpu:2",
        input_roots=[folders["inputs"]],
        model_dirs=[folders["models"]],
        default_generate_model="tiny-wan-i2v",
        max_running_jobs=1,
        api_key=API_KEY,
    )
    with TestClient(create_app(settings), headers=AUTH) as client:
        yield client


def status(client: TestClient, request_id: str) -> dict[str, Any]:
    answer = client.post("/video/status", json={"requestId": request_id})
    assert answer.status_code == 200, answer.text
    view: dict[str, Any] = answer.json()
    return view


def watch(read: Callable[[], dict[str, Any]], done: Callable[[dict[str, Any]], bool]) -> list:
    seen, deadline = [read()], time.monotonic() + WAIT_S
    while not done(seen[-1]):
        assert time.monotonic() < deadline, f"still {seen[-1]}"
        time.sleep(0.05)
        seen.append(read())
    return seen


def pixels(path: Path, data: bytes) -> np.ndarray:
    """The frames of an mp4 (16 fps, as Wan2.1 makes them)."""
    path.write_bytes(data)
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert stream.average_rate == 16
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(stream)])


def submit(client: TestClient, **body: Any) -> str:
    answer = client.post("/video/submit", json={"prompt": "a cat walks", **SMALL, **body})
    assert answer.status_code == 202, answer.text
    request_id: str = answer.json()["requestId"]
    return request_id


def test_the_seed_002_client_flow(client: TestClient, folders: dict[str, Path]) -> None:
    image = str(folders["inputs"] / "first.png")
    request_id = submit(client, image_path=image, seed=42, negative_prompt="blurry")
    seen = watch(lambda: status(client, request_id), lambda v: v["status"] in FINAL)
    final = seen[-1]
    assert final["status"] == "Succeed", final
    assert final["progress"] == 1.0 and final["reason"] is None
    progress = [v["progress"] for v in seen]
    assert progress == sorted(progress)  # never goes down
    assert {v["status"] for v in seen} <= {"InQueue", "InProgress", "Succeed"}
    video = client.get(final["results"]["video_url"])
    assert video.status_code == 200 and video.headers["content-type"] == "video/mp4"
    first = pixels(folders["data"] / "first.mp4", video.content)
    assert first.shape == (5, 32, 32, 3)
    job = client.get(f"/v1/jobs/{request_id}").json()
    assert job["task"] == "generate" and job["params"]["seed"] == 42

    # The same model and layout again: the group is still loaded (no load this time).
    again = submit(client, image_path=image, seed=42, negative_prompt="blurry")
    assert (
        watch(lambda: status(client, again), lambda v: v["status"] in FINAL)[-1]["status"]
        == "Succeed"
    )
    second = pixels(folders["data"] / "again.mp4", client.get(f"/videos/{again}.mp4").content)
    assert same_video(first, second)  # the same seed gives the same video
    groups = client.get("/v1/generation/groups").json()["groups"]
    assert [(g["requests"], g["ranks"], g["state"]) for g in groups] == [(2, 1, "idle")]


def test_a_generate_job_from_an_upload(client: TestClient, folders: dict[str, Path]) -> None:
    data = (folders["inputs"] / "first.png").read_bytes()
    upload = client.post("/v1/uploads", files={"file": ("mine.png", data, "image/png")})
    assert upload.status_code == 201, upload.text
    params = {"prompt": "a dog runs", "size": "32x32", "frames": 5, "steps": 1, "seed": 1}
    body = {"task": "generate", "upload_id": upload.json()["upload_id"], "params": params}
    answer = client.post("/v1/jobs", json=body)
    assert answer.status_code == 202, answer.text
    job_id = answer.json()["id"]
    view = watch(
        lambda: client.get(f"/v1/jobs/{job_id}").json(),
        lambda v: v["state"] in ("succeeded", "failed", "cancelled"),
    )[-1]
    assert view["state"] == "succeeded", view
    assert client.get(f"/v1/jobs/{job_id}/result").status_code == 200


def test_cancel_mid_run(client: TestClient, folders: dict[str, Path]) -> None:
    image = str(folders["inputs"] / "first.png")
    request_id = submit(client, image_path=image, infer_steps=400)
    watch(lambda: status(client, request_id), lambda v: v["progress"] > 0)
    answer = client.post("/video/cancel", json={"requestId": request_id})
    assert answer.status_code == 200, answer.text
    final = watch(lambda: status(client, request_id), lambda v: v["status"] in FINAL)[-1]
    assert final["status"] == "Cancelled" and final["progress"] < 1.0
    # the group is still usable
    after = submit(client, image_path=image)
    assert (
        watch(lambda: status(client, after), lambda v: v["status"] in FINAL)[-1]["status"]
        == "Succeed"
    )


@pytest.mark.parametrize(
    ("body", "where"),
    [
        ({"ulysses_size": 4}, "ulysses_size"),  # 4 does not divide the model's 2 heads
        ({"ulysses_size": 2, "cfg_size": 2}, "slot"),  # 4 ranks on a 2-slot pool
        ({"image_size": "33*32"}, "image_size"),
        ({"num_frames": 6}, "num_frames"),
        ({"image_path": "first.png", "model": "../elsewhere"}, "model"),
    ],
)
def test_requests_refused_at_submit(
    client: TestClient, folders: dict[str, Path], body: dict[str, Any], where: str
) -> None:
    before = client.get("/v1/jobs", params={"limit": 1}).json()["total"]
    full = {"prompt": "p", "image_path": str(folders["inputs"] / "first.png"), **SMALL, **body}
    answer = client.post("/video/submit", json=full)
    assert answer.status_code in (403, 422), answer.text
    assert where in answer.json()["detail"]
    assert client.get("/v1/jobs", params={"limit": 1}).json()["total"] == before


def test_a_video_is_not_an_image(client: TestClient, folders: dict[str, Path]) -> None:
    fake = folders["inputs"] / "clip.png"
    fake.write_bytes(b"\x00" * 64)
    answer = client.post("/video/submit", json={"prompt": "p", "image_path": str(fake)})
    assert answer.status_code == 422, answer.text
    assert "clip.png is not an image" in answer.json()["detail"]
