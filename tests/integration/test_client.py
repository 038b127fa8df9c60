"""``vidshard.Client`` against a real ``vidshard serve`` (uvicorn in its own process).

One server for the module (cpu:2, tiny clips, lanczos x2 ultrafast: a job takes about a
second); a slow stand-in model in the server's model dir keeps a job running long enough
to cancel. A second server with an API key checks authentication.
"""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import av
import pytest
from rich.console import Console
from tests.clips import ClipSpec, write_clip
from tests.helpers import slow_model_source
from tests.service_helpers import Server, free_port, running_server
from tests.squares import FAKE_DETECTOR, write_squares

import vidshard
from vidshard.client import (
    AuthError,
    Client,
    ConflictError,
    InvalidRequestError,
    Job,
    JobFailed,
    NotFoundError,
    ServiceError,
    ServiceUnreachable,
)
from vidshard.errors import Cancelled, InputError, OutputError

SLOW_MODEL = slow_model_source("Slow", 0.05)
FAST = {"model": "lanczos", "scale": 2, "preset": "ultrafast"}
FRAMES = 24
SIZE_WH = (64, 48)


@pytest.fixture(scope="module")
def dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("client")
    clips, models, local = root / "clips", root / "models", root / "local"
    for folder in (clips, models, local):
        folder.mkdir()
    (models / "slow.py").write_text(SLOW_MODEL)
    (models / "squares.py").write_text(FAKE_DETECTOR)
    write_squares(clips / "squares.mp4", 30)
    write_clip(clips / "small.mp4", ClipSpec(frames=FRAMES, size_wh=SIZE_WH))
    write_clip(clips / "long.mp4", ClipSpec(frames=200, size_wh=SIZE_WH, gop=10))
    # Local files, outside the server's input root: they can only be uploaded.
    write_clip(local / "mine.mp4", ClipSpec(frames=FRAMES, size_wh=SIZE_WH))
    (local / "notes.mp4").write_text("this is not a video\n" * 20)
    return {"root": root, "clips": clips, "models": models, "local": local}


@pytest.fixture(scope="module")
def server(dirs: dict[str, Path]) -> Iterator[Server]:
    args = ("--devices", "cpu:2", "--input-root", str(dirs["clips"]))
    args += ("--model-dir", str(dirs["models"]), "--max-running-jobs", "2")
    allow = {"VIDSHARD_URL_ALLOWED_HOSTS": "127.0.0.1"}  # a URL test downloads from loopback
    with running_server(dirs["root"] / "data", *args, env=allow) as running:
        yield running


@pytest.fixture
def client(server: Server) -> Iterator[Client]:
    with vidshard.Client(server.url) as client:
        yield client


def assert_video(path: Path, frames: int, size_wh: tuple[int, int]) -> None:
    with av.open(str(path)) as container:
        decoded = [f for f in container.decode(video=0)]
    assert len(decoded) == frames
    assert (decoded[0].width, decoded[0].height) == size_wh


def test_submit_path_wait_download(client: Client, tmp_path: Path) -> None:
    job = client.submit("small.mp4", **FAST)
    assert isinstance(job, Job) and re.fullmatch(r"[0-9a-f]{32}", job.id)
    assert job.state in ("queued", "running")
    done = client.wait(job.id, timeout=60, poll_s=0.1, progress=False)
    assert done.done and done.state == "succeeded" and done.progress == 1.0
    assert done.frames_done == FRAMES
    assert done.result_url == f"/v1/jobs/{job.id}/result"
    out = client.download(job.id, tmp_path / "out.mp4")
    assert out == tmp_path / "out.mp4"
    assert_video(out, FRAMES, (SIZE_WH[0] * 2, SIZE_WH[1] * 2))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.mp4"]  # no .partial left
    assert job.id in [j.id for j in client.jobs(state="succeeded", limit=500)]


def test_upload_then_run(client: Client, dirs: dict[str, Path], tmp_path: Path) -> None:
    # an explicit upload, then a job on its id
    upload_id = client.upload(dirs["local"] / "mine.mp4")
    assert re.fullmatch(r"[0-9a-f]{32}", upload_id)
    first = client.submit(upload_id=upload_id, **FAST)
    # the one-call form: submit(upload=PATH) uploads first
    second = client.submit(upload=dirs["local"] / "mine.mp4", output_name="mine.mkv", **FAST)
    for job in (first, second):
        assert client.wait(job, timeout=60, poll_s=0.1, progress=False).state == "succeeded"
    out = client.download(second, tmp_path / "mine-x2.mkv")
    assert_video(out, FRAMES, (SIZE_WH[0] * 2, SIZE_WH[1] * 2))


def test_cancel_running_job_then_wait_raises_cancelled(client: Client) -> None:
    job = client.submit("long.mp4", model="slow.py:Slow", preset="ultrafast")
    for _ in range(300):  # until it runs (up to 30 s)
        if client.status(job).state == "running":
            break
        time.sleep(0.1)
    assert client.status(job).state == "running"
    cancelled = client.cancel(job.id)
    assert cancelled.id == job.id
    with pytest.raises(Cancelled, match=job.id):
        client.wait(job.id, timeout=30, poll_s=0.1, progress=False)
    # a second cancel is refused: the job already ended
    with pytest.raises(ConflictError) as refused:
        client.cancel(job.id)
    assert refused.value.status == 409 and "cancelled" in refused.value.detail


def test_not_a_video_is_refused_with_the_servers_detail(
    client: Client, dirs: dict[str, Path]
) -> None:
    with pytest.raises(InvalidRequestError) as refused:
        client.submit(upload=dirs["local"] / "notes.mp4", **FAST)
    err = refused.value
    assert err.status == 422 and err.error == "InputError"
    assert err.detail and err.detail in str(err)
    assert "POST /v1/jobs" in str(err)


def test_failed_job_raises_job_failed_with_the_reason(client: Client) -> None:
    # nothing listens on this port: the download fails when the job runs, not at submit
    url = f"http://127.0.0.1:{free_port()}/clip.mp4"
    job = client.submit(input_url=url, **FAST)
    with pytest.raises(JobFailed) as failed:
        client.wait(job, timeout=30, poll_s=0.1, progress=False)
    assert failed.value.job.state == "failed"
    assert failed.value.job.error_type == "InputError"
    assert "cannot download" in str(failed.value)


@pytest.mark.parametrize(
    "call, error, status",
    [
        # a job that does not exist
        (lambda c: c.status("0" * 32), NotFoundError, 404),
        # a parameter out of range: the server's validation message comes through
        (lambda c: c.submit("small.mp4", model="lanczos", scale=99), InvalidRequestError, 422),
    ],
)
def test_http_errors_are_typed(client: Client, call, error, status) -> None:
    with pytest.raises(error) as raised:
        call(client)
    assert raised.value.status == status and raised.value.detail


@pytest.mark.parametrize(
    "call, needle",
    [
        # two inputs at once
        (lambda c, d: c.submit("small.mp4", input_url="http://x/y.mp4"), "exactly one"),
        # no input at all
        (lambda c, d: c.submit(), "exactly one"),
        # a local file that is not there
        (lambda c, d: c.upload(d["local"] / "missing.mp4"), "not found"),
        # a job id that would change the URL path
        (lambda c, d: c.status("../health"), "job id"),
    ],
)
def test_local_checks(client: Client, dirs: dict[str, Path], call, needle) -> None:
    with pytest.raises(InputError, match=needle):
        call(client, dirs)


def test_idempotency_key_repeat_returns_the_same_job(client: Client) -> None:
    first = client.submit("small.mp4", idempotency_key="client-test-1", **FAST)
    again = client.submit("small.mp4", idempotency_key="client-test-1", **FAST)
    assert again.id == first.id
    client.wait(first, timeout=60, poll_s=0.1, progress=False)


def test_download_refuses_a_directory_and_a_running_job(client: Client, tmp_path: Path) -> None:
    job = client.submit("small.mp4", **FAST)
    with pytest.raises(OutputError, match="directory"):
        client.download(job, tmp_path)
    client.wait(job, timeout=60, poll_s=0.1, progress=False)
    client.download(job, tmp_path / "ok.mp4")
    # a job with no result: 409, and nothing is left at the path
    queued = client.submit("long.mp4", model="slow.py:Slow", preset="ultrafast")
    with pytest.raises(ConflictError):
        client.download(queued, tmp_path / "none.mp4")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ok.mp4"]
    client.cancel(queued)


def test_wait_with_progress_renders(client: Client, capsys: pytest.CaptureFixture[str]) -> None:
    # a terminal console: the live bar is drawn and redrawn
    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=True, width=120)
    job = client.submit("small.mp4", **FAST)
    done = client.wait(job, timeout=60, poll_s=0.1, console=console)
    assert done.state == "succeeded"
    text = buffer.getvalue()
    assert f"job {job.id[:8]} succeeded" in text
    assert f"{FRAMES}/{FRAMES}" in text
    # the default console (stderr), as a script would get it
    job = client.submit("small.mp4", **FAST)
    client.wait(job, timeout=60, poll_s=0.1)
    assert "succeeded" in capsys.readouterr().err


def test_system_endpoints(client: Client) -> None:
    health = client.health()
    assert health["status"] == "healthy" and health["slots_alive"] == 2
    devices = client.devices()
    assert [d["device"] for d in devices] == ["cpu"]
    assert len(devices[0]["slots"]) == 2


def test_api_key(dirs: dict[str, Path]) -> None:
    with running_server(
        dirs["root"] / "keyed", "--devices", "cpu:1", env={"VIDSHARD_API_KEY": "k"}
    ) as keyed:
        for key in (None, "wrong"):
            with Client(keyed.url, api_key=key) as client, pytest.raises(AuthError) as denied:
                client.jobs()
            assert denied.value.status == 401
            assert "API key" in denied.value.detail
        with Client(keyed.url, api_key="k") as client:
            assert client.jobs() == []
            assert client.health()["status"] == "healthy"  # /health needs no key


def test_connection_refused_names_the_url() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with Client(url, timeout=5) as client, pytest.raises(ServiceUnreachable) as refused:
        client.status("0" * 32)
    assert isinstance(refused.value, ServiceError) and refused.value.status is None
    assert url in str(refused.value)


def test_import_vidshard_does_not_import_httpx() -> None:
    code = (
        "import sys, vidshard; assert 'httpx' not in sys.modules; "
        "assert 'Client' in vidshard.__all__; vidshard.Client; assert 'httpx' in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_a_track_job_and_its_annotated_video(client: Client, tmp_path: Path) -> None:
    job = client.submit("squares.mp4", task="track", model="squares.py:Squares", annotate=True)
    done = client.wait(job, progress=False)
    records = client.download(done, tmp_path / "tracks.jsonl").read_text().splitlines()
    (record,) = [json.loads(line) for line in records]
    assert len(record["frames"]) == 30
    video = client.download(done, tmp_path / "drawn.mp4", name="squares.annotated.mp4")
    assert_video(video, 30, (160, 96))
