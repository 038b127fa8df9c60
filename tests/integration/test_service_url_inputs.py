"""URL inputs through a real ``vidshard serve`` (its own process) and a scripted HTTP
server on loopback: host rules at submit and on every redirect hop, the minimum rate,
the size limit, and a cancel that stops a download at once and lets the queue move on.

One server keeps the default host rules; the other allows 127.0.0.1 (only that address)
and has a short rate window, so a drip fails in seconds.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.clips import ClipSpec, write_clip
from tests.download_servers import ScriptedServer, body, drip, redirect
from tests.service_helpers import Server, running_server

FAST = {"model": "lanczos", "scale": 2, "preset": "ultrafast"}
FINAL = ("succeeded", "failed", "cancelled")
RATE_ENV = {
    "VIDSHARD_URL_ALLOWED_HOSTS": "127.0.0.1",
    "VIDSHARD_DOWNLOAD_MIN_BYTES_PER_S": "2000",
    "VIDSHARD_DOWNLOAD_RATE_WINDOW_S": "2",
    "VIDSHARD_MAX_UPLOAD_BYTES": str(100 * 2**20),
    "VIDSHARD_MAX_RUNNING_JOBS": "1",
}


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("download-clips")
    write_clip(folder / "small.mp4", ClipSpec(frames=12, size_wh=(64, 48)))
    return folder


@pytest.fixture(scope="module")
def default_server(tmp_path_factory: pytest.TempPathFactory, clips: Path) -> Iterator[Server]:
    data = tmp_path_factory.mktemp("download-default") / "data"
    with running_server(data, "--devices", "cpu:1", "--input-root", str(clips)) as server:
        yield server


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, clips: Path) -> Iterator[Server]:
    data = tmp_path_factory.mktemp("download-allowed") / "data"
    args = ("--devices", "cpu:1", "--input-root", str(clips))
    with running_server(data, *args, env=RATE_ENV) as running:
        yield running


@pytest.fixture
def origin() -> Iterator[ScriptedServer]:
    with ScriptedServer() as running:
        yield running


def post(server: Server, path: str, body: dict[str, Any] | None = None) -> httpx.Response:
    return httpx.post(f"{server.url}{path}", json=body, timeout=60)


def submit_url(server: Server, url: str) -> str:
    response = post(server, "/v1/jobs", {"input_url": url, "params": FAST})
    assert response.status_code == 202, response.text
    job_id: str = response.json()["id"]
    return job_id


def wait_for(server: Server, job_id: str, states: tuple[str, ...] = FINAL) -> dict[str, Any]:
    deadline = time.monotonic() + 90
    while True:
        job: dict[str, Any] = httpx.get(f"{server.url}/v1/jobs/{job_id}", timeout=30).json()
        if job["state"] in states:
            return job
        assert time.monotonic() < deadline, f"job {job_id} stuck: {job}"
        time.sleep(0.1)


def job_folder(server: Server, job_id: str) -> Path:
    return server.data_dir / "outputs" / job_id


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:{port}/small.mp4",  # the loopback the origin listens on
        "http://2130706433:{port}/small.mp4",  # the same, as one number
        "http://0x7f.1:{port}/small.mp4",
        "http://[::ffff:127.0.0.1]:{port}/small.mp4",
        "http://169.254.169.254/latest/meta-data/",
        "http://10.0.0.1/small.mp4",
    ],
)
def test_the_default_rules_refuse_internal_hosts_at_submit(
    default_server: Server, origin: ScriptedServer, url: str
) -> None:
    origin.routes["/small.mp4"] = body(b"never sent")
    response = post(default_server, "/v1/jobs", {"input_url": url.format(port=origin.port)})
    assert response.status_code == 403, response.text
    assert "url_allowed_hosts" in response.json()["detail"]
    assert origin.requests == []


def test_an_allowed_host_is_downloaded_through_its_redirects(
    server: Server, origin: ScriptedServer, clips: Path
) -> None:
    origin.routes["/start"] = redirect("/clips/small.mp4")
    origin.routes["/clips/small.mp4"] = body((clips / "small.mp4").read_bytes())
    done = wait_for(server, submit_url(server, origin.url("/start")))
    assert done["state"] == "succeeded", done
    assert [r.target for r in origin.requests] == ["/start", "/clips/small.mp4"]


def test_submit_refuses_what_the_allow_rule_does_not_name(server: Server) -> None:
    for url in ("http://127.0.0.2/a.mp4", "http://[::1]/a.mp4", "ftp://127.0.0.1/a.mp4"):
        response = post(server, "/v1/jobs", {"input_url": url})
        assert response.status_code == 403, (url, response.text)


@pytest.mark.parametrize(
    ("location", "words"),
    [
        ("ftp://127.0.0.1/small.mp4", "'ftp' is not allowed"),
        ("http://127.0.0.2:{port}/small.mp4", "127.0.0.2, a loopback address"),
        ("http://2130706434:{port}/small.mp4", "127.0.0.2, a loopback address"),
    ],
)
def test_a_redirect_to_a_refused_hop_fails_the_job(
    server: Server, origin: ScriptedServer, location: str, words: str
) -> None:
    with ScriptedServer("127.0.0.2") as refused:
        refused.routes["/small.mp4"] = body(b"never sent")
        origin.routes["/start"] = redirect(location.format(port=refused.port))
        job_id = submit_url(server, origin.url("/start"))
        failed = wait_for(server, job_id)
        assert refused.requests == []
    assert failed["state"] == "failed" and failed["error_type"] == "AccessDenied", failed
    assert f"redirect 1 from {origin.url('/start')}" in failed["error"]
    assert words in failed["error"]
    assert not job_folder(server, job_id).exists()


def test_a_slow_drip_fails_the_job_on_the_minimum_rate(
    server: Server, origin: ScriptedServer
) -> None:
    origin.routes["/drip.mp4"] = drip(10**6, 0.5)
    job_id = submit_url(server, origin.url("/drip.mp4"))
    failed = wait_for(server, job_id)
    assert failed["state"] == "failed" and failed["error_type"] == "InputError", failed
    assert "slower than 2000 bytes/s for 2 s" in failed["error"]
    assert not job_folder(server, job_id).exists()
    assert origin.requests[0].ended.wait(10)


def test_a_declared_length_over_the_limit_fails_the_job(
    server: Server, origin: ScriptedServer
) -> None:
    origin.routes["/huge.mp4"] = body(b"x" * 10, length=10**12)
    failed = wait_for(server, submit_url(server, origin.url("/huge.mp4")))
    assert failed["state"] == "failed" and failed["error_type"] == "TooLarge", failed
    assert "declares 1000000000000 bytes" in failed["error"]


def test_cancel_stops_a_download_and_the_queue_moves_on(
    server: Server, origin: ScriptedServer
) -> None:
    # fast enough for the rate rule, but 50 MB: it would run for many minutes
    origin.routes["/long.mp4"] = drip(50 * 2**20, 0.1, chunk_bytes=4000)
    downloading = submit_url(server, origin.url("/long.mp4"))
    queued = post(server, "/v1/jobs", {"input": "small.mp4", "params": FAST})
    assert queued.status_code == 202, queued.text  # behind it: one job runs at a time
    request = origin.wait_for_request("/long.mp4")
    assert wait_for(server, downloading, ("running",))["state"] == "running"
    assert job_folder(server, downloading).exists()  # the partial file is in there

    cancelled = post(server, f"/v1/jobs/{downloading}/cancel")
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["state"] == "cancelled"
    assert not job_folder(server, downloading).exists()
    assert request.ended.wait(10)  # the connection was closed
    assert wait_for(server, queued.json()["id"])["state"] == "succeeded"


def test_a_stop_ends_a_download_and_the_job_resumes_at_the_next_start(
    tmp_path: Path, clips: Path, origin: ScriptedServer
) -> None:
    """SIGTERM while a job downloads: the download ends at once (the server does not wait
    it out), the job is not cancelled, and the next server downloads it again and runs
    it to success."""
    origin.routes["/long.mp4"] = drip(50 * 2**20, 0.1, chunk_bytes=4000)
    args = ("--devices", "cpu:1", "--input-root", str(clips))
    data = tmp_path / "data"
    with running_server(data, *args, env=RATE_ENV) as first:
        job_id = submit_url(first, origin.url("/long.mp4"))
        request = origin.wait_for_request("/long.mp4")
        assert wait_for(first, job_id, ("running",))["state"] == "running"
        assert first.stop() == 0
        assert request.ended.wait(10)  # the connection was closed by the stop
        log = first.log.read_text()
        assert "interrupted by the stop" in log, log
    origin.routes["/long.mp4"] = body((clips / "small.mp4").read_bytes())
    with running_server(data, *args, env=RATE_ENV) as second:
        done = wait_for(second, job_id)
        assert done["state"] == "succeeded", done
        assert done["attempts"] == 2
