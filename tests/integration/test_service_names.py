"""Names a job is given are checked when it is submitted, not when it runs: an
``output_name`` that is no plain file name is refused at once (422), a model typo gets the
closest built-in name (422, not 403), and a downloaded input can never take the output's
name."""

from __future__ import annotations

import http.server
import threading
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from tests.clips import ClipSpec, write_clip

from vidshard.service.app import create_app
from vidshard.service.security import check_output_name
from vidshard.service.settings import load_settings

FAST = {"model": "lanczos", "scale": 2, "preset": "ultrafast"}


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("names")
    write_clip(folder / "clip.mp4", ClipSpec(frames=6, size_wh=(32, 24)))
    return folder


@pytest.fixture(scope="module")
def web(clips: Path) -> Iterator[str]:
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(clips))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory, clips: Path) -> Iterator[TestClient]:
    settings = load_settings(
        data_dir=tmp_path_factory.mktemp("data"),
        devices="cpu:1",
        input_roots=[clips],
        url_allowed_hosts=["127.0.0.1"],
    )
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def _wait(client: TestClient, job_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 120
    while True:
        job: dict[str, Any] = client.get(f"/v1/jobs/{job_id}").json()
        if job["state"] in ("succeeded", "failed", "cancelled") or time.monotonic() > deadline:
            return job
        time.sleep(0.05)


@pytest.mark.parametrize(
    ("name", "words"),
    [
        ("..mp4", "start with '.'"),  # only dots before the suffix
        (".mp4", "start with '.'"),  # a hidden file: never listed as a result
        (".hidden.mp4", "start with '.'"),
        ("sub/out.mp4", "plain file name"),  # a folder
        ("..\\out.mp4", "plain file name"),  # a Windows folder
        ("out.mp4\0.txt", "plain file name"),  # a NUL
        ("out", "expected a .mp4"),  # no suffix
        ("out.avi", "expected a .mp4"),  # a container the job does not write
        ("éé.mp4", "ASCII letters or digits"),  # nothing left once cleaned
        ("---.mp4", None),  # odd, but a name
    ],
)
def test_output_names_are_checked_at_submit(
    client: TestClient, name: str, words: str | None
) -> None:
    before = client.get("/v1/jobs", params={"limit": 1}).json()["total"]
    response = client.post(
        "/v1/jobs", json={"input": "clip.mp4", "params": FAST, "output_name": name}
    )
    if words is None:
        assert response.status_code == 202, response.text
        assert _wait(client, response.json()["id"])["state"] == "succeeded"
        return
    assert response.status_code == 422, response.text
    assert "output_name" in response.json()["detail"] and words in response.json()["detail"]
    assert client.get("/v1/jobs", params={"limit": 1}).json()["total"] == before


def test_a_cleaned_name_is_the_name_the_result_gets(client: TestClient) -> None:
    response = client.post(
        "/v1/jobs", json={"input": "clip.mp4", "params": FAST, "output_name": "my video.mp4"}
    )
    job = _wait(client, response.json()["id"])
    assert job["state"] == "succeeded", job
    assert Path(job["result"]["path"]).name == check_output_name("my video.mp4", (".mp4",))


def test_an_output_named_like_the_downloaded_input_runs(client: TestClient, web: str) -> None:
    """The download keeps its own (hidden) folder: an output_name equal to what the
    input is saved as, or to the URL's own name, cannot meet it."""
    for name in ("input-clip.mp4", "clip.mp4"):
        response = client.post(
            "/v1/jobs",
            json={"input_url": f"{web}/clip.mp4", "params": FAST, "output_name": name},
        )
        assert response.status_code == 202, response.text
        job = _wait(client, response.json()["id"])
        assert job["state"] == "succeeded", job
        assert [f["name"] for f in job["result"]["files"]] == [name]  # the input is not listed


@pytest.mark.parametrize(
    ("model", "status", "words"),
    [
        ("lanczoz", 422, "did you mean 'lanczos'?"),  # a typo of a built-in
        ("Bicubic", 422, "did you mean 'bicubic'?"),
        ("realesrgan", 422, "built-in (lanczos, bicubic, identity)"),  # no such name
        ("weights/model.pth", 403, "model_dirs"),  # a file: only from model_dirs
        ("/etc/passwd.py:X", 403, "model_dirs"),
    ],
)
def test_a_model_typo_names_the_closest_built_in(
    client: TestClient, model: str, status: int, words: str
) -> None:
    response = client.post("/v1/jobs", json={"input": "clip.mp4", "params": {"model": model}})
    assert response.status_code == status, response.text
    assert words in response.json()["detail"]
