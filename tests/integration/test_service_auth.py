"""Several named keys against a real ``vidshard serve``: each key sees, cancels and
downloads only its own jobs and uploads (404 for the others, on /v1 and the old services'
routes), admin keys see all, a non-admin key is never shown a server path, and the API
docs need a key, open with the docs cookie, and load their scripts from this server.

The keys come from the TOML example of docs/service.md (so the example is run), plus one
more non-admin key and the older ``VIDSHARD_API_KEY``.
"""

from __future__ import annotations

import functools
import http.server
import json
import os
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.clips import ClipSpec, write_clip
from tests.helpers import slow_model_source
from tests.service_helpers import Server, running_server

DOCS = Path(__file__).resolve().parents[2] / "docs" / "service.md"
FARM = "r-2f9c..."  # render-farm, from the docs' example: not an admin
OPS = "o-81aa..."  # ops, from the docs' example: an admin
STUDIO = "studio-key-2"  # another non-admin key
LEGACY = "legacy-key"  # VIDSHARD_API_KEY: an admin named api_key
FAST = {"model": "lanczos", "scale": 2, "preset": "ultrafast"}
SLOW = {"model": "slow.py:Slow", "preset": "ultrafast", "segment_seconds": 0.5}
FINAL = ("succeeded", "failed", "cancelled")
WAIT_S = 60.0


def docs_keys_example() -> str:
    """The ``[serve.api_keys...]`` TOML block of docs/service.md."""
    blocks = re.findall(r"```toml\n(.*?)```", DOCS.read_text(), re.S)
    found = [block for block in blocks if "[serve.api_keys." in block]
    assert len(found) == 1, "docs/service.md has no (or several) api_keys examples"
    return found[0]


@pytest.fixture(scope="module")
def dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("auth")
    clips, models, web = root / "clips", root / "models", root / "web"
    for folder in (clips, models, web, clips / "sub"):
        folder.mkdir()
    write_clip(clips / "small.mp4", ClipSpec(frames=12, size_wh=(64, 48)))
    write_clip(clips / "sub" / "deep.mp4", ClipSpec(frames=12, size_wh=(64, 48)))
    write_clip(clips / "long.mp4", ClipSpec(frames=200, size_wh=(64, 48), gop=10))
    (clips / "notes.mp4").write_text("not a video")
    (web / "bad.mp4").write_text("not a video either")
    (models / "slow.py").write_text(slow_model_source("Slow", 0.2))
    config = root / "vidshard.toml"
    config.write_text(f'{docs_keys_example()}\n[serve.api_keys.studio]\nkey = "{STUDIO}"\n')
    return {"root": root, "clips": clips, "models": models, "web": web, "config": config}


@pytest.fixture(scope="module")
def server(dirs: dict[str, Path]) -> Iterator[Server]:
    args = ("--devices", "cpu:2", "--input-root", str(dirs["clips"]))
    args += ("--model-dir", str(dirs["models"]), "--config", str(dirs["config"]))
    args += ("--max-running-jobs", "2")
    env = {"VIDSHARD_API_KEY": LEGACY, "VIDSHARD_URL_ALLOWED_HOSTS": "127.0.0.1"}
    with running_server(dirs["root"] / "data", *args, env=env) as up:
        yield up


def client(server: Server, key: str | None) -> httpx.Client:
    headers = {"X-API-Key": key} if key is not None else {}
    return httpx.Client(base_url=server.url, headers=headers, timeout=30)


@pytest.fixture(scope="module")
def farm(server: Server) -> Iterator[httpx.Client]:
    with client(server, FARM) as c:
        yield c


@pytest.fixture(scope="module")
def studio(server: Server) -> Iterator[httpx.Client]:
    with client(server, STUDIO) as c:
        yield c


@pytest.fixture(scope="module")
def ops(server: Server) -> Iterator[httpx.Client]:
    with client(server, OPS) as c:
        yield c


def submit(c: httpx.Client, **body: Any) -> dict[str, Any]:
    body.setdefault("params", FAST)
    response = c.post("/v1/jobs", json=body)
    assert response.status_code == 202, response.text
    job: dict[str, Any] = response.json()
    return job


def wait(c: httpx.Client, job_id: str, states: tuple[str, ...] = FINAL) -> dict[str, Any]:
    deadline = time.monotonic() + WAIT_S
    while True:
        job: dict[str, Any] = c.get(f"/v1/jobs/{job_id}").json()
        if job["state"] in states:
            return job
        assert time.monotonic() < deadline, f"job {job_id} is still {job['state']}"
        time.sleep(0.1)


def slots_running(c: httpx.Client, job_id: str) -> list[dict[str, Any]]:
    """The slots ``c`` sees, once one of them runs ``job_id``."""
    deadline = time.monotonic() + WAIT_S
    while True:
        slots: list[dict[str, Any]] = [s for d in c.get("/v1/devices").json() for s in d["slots"]]
        if job_id in {s["job"] for s in slots}:
            return slots
        assert time.monotonic() < deadline, f"no slot ran job {job_id}: {slots}"
        time.sleep(0.1)


def not_found(job_id: str) -> dict[str, str]:
    return {"error": "NotFound", "detail": f"no job {job_id}"}


# --- ownership -------------------------------------------------------------------------


def test_a_key_sees_and_cancels_only_its_own_jobs(
    server: Server, farm: httpx.Client, studio: httpx.Client, ops: httpx.Client
) -> None:
    mine = wait(farm, submit(farm, input="small.mp4")["id"])
    assert mine["state"] == "succeeded", mine
    theirs = submit(studio, input="long.mp4", params=SLOW)
    wait(studio, theirs["id"], ("running",))
    job_ids = {mine["id"], theirs["id"]}
    made_up = "f" * 32
    try:
        # another key's job answers exactly as a job that does not exist
        for c, job_id in ((studio, mine["id"]), (farm, theirs["id"]), (farm, made_up)):
            for response in (
                c.get(f"/v1/jobs/{job_id}"),
                c.post(f"/v1/jobs/{job_id}/cancel"),
                c.get(f"/v1/jobs/{job_id}/result"),
                c.get(f"/v1/jobs/{job_id}/result", params={"name": "small-x2.mp4"}),
                c.get(f"/status/{job_id}"),
                c.post("/video/status", json={"requestId": job_id}),
                c.post("/video/cancel", json={"requestId": job_id}),
            ):
                assert response.status_code == 404, (response.request.url, response.text)
                assert response.json() == not_found(job_id)
        assert studio.get(f"/v1/jobs/{theirs['id']}").json()["state"] == "running"  # not cancelled
        # each listing holds (and counts) its own jobs only
        for c, own in ((farm, mine["id"]), (studio, theirs["id"])):
            listed = c.get("/v1/jobs").json()
            assert [j["id"] for j in listed["jobs"]] == [own] and listed["total"] == 1
            assert c.get("/v1/jobs", params={"state": "running"}).json()["total"] == (
                1 if own == theirs["id"] else 0
            )
        # the owner reads and downloads its job; admins (named or the older key) see all
        assert farm.get(f"/v1/jobs/{mine['id']}/result").status_code == 200
        assert farm.get(f"/status/{mine['id']}").json()["status"] == "SUCCESS"
        with client(server, LEGACY) as legacy:
            for admin in (ops, legacy):
                listed = admin.get("/v1/jobs").json()
                assert job_ids <= {j["id"] for j in listed["jobs"]} and listed["total"] >= 2
                assert admin.get(f"/v1/jobs/{mine['id']}/result").status_code == 200
        # devices: the busy slot's job shows to its owner and admins only, pids to admins
        slots = slots_running(studio, theirs["id"])
        assert {s["pid"] for s in slots} == {None}
        others = [s for d in farm.get("/v1/devices").json() for s in d["slots"]]
        assert {s["job"] for s in others} == {None} and {s["model"] for s in others} == {None}
        admin_slots = [s for d in ops.get("/v1/devices").json() for s in d["slots"]]
        assert theirs["id"] in {s["job"] for s in admin_slots}
        assert any(s["pid"] for s in admin_slots)
        assert "vidshard_jobs" in farm.get("/metrics").text  # any key reads the counts
        # an admin cancels anyone's job; then the owner sees it cancelled
        assert ops.post(f"/v1/jobs/{theirs['id']}/cancel").status_code == 200
        assert wait(studio, theirs["id"])["state"] == "cancelled"
    finally:
        ops.post(f"/v1/jobs/{theirs['id']}/cancel")


def test_the_old_services_routes_submit_as_the_key(
    farm: httpx.Client, studio: httpx.Client
) -> None:
    task = farm.post("/process_video", json={"video_path": "small.mp4", "scale": 2})
    assert task.status_code == 202, task.text
    task_id = task.json()["task_id"]
    video = studio.post("/video/submit", json={"video_path": "small.mp4", "params": FAST})
    request_id = video.json()["requestId"]
    assert studio.get(f"/status/{task_id}").status_code == 404
    assert farm.post("/video/status", json={"requestId": request_id}).status_code == 404
    assert task_id in {j["id"] for j in farm.get("/v1/jobs").json()["jobs"]}
    assert request_id in {j["id"] for j in studio.get("/v1/jobs").json()["jobs"]}
    wait(farm, task_id)
    wait(studio, request_id)


def test_an_upload_belongs_to_its_key(
    dirs: dict[str, Path], farm: httpx.Client, studio: httpx.Client, ops: httpx.Client
) -> None:
    data = (dirs["clips"] / "small.mp4").read_bytes()
    upload = farm.post("/v1/uploads", files={"file": ("mine.mp4", data, "video/mp4")})
    assert upload.status_code == 201, upload.text
    upload_id = upload.json()["upload_id"]
    refused = studio.post("/v1/jobs", json={"upload_id": upload_id, "params": FAST})
    unknown = studio.post("/v1/jobs", json={"upload_id": "e" * 32, "params": FAST})
    assert refused.status_code == unknown.status_code == 404
    assert refused.json() == {"error": "NotFound", "detail": f"no upload {upload_id}"}
    compat = studio.post("/video/submit", json={"upload_id": upload_id, "params": FAST})
    assert compat.status_code == 404
    for c in (farm, ops):  # its owner, and an admin, may use it
        assert wait(c, submit(c, upload_id=upload_id)["id"])["state"] == "succeeded"
    # an upload that is no video is named as the client knows it, even to an admin
    bad = ops.post("/v1/uploads", files={"file": ("notes.mp4", b"nope", "video/mp4")}).json()
    refused = ops.post("/v1/jobs", json={"upload_id": bad["upload_id"], "params": FAST})
    assert refused.status_code == 422
    assert refused.json()["detail"].startswith("upload notes.mp4: not a media file")


def test_idempotency_keys_are_per_key(farm: httpx.Client, studio: httpx.Client) -> None:
    header = {"Idempotency-Key": "nightly-batch-7"}
    first = farm.post("/v1/jobs", json={"input": "small.mp4", "params": FAST}, headers=header)
    other = studio.post("/v1/jobs", json={"input": "small.mp4", "params": FAST}, headers=header)
    assert first.status_code == other.status_code == 202
    assert first.json()["id"] != other.json()["id"]
    again = farm.post("/v1/jobs", json={"input": "small.mp4", "params": FAST}, headers=header)
    assert again.status_code == 200 and again.json()["id"] == first.json()["id"]
    celery = studio.post("/process_video", json={"video_path": "small.mp4"}, headers=header)
    assert celery.status_code == 200 and celery.json()["task_id"] == other.json()["id"]
    for c, job_id in ((farm, first.json()["id"]), (studio, other.json()["id"])):
        wait(c, job_id)


# --- no server paths for non-admins ----------------------------------------------------


class Recorder:
    """Every answer a client got, to scan afterwards."""

    def __init__(self) -> None:
        self.bodies: list[tuple[str, int, str]] = []

    def __call__(self, response: httpx.Response) -> None:
        response.read()
        self.bodies.append((str(response.request.url), response.status_code, response.text))


@pytest.fixture
def web(dirs: dict[str, Path]) -> Iterator[str]:
    """A loopback web server with a file that downloads fine but is no video."""
    handler = functools.partial(QuietHandler, directory=str(dirs["web"]))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *_args: Any) -> None:
        pass


def non_admin_session(c: httpx.Client, dirs: dict[str, Path], web: str) -> dict[str, str]:
    """Drive every kind of answer a key gets: views, results, errors at submit and at
    run time, the old services' views, devices. Returns the ids made."""
    deep = wait(c, submit(c, input="sub/deep.mp4")["id"])
    assert deep["state"] == "succeeded", deep
    assert deep["input"] == "sub/deep.mp4" and deep["result"]["path"] == "deep-x2.mp4"
    assert c.get(deep["result"]["url"]).status_code == 200
    absolute = submit(c, input=str(dirs["clips"] / "small.mp4"))  # named by its full path
    assert absolute["input"] == "small.mp4"
    url_job = wait(c, submit(c, input_url=f"{web}/bad.mp4")["id"])
    assert url_job["state"] == "failed" and "input-bad.mp4" in url_job["error"], url_job
    slow = submit(c, input="long.mp4", params=SLOW)
    wait(c, slow["id"], ("running",))
    c.get("/v1/devices")  # while its slot runs a model file of the model dir
    assert c.post(f"/v1/jobs/{slow['id']}/cancel").status_code == 200
    bad_upload = c.post("/v1/uploads", files={"file": ("notes.mp4", b"nope", "video/mp4")})
    refused = c.post("/v1/jobs", json={"upload_id": bad_upload.json()["upload_id"]})
    assert refused.status_code == 422 and "upload notes.mp4" in refused.json()["detail"]
    for body, status in (
        ({"input": "notes.mp4"}, 422),  # not a video: probed at submit
        ({"input": "sub"}, 422),  # a folder
        ({"input": "small.mp4", "params": {"model": "missing.pth"}}, 422),  # no such model file
        ({"input": "small.mp4", "params": {"model": "/etc/x.pth"}}, 403),  # outside model_dirs
        ({"input": "../outside.mp4"}, 403),
    ):
        answer = c.post("/v1/jobs", json=body)
        assert answer.status_code == status, (body, answer.text)
    celery = c.post("/process_video", json={"video_path": "small.mp4", "scale": 2}).json()
    wait(c, celery["task_id"])
    c.get(f"/status/{celery['task_id']}")
    c.get(f"/status/{url_job['id']}")
    c.post("/video/status", json={"requestId": celery["task_id"]})
    c.post("/video/status", json={"requestId": url_job["id"]})
    c.post("/video/cancel", json={"requestId": celery["task_id"]})  # 409: finished
    c.get(f"/v1/jobs/{deep['id']}/result", params={"name": "../jobs.db"})
    c.get(f"/v1/jobs/{deep['id']}/result", params={"name": "gone.mp4"})
    c.get("/v1/jobs", params={"limit": 500})
    c.get("/ready")
    return {"deep": deep["id"], "url": url_job["id"]}


def server_paths(dirs: dict[str, Path], server: Server) -> set[str]:
    paths = {dirs["clips"], dirs["models"], server.data_dir, server.data_dir / "outputs"}
    return {str(p) for p in paths} | {os.path.realpath(p) for p in paths}


def test_a_non_admin_key_is_shown_no_server_path(
    server: Server, dirs: dict[str, Path], web: str, ops: httpx.Client
) -> None:
    recorder = Recorder()
    with httpx.Client(
        base_url=server.url,
        headers={"X-API-Key": STUDIO},
        timeout=30,
        event_hooks={"response": [recorder]},
    ) as c:
        made = non_admin_session(c, dirs, web)
    statuses = {status for _url, status, _text in recorder.bodies}
    assert {200, 202, 201, 403, 404, 409, 422} <= statuses, statuses  # every kind was seen
    forbidden = server_paths(dirs, server)
    for url, status, text in recorder.bodies:
        leaked = [path for path in forbidden if path in text]
        assert not leaked, f"{url} ({status}) showed {leaked}: {text[:500]}"
    # an admin sees the same jobs with their paths (the scan above can fail)
    deep = ops.get(f"/v1/jobs/{made['deep']}").json()
    assert deep["input"] == str(dirs["clips"] / "sub" / "deep.mp4")
    assert deep["result"]["path"].startswith(str(server.data_dir))
    assert str(server.data_dir) in ops.get(f"/v1/jobs/{made['url']}").json()["error"]


# --- the API docs ------------------------------------------------------------------------

LOCAL_URL = re.compile(r"""(?:src|href|spec-url)=["']([^"']+)["']|url: ?'([^']+)'""")


def test_the_docs_need_a_key_and_open_with_the_cookie(server: Server) -> None:
    with client(server, None) as anonymous:
        for page in ("/docs", "/redoc"):
            form = anonymous.get(page)
            assert form.status_code == 401 and form.headers["content-type"].startswith("text/html")
            assert 'action="/docs/login"' in form.text and "<script" not in form.text
        assert anonymous.get("/openapi.json").status_code == 401
        wrong = anonymous.post("/docs/login", data={"api_key": "wrong", "next": "/docs"})
        assert wrong.status_code == 401 and "did not accept" in wrong.text
        assert "set-cookie" not in wrong.headers
        login = anonymous.post("/docs/login", data={"api_key": FARM, "next": "/redoc"})
        assert login.status_code == 303 and login.headers["location"] == "/redoc"
        cookie = login.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie and FARM not in cookie
        for page in ("/docs", "/redoc", "/openapi.json"):
            assert anonymous.get(page).status_code == 200, page  # the cookie is kept
        # the cookie opens the docs alone: the API still wants the key
        assert anonymous.get("/v1/jobs").status_code == 401
        assert anonymous.post("/v1/jobs", json={"input": "small.mp4"}).status_code == 401
        assert anonymous.post("/docs/logout").status_code == 204
        assert anonymous.get("/docs").status_code == 401
        # a forged cookie, and a login that would send the browser elsewhere
        name, expiry, mac = login.cookies["vidshard_docs"].split(":")
        assert name == "render-farm"
        for forged in (f"ops:{expiry}:{mac}", f"{name}:{int(expiry) + 1}:{mac}", FARM):
            cookie_header = {"Cookie": f"vidshard_docs={forged}"}
            assert anonymous.get("/openapi.json", headers=cookie_header).status_code == 401
        away = anonymous.post("/docs/login", data={"api_key": FARM, "next": "https://x.example"})
        assert away.headers["location"] == "/docs"
    with client(server, STUDIO) as keyed:  # a script logs in with its header instead
        assert keyed.get("/docs").status_code == 200
        assert keyed.post("/docs/login").status_code == 204 and keyed.cookies["vidshard_docs"]
    with client(server, "wrong") as wrong_key:
        assert wrong_key.post("/docs/login").status_code == 401
    bearer = httpx.get(f"{server.url}/openapi.json", headers={"Authorization": f"Bearer {OPS}"})
    schemes = bearer.json()["components"]["securitySchemes"]
    assert {s["type"] for s in schemes.values()} == {"apiKey", "http"}  # "Authorize" in /docs


def test_the_docs_load_only_this_servers_assets(farm: httpx.Client) -> None:
    for page, wanted in (("/docs", {"javascript", "css"}), ("/redoc", {"javascript"})):
        html = farm.get(page)
        assert html.status_code == 200
        urls = {a or b for a, b in LOCAL_URL.findall(html.text)}
        assert urls and all(u.startswith("/") and not u.startswith("//") for u in urls), urls
        kinds = set()
        for url in urls:
            answer = farm.get(url)
            assert answer.status_code == 200, url
            kind = answer.headers["content-type"]
            kinds |= {k for k in ("javascript", "css", "json", "svg") if k in kind}
            if "javascript" in kind:
                assert len(answer.content) > 100_000, url  # the real bundle, not a stub
        assert wanted <= kinds, (page, kinds)
        assert "fonts.googleapis" not in html.text and "cdn" not in html.text.lower()
    assert farm.get("/docs/assets/unknown.js").status_code == 404
    assert farm.get("/docs/assets/..%2F..%2Fjobs.db").status_code == 404


@settings(deadline=None, max_examples=40, derandomize=True, suppress_health_check=list(HealthCheck))
@given(text=st.text(max_size=300))
def test_the_docs_routes_outside_the_schema_never_answer_5xx(server: Server, text: str) -> None:
    asset = httpx.get(f"{server.url}/docs/assets/{quote(text, safe='')}", timeout=30)
    assert asset.status_code in (200, 404), asset.text[:300]
    for form in ({"api_key": text, "next": text}, {"next": text}, {"api_key": [text, text]}):
        login = httpx.post(f"{server.url}/docs/login", data=form, timeout=30)
        assert login.status_code in (303, 401), (form, login.status_code, login.text[:300])
    raw = httpx.post(f"{server.url}/docs/login", content=text.encode(), timeout=30)
    assert raw.status_code in (401, 422), raw.text[:300]
    header = {"Cookie": f"vidshard_docs={quote(text)}"}
    assert httpx.get(f"{server.url}/docs", headers=header, timeout=30).status_code == 401


def test_public_docs_open_the_docs_but_not_the_api(tmp_path: Path) -> None:
    env = {"VIDSHARD_API_KEY": LEGACY, "VIDSHARD_PUBLIC_DOCS": "true"}
    with running_server(tmp_path / "data", "--devices", "cpu:1", env=env) as public:
        for page in ("/docs", "/redoc", "/openapi.json"):
            assert httpx.get(f"{public.url}{page}").status_code == 200, page
        assert httpx.get(f"{public.url}/v1/jobs").status_code == 401
    with running_server(tmp_path / "open", "--devices", "cpu:1") as open_server:  # no keys
        assert httpx.get(f"{open_server.url}/docs").status_code == 200
        login = httpx.post(f"{open_server.url}/docs/login", data={"api_key": "x"})
        assert login.status_code == 303 and "set-cookie" not in login.headers


def test_settings_errors_never_show_a_key(tmp_path: Path) -> None:
    """``vidshard serve`` with a bad key table: exit 2, the problem named, no secret."""
    import subprocess
    import sys

    config = tmp_path / "bad.toml"
    config.write_text(
        '[serve.api_keys.alice]\nkey = "s3cr3t-one"\n\n[serve.api_keys.bob]\nkey = "s3cr3t-one"\n'
    )
    env = {**os.environ, "VIDSHARD_API_KEYS": ""}
    done = subprocess.run(
        [sys.executable, "-m", "vidshard", "serve", "--config", str(config)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert done.returncode == 2
    assert "bob and alice have the same key" in done.stderr + done.stdout
    assert "s3cr3t" not in done.stderr + done.stdout
    bad_json = {**env, "VIDSHARD_API_KEYS": json.dumps({"alice": {"key": "s3cr3t-two"}})[:-2]}
    done = subprocess.run(
        [sys.executable, "-m", "vidshard", "serve"],
        capture_output=True,
        text=True,
        env=bad_json,
        timeout=120,
        check=False,
    )
    assert done.returncode == 2 and "api_keys" in done.stderr + done.stdout
    assert "s3cr3t" not in done.stderr + done.stdout


# --- in a browser, with no network -----------------------------------------------------


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """Headless Chromium (Debian's), as the dashboard tests use it; this machine has no
    network, so a page that needs a CDN stays blank here."""
    if os.environ.get("VIDSHARD_SKIP_BROWSER_TESTS") == "1":
        pytest.skip("VIDSHARD_SKIP_BROWSER_TESTS=1")
    chromium, driver_path = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
    if not (chromium.is_file() and driver_path.is_file()):
        pytest.fail(
            "the docs browser test needs headless Chromium: apt-get install chromium "
            "chromium-driver, or set VIDSHARD_SKIP_BROWSER_TESTS=1 to skip it"
        )
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(chromium)
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--no-first-run",
        "--window-size=1400,1000",
        f"--user-data-dir={tmp_path_factory.mktemp('chromium-docs')}",
    ):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(str(driver_path)), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def until(driver: Any, condition: Any, message: str) -> Any:
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(
        driver, WAIT_S, poll_frequency=0.2, ignored_exceptions=[StaleElementReferenceException]
    ).until(condition, message)


def css(driver: Any, selector: str) -> Any:
    from selenium.webdriver.common.by import By

    found = driver.find_elements(By.CSS_SELECTOR, selector)
    return found[0] if found else None


def swagger_rendered(driver: Any) -> None:
    until(
        driver,
        lambda d: (t := css(d, ".swagger-ui .info .title")) and "vidshard" in t.text,
        "Swagger UI did not render",
    )
    until(driver, lambda d: len(d.find_elements("css selector", ".opblock")) > 5, "no operations")


def test_a_browser_opens_the_docs_with_a_key_and_no_network(browser: Any, server: Server) -> None:
    # the key form, then Swagger UI from this server's own scripts
    browser.get(f"{server.url}/docs")
    until(browser, lambda d: css(d, "#docs-login #api-key"), "no key form on /docs")
    css(browser, "#api-key").send_keys("wrong\n")
    until(browser, lambda d: "did not accept" in d.page_source, "a wrong key was taken")
    css(browser, "#api-key").send_keys(FARM + "\n")
    swagger_rendered(browser)
    browser.get(f"{server.url}/redoc")  # the cookie opens ReDoc too
    until(browser, lambda d: (h := css(d, "h1")) and "vidshard" in h.text, "no ReDoc")
    until(browser, lambda d: "/v1/jobs" in d.page_source, "ReDoc shows no operations")
    # the dashboard: once it has a key, its "API docs" link opens without asking
    browser.delete_all_cookies()
    browser.get(f"{server.url}/")
    browser.execute_script("localStorage.clear()")
    browser.get(f"{server.url}/")
    until(browser, lambda d: (f := css(d, "#auth")) and f.is_displayed(), "no dashboard key form")
    css(browser, "#api-key").send_keys(STUDIO + "\n")
    until(
        browser,
        lambda d: any(c["name"] == "vidshard_docs" for c in d.get_cookies()),
        "the dashboard did not open a docs session",
    )
    dashboard = browser.current_window_handle
    css(browser, "#docs-link").click()
    until(browser, lambda d: len(d.window_handles) == 2, "the docs link opened no tab")
    browser.switch_to.window(next(h for h in browser.window_handles if h != dashboard))
    try:
        swagger_rendered(browser)
    finally:
        browser.close()
        browser.switch_to.window(dashboard)
    css(browser, "#key-button").click()  # "Forget key" ends the docs session too
    css(browser, "#key-forget").click()
    until(
        browser,
        lambda d: not any(c["name"] == "vidshard_docs" for c in d.get_cookies()),
        "forgetting the key kept the docs cookie",
    )
