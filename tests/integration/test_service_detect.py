"""Detect and track as job types of the service: the JSONL is the result, an annotated
video is a second result file; model files only from the server's model dirs."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from tests.helpers import need_package
from tests.squares import FAKE_DETECTOR, write_squares

from vidshard.detection.jsonl import validate_record
from vidshard.media import probe
from vidshard.service.app import create_app
from vidshard.service.settings import load_settings


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    root = tmp_path_factory.mktemp("service-detect")
    clips, models = root / "clips", root / "models"
    clips.mkdir()
    models.mkdir()
    (models / "squares.py").write_text(FAKE_DETECTOR)
    write_squares(clips / "squares.mp4", 60)
    settings = load_settings(
        data_dir=root / "data", devices="cpu:2", input_roots=[clips], model_dirs=[models]
    )
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def finished(client: TestClient, job_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        job: dict[str, Any] = client.get(f"/v1/jobs/{job_id}").json()
        if job["state"] in ("succeeded", "failed", "cancelled"):
            return job
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} did not finish")


def test_a_track_job_gives_jsonl_and_an_annotated_video(client: TestClient) -> None:
    body = {
        "task": "track",
        "input": "squares.mp4",
        "params": {"model": "squares.py:Squares", "annotate": True},
    }
    response = client.post("/v1/jobs", json=body)
    assert response.status_code == 202, response.text
    job = finished(client, response.json()["id"])
    assert job["state"] == "succeeded", job
    assert job["frames_done"] == job["frames_total"] == 60 and job["progress"] == 1.0
    result = job["result"]
    assert result["path"].endswith("squares.jsonl")
    lines = client.get(result["url"]).text.splitlines()
    (record,) = [json.loads(line) for line in lines]
    validate_record(record)
    assert len(record["frames"]) == 60
    assert all(o["track_id"] is not None for f in record["frames"][2:] for o in f["objects"])
    names = {f["name"] for f in result["files"]}
    assert names == {"squares.jsonl", "squares.annotated.mp4"}
    video = client.get(result["url"], params={"name": "squares.annotated.mp4"})
    assert video.status_code == 200 and video.headers["content-type"] == "video/mp4"
    saved = Path(result["path"]).parent / "squares.annotated.mp4"
    assert video.content == saved.read_bytes() and probe(saved).video.frame_count == 60


def test_a_detect_job_and_its_checks(client: TestClient) -> None:
    body = {"task": "detect", "input": "squares.mp4", "params": {"model": "squares.py:Squares"}}
    job = finished(client, client.post("/v1/jobs", json=body).json()["id"])
    assert job["state"] == "succeeded"
    (record,) = [json.loads(line) for line in client.get(job["result"]["url"]).text.splitlines()]
    assert all(o["track_id"] is None for f in record["frames"] for o in f["objects"])
    for params, status, words in [
        ({"model": "squares.py:Squares", "tracker": "sam2"}, 422, "only for task 'track'"),
        ({"model": "/etc/evil.py:Evil"}, 403, "model_dirs"),
        ({"model": "missing.pt"}, 422, "model not found"),
        ({"model": "squares.py:Squares", "conf": 2}, 422, "params.conf"),
        ({"model": "squares.py:Squares", "imgsz": 100}, 422, "params.imgsz"),
        ({}, 422, "params.model"),
    ]:
        response = client.post("/v1/jobs", json={**body, "params": params})
        assert response.status_code == status, (params, response.text)
        assert words in response.json()["detail"], response.text
    bad_name = client.get(job["result"]["url"], params={"name": "../jobs.db"})
    assert bad_name.status_code == 422


def test_a_config_ultralytics_ships_is_a_model_the_service_takes(client: TestClient) -> None:
    """``yolo11n.yaml`` is no file of the client's: Ultralytics' own config, random
    weights. It is accepted though it is not in model_dirs; a path to a .yaml is not."""
    need_package("ultralytics")
    body = {"task": "detect", "input": "squares.mp4", "params": {"model": "yolo11n.yaml"}}
    response = client.post("/v1/jobs", json=body)
    assert response.status_code == 202, response.text
    client.post(f"/v1/jobs/{response.json()['id']}/cancel")  # running it is another test's
    for model in ("/etc/yolo11n.yaml", "../yolo11n.yaml", "not-a-yolo-name.yaml"):
        refused = client.post("/v1/jobs", json={**body, "params": {"model": model}})
        assert refused.status_code in (403, 422), (model, refused.text)
