"""Whatever a client sends, a real ``vidshard serve`` never answers 5xx.

schemathesis reads the running server's /openapi.json and sends every operation valid
and invalid requests (boundary numbers, long and odd strings, NUL bytes, odd headers and
multipart bodies, and values from ODD_STRINGS / ODD_INTEGERS), with the API key. Each
job request is sent again with a real clip and model, and each job route again on a
succeeded job, so the checks behind the input (model files, output names, result files)
see the fuzzed values too.
Afterwards the server is still up, and no job it ran failed with an internal error.
Without the key, every operation but /health is 401.

Below the fuzzing, each 500 found is pinned by a named case (``BAD_REQUESTS``).
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import fastapi.routing
import httpx
import hypothesis.strategies as st
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from tests.clips import ClipSpec, write_clip
from tests.service_helpers import Server, running_server

from vidshard.service.settings import load_settings
from vidshard.service.store import JobStore

pytestmark = pytest.mark.slow

KEY = "fuzz-key"
AUTH = {"X-API-Key": KEY}
CLIP = "clip.mp4"
DETECTOR = "onebox.py:OneBox"
# Examples per operation in the fuzzing phase (the coverage phase adds its own boundary
# cases): about half a minute here, a couple of minutes at most on 2 loaded cores.
MAX_EXAMPLES = 100
# Operations that answer without a key; every other one is 401 without it.
PUBLIC = {("GET", "/health")}
# Routes left out of the schema on purpose (the dashboard page and its files): fuzzed
# by hand in test_routes_outside_the_schema_never_answer_5xx.
UNLISTED = {"/", "/static/{name}"}
FINAL = ("succeeded", "failed", "cancelled")
# Drawn in place of generated strings and integers (in the positive phase, only where the
# schema takes them): what a file system, a database or a URL parser chokes on.
ODD_STRINGS = [
    "a" * 300,  # one path component over NAME_MAX (255 bytes)
    "a" * 300 + ".mp4",
    "é" * 200 + ".mp4",  # under 255 characters, over 255 bytes
    "/".join(["éé"] * 1000),  # under 4096 characters, over PATH_MAX in bytes
    "\0",
    "a\0b.mp4",
    ".",
    "..",
    "../clip.mp4",
    "/",
    "~",
    "%00",
    "%2e%2e",
    CLIP,
    "lanczos",
    DETECTOR,
    "os:system",
    "a.py:",
    "http://[::1/x.mp4",
    "http://host:99999999999999999999/x.mp4",
    "http://xn--ls8h-.example/x.mp4",
    "file:///etc/passwd",
]
ODD_INTEGERS = [2**63 - 1, 2**63, 2**64, -(2**63), -(2**63) - 1, 2**31, -1, 0]

ONE_BOX = '''
import numpy as np
from vidshard.detection.types import Detections


class OneBox:
    """One "person" box in the middle of every frame."""

    name = "one-box"

    def load(self, device):
        pass

    def detect(self, frames):
        _, h, w, _ = frames.shape
        box = np.array([[w / 4, h / 4, 3 * w / 4, 3 * h / 4]], dtype=np.float32)
        one = Detections(boxes=box, scores=[0.9], class_ids=[0], class_names=("person",))
        return [one] * len(frames)
'''


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("fuzz")
    (root / "clips").mkdir()
    (root / "models").mkdir()
    write_clip(root / "clips" / CLIP, ClipSpec(frames=4, size_wh=(32, 24)))
    (root / "models" / "onebox.py").write_text(ONE_BOX)
    return root


def server_args(site: Path) -> list[str]:
    return [
        "--devices",
        "cpu:1",
        "--input-root",
        str(site / "clips"),
        "--model-dir",
        str(site / "models"),
        "--max-running-jobs",
        "1",
        "--job-ttl",
        "600",
    ]


@pytest.fixture(scope="module")
def server(site: Path) -> Iterator[Server]:
    env = {
        "VIDSHARD_API_KEY": KEY,
        "VIDSHARD_MAX_UPLOAD_BYTES": str(64 * 1024),  # fuzzed uploads stay small
        "VIDSHARD_LOG_LEVEL": "warning",
    }
    with running_server(site / "data", *server_args(site), env=env) as running:
        yield running


@pytest.fixture(scope="module")
def done_job(server: Server) -> str:
    """A succeeded job, so that its result routes (and ``?name=``) are fuzzed too."""
    response = httpx.post(
        f"{server.url}/v1/jobs",
        json={"input": CLIP, "params": {"preset": "ultrafast"}},
        headers=AUTH,
        timeout=60,
    )
    assert response.status_code == 202, response.text
    job_id: str = response.json()["id"]
    assert wait_final(server, job_id)["state"] == "succeeded"
    return job_id


def wait_final(server: Server, job_id: str, timeout_s: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        job: dict[str, Any] = httpx.get(
            f"{server.url}/v1/jobs/{job_id}", headers=AUTH, timeout=30
        ).json()
        if job["state"] in FINAL:
            return job
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} did not finish in {timeout_s} s: {job}")


def fuzz_config(server: Server, *, headers: dict[str, str], modes: str) -> schemathesis.Config:
    return schemathesis.Config.from_dict(
        {
            "base-url": server.url,
            "headers": headers,
            "request-timeout": 60,
            "suppress-health-check": ["too_slow", "filter_too_much", "data_too_large"],
            "generation": {
                "mode": modes,
                "max-examples": MAX_EXAMPLES,
                "deterministic": True,  # the same requests every run: no flakes
                "allow-x00": True,
                "dictionaries": {
                    "string": {"dictionary": "odd-strings", "probability": 0.3},
                    "integer": {"dictionary": "odd-integers", "probability": 0.3},
                },
            },
            "dictionaries": {
                "odd-strings": {"values": ODD_STRINGS},
                "odd-integers": {"values": ODD_INTEGERS},
            },
            # No links between operations: each is fuzzed on its own.
            "phases": {"stateful": {"enabled": False}},
        }
    )


def real_work_variants(path: str, body: Any, done_job: str) -> list[Any]:
    """Bodies to send besides the generated one: it with a real input (and a real model),
    so that the checks after the input (model files, output names, params) see the
    fuzzed values too; the generated input alone is refused before them."""
    if not isinstance(body, dict):
        return []
    if path in ("/v1/jobs", "/video/submit"):
        inputs = ("input", "upload_id", "input_url", "video_path")
        real = {k: v for k, v in body.items() if k not in inputs} | {"input": CLIP}
        params = real.get("params") if isinstance(real.get("params"), dict) else {}
        model = DETECTOR if real.get("task") in ("detect", "track") else "lanczos"
        return [real, real | {"params": params | {"model": model}}]
    if path == "/process_video":
        return [body | {"video_path": CLIP}]
    if path in ("/video/status", "/video/cancel"):
        return [body | {"requestId": done_job}]
    return []


@pytest.fixture(scope="module")
def keyed_schema(server: Server) -> schemathesis.BaseSchema:
    return schemathesis.openapi.from_url(
        f"{server.url}/openapi.json",
        config=fuzz_config(server, headers=AUTH, modes="all"),
        headers=AUTH,
        timeout=30,
    )


seen_statuses: Counter[tuple[str, int]] = Counter()
MODES = (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE)


def fuzz_every_operation(
    schema: schemathesis.BaseSchema,
    check: Callable[[schemathesis.Case], None],
    *,
    modes: tuple[schemathesis.GenerationMode, ...] = MODES,
    max_examples: int = MAX_EXAMPLES,
) -> None:
    """``check`` on generated requests of every operation of ``schema``, in each mode;
    one failure list at the end. (Driven by hypothesis here rather than schemathesis'
    pytest plugin, which does not follow every pytest release.)"""
    problems = []
    for result in schema.get_all_operations():
        operation = result.ok()
        for mode in modes:

            @settings(
                max_examples=max_examples,
                deadline=None,
                derandomize=True,  # the same requests every run: no flakes
                database=None,
                suppress_health_check=list(HealthCheck),
            )
            @given(case=operation.as_strategy(generation_mode=mode))
            def run(case: schemathesis.Case) -> None:
                check(case)

            try:
                run()
            except Unsatisfiable:  # nothing to make in that mode (no parameter to break)
                continue
            except AssertionError as exc:
                problems.append(f"{operation.label} ({mode.value}): {exc}")
    assert not problems, "\n\n".join(problems)


def test_no_request_gets_a_5xx(keyed_schema: schemathesis.BaseSchema, done_job: str) -> None:
    """Each generated request, then the same with real input, or on the succeeded job
    (whose result route reads files by name); none may get a 5xx."""

    def check(case: schemathesis.Case) -> None:
        path = case.operation.path
        bodies = real_work_variants(path, case.body, done_job)
        on_done_job = "job_id" in (case.path_parameters or {})
        for attempt in range(1 + len(bodies) + on_done_job):
            if 0 < attempt <= len(bodies):
                case.body = bodies[attempt - 1]
                # A repeated Idempotency-Key answers the first job, before any check.
                case.headers = {
                    k: v for k, v in (case.headers or {}).items() if k.lower() != "idempotency-key"
                }
            elif attempt > len(bodies):
                case.path_parameters = {**(case.path_parameters or {}), "job_id": done_job}
            response = case.call()
            seen_statuses[(case.operation.label, response.status_code)] += 1
            assert response.status_code < 500, (
                f"{case.operation.label} answered {response.status_code}: "
                f"{response.text[:500]}\nrequest: {case.as_curl_command()[:3000]}"
            )

    fuzz_every_operation(keyed_schema, check)
    assert len({label for label, _ in seen_statuses}) >= 10  # every operation was reached


def test_after_the_fuzzing_the_server_is_up_and_no_job_failed_inside(server: Server) -> None:
    """Runs after the fuzzing (same module, same server): /health answers, and each job
    the fuzzing queued that finished did so without an internal error."""
    if not seen_statuses:
        pytest.skip("checks what test_no_request_gets_a_5xx left; it did not run")
    assert any(status in (200, 201, 202) for _, status in seen_statuses), seen_statuses
    assert server.process.poll() is None, server.log.read_text()[-5000:]
    assert httpx.get(f"{server.url}/health", timeout=30).status_code == 200
    jobs = httpx.get(f"{server.url}/v1/jobs?limit=500", headers=AUTH, timeout=30).json()
    internal = [j for j in jobs["jobs"] if j["error_type"] == "InternalError"]
    assert not internal, json.dumps(internal, indent=1)[:5000]
    assert "Traceback" not in server.log.read_text(), server.log.read_text()[-5000:]


@pytest.fixture(scope="module")
def keyless_schema(server: Server) -> schemathesis.BaseSchema:
    return schemathesis.openapi.from_url(
        f"{server.url}/openapi.json",
        config=fuzz_config(server, headers={}, modes="positive"),
        headers=AUTH,  # the schema itself may need the key; the requests go without it
        timeout=30,
    )


def test_without_the_key_every_operation_but_health_is_401(
    keyless_schema: schemathesis.BaseSchema,
) -> None:
    def check(case: schemathesis.Case) -> None:
        case.headers = {k: v for k, v in (case.headers or {}).items() if k.lower() != "x-api-key"}
        response = case.call()
        assert response.status_code < 500, response.text[:500]
        if (case.operation.method.upper(), case.operation.path) not in PUBLIC:
            assert response.status_code == 401, (
                f"{case.operation.label} without a key: {response.status_code} "
                f"{response.text[:300]}"
            )

    fuzz_every_operation(keyless_schema, check, modes=MODES[:1], max_examples=5)


def test_every_route_is_in_the_schema_or_fuzzed_by_hand(tmp_path: Path) -> None:
    """A new route left out of /openapi.json would escape the fuzzing: it must be listed
    in UNLISTED (and fuzzed by hand below)."""
    from vidshard.service.app import create_app

    app = create_app(load_settings(data_dir=tmp_path, input_roots=[tmp_path]))
    docs = ("/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc")
    # The docs' own key form and assets are fuzzed in test_service_auth.py.
    docs += ("/docs/assets/{name}", "/docs/login", "/docs/logout")
    # FastAPI 0.165 keeps included routers lazily: walk their routes, not app.routes.
    walk = getattr(fastapi.routing, "iter_route_contexts", iter)
    routes = [
        (getattr(route, "path", ""), getattr(route, "include_in_schema", True))
        for route in walk(app.routes)
    ]
    assert {"/v1/jobs", "/health", "/"} <= {path for path, _ in routes}  # the walk sees them
    hidden = {path for path, listed in routes if not listed and path not in docs}
    assert hidden <= UNLISTED, f"routes outside the schema and not fuzzed: {hidden - UNLISTED}"


@settings(deadline=None, max_examples=60, derandomize=True, suppress_health_check=list(HealthCheck))
@given(name=st.text(max_size=300))
def test_routes_outside_the_schema_never_answer_5xx(server: Server, name: str) -> None:
    for path in (f"/static/{quote(name, safe='')}", f"/?{urlencode({'q': name})}"):
        response = httpx.get(f"{server.url}{path}", timeout=30)
        assert response.status_code < 500, (path, response.status_code, response.text[:300])


# --- each 500 found, by name (and what was accepted that should not have been) --------

LONG_NAME = "a" * 300 + ".mp4"  # one component over NAME_MAX (255 bytes)
LONG_PATH = "/".join(["éé"] * 1000) + ".mp4"  # 3003 characters, over PATH_MAX (4096 bytes)
WIDE_NAME = "é" * 200 + ".mp4"  # 204 characters, 404 bytes: too long only in bytes
DETECT = {"task": "detect", "input": CLIP}
TRACK = {"task": "track", "input": CLIP}

# (method, path, JSON body, status, the field the message names), by case id.
BAD_REQUESTS: dict[str, tuple[str, str, Any, int, str]] = {
    # Were 500s. Input paths the file system refuses: ENAMETOOLONG from stat.
    "input-300-char-name": ("POST", "/v1/jobs", {"input": LONG_NAME}, 422, "input path"),
    "input-path-over-4096-bytes": ("POST", "/v1/jobs", {"input": LONG_PATH}, 422, "input path"),
    "input-name-over-255-bytes": ("POST", "/v1/jobs", {"input": WIDE_NAME}, 422, "input path"),
    "celery-long-name": ("POST", "/process_video", {"video_path": LONG_NAME}, 422, "input path"),
    "celery-long-path": ("POST", "/process_video", {"video_path": LONG_PATH}, 422, "input path"),
    "generation-long-name": ("POST", "/video/submit", {"video_path": LONG_NAME}, 422, "input path"),
    # Were 500s. Model names: a NUL (ValueError from realpath), too long (OSError from stat).
    "model-nul": (
        "POST",
        "/v1/jobs",
        {"input": CLIP, "params": {"model": "lan\0czos"}},
        422,
        "params.model",
    ),
    # Was a 500: a .yaml name too long for a file name, checked for a local file first.
    "detect-yaml-long-name": (
        "POST",
        "/v1/jobs",
        {"task": "detect", "input": CLIP, "params": {"model": "x" * 300 + ".yaml"}},
        422,
        "params.model",
    ),
    # Was a 500 (found in CI): ``~user`` of a user that does not exist made pathlib raise.
    "model-unknown-home": (
        "POST",
        "/process_video",
        {"video_path": CLIP, "model": "~0"},
        422,
        "unknown model",
    ),
    "model-long-name": (
        "POST",
        "/v1/jobs",
        {"input": CLIP, "params": {"model": "x" * 300}},
        422,
        "params.model",
    ),
    "model-long-class-file": (
        "POST",
        "/v1/jobs",
        {"input": CLIP, "params": {"model": "a" * 300 + ".py:Cls"}},
        422,
        "params.model",
    ),
    "detect-model-nul": (
        "POST",
        "/v1/jobs",
        {**DETECT, "params": {"model": "yo\0lo.pt"}},
        422,
        "params.model",
    ),
    "detect-model-long": (
        "POST",
        "/v1/jobs",
        {**DETECT, "params": {"model": "y" * 300 + ".pt"}},
        422,
        "params.model",
    ),
    "track-sam2-nul": (
        "POST",
        "/v1/jobs",
        {**TRACK, "params": {"model": DETECTOR, "sam2": "s\0"}},
        422,
        "params.sam2",
    ),
    "celery-model-nul": (
        "POST",
        "/process_video",
        {"video_path": CLIP, "model": "\0"},
        422,
        "params.model",
    ),
    "generation-model-nul": (
        "POST",
        "/video/submit",
        {"input": CLIP, "params": {"model": "a\0"}},
        422,
        "params.model",
    ),
    # Were 500s. Integers past what SQLite and PostgreSQL hold: OverflowError in the driver.
    "offset-2**63": ("GET", "/v1/jobs?offset=9223372036854775808", None, 422, "offset"),
    "offset-2**64": ("GET", "/v1/jobs?offset=18446744073709551616", None, 422, "offset"),
    "offset-2**63-1-is-fine": ("GET", "/v1/jobs?offset=9223372036854775807", None, 200, ""),
    # Was a 500. Another output file by a name over 255 bytes: OSError from stat.
    "result-name-over-255-bytes": (
        "GET",
        "/v1/jobs/{done}/result?name=" + quote(WIDE_NAME),
        None,
        422,
        "name",
    ),
    # Were accepted, to fail in the job or never: now refused at once, naming the field.
    "track-sam2-long": (
        "POST",
        "/v1/jobs",
        {**TRACK, "params": {"model": DETECTOR, "sam2": "s" * 1000}},
        422,
        "params.sam2",
    ),
    "max-frames-2**63": (
        "POST",
        "/v1/jobs",
        {**DETECT, "params": {"model": DETECTOR, "max_frames": 2**63}},
        422,
        "max_frames",
    ),
    "result-name-nul": ("GET", "/v1/jobs/{done}/result?name=%00", None, 422, "name"),  # was 404
}


@pytest.mark.parametrize("case", list(BAD_REQUESTS))
def test_a_hostile_request_gets_a_clear_4xx(server: Server, done_job: str, case: str) -> None:
    method, path, body, status, field = BAD_REQUESTS[case]
    response = httpx.request(
        method, server.url + path.format(done=done_job), json=body, headers=AUTH, timeout=60
    )
    assert response.status_code == status, response.text
    if status >= 400:
        assert field in response.json()["detail"], response.text


def test_a_body_over_the_limit_without_a_length_is_413_not_400(server: Server) -> None:
    """A chunked body is cut at the limit: FastAPI saw that as an unreadable body (400)."""
    chunks = iter([b" " * (1 << 20)] * 3)  # 3 MiB of JSON whitespace, no Content-Length
    response = httpx.post(
        f"{server.url}/v1/jobs",
        content=chunks,
        headers={**AUTH, "Content-Type": "application/json"},
        timeout=60,
    )
    assert response.status_code == 413, response.text
    assert "limit" in response.json()["detail"]


@pytest.mark.parametrize(
    ("filename", "stored"),
    [
        ("\0.mp4", "upload.mp4"),  # only the extension survived the cleaning: kept, with a stem
        ("ééé.mp4", "upload.mp4"),
        ("a\0b.mp4", "ab.mp4"),
        ("....", "upload.mp4"),
        ("clip.mkv", "clip.mkv"),
    ],
)
def test_an_upload_keeps_its_extension_whatever_its_name(
    server: Server, filename: str, stored: str
) -> None:
    # By hand: a client library would escape the NUL before it reached the server.
    body = (
        b'--zz\r\nContent-Disposition: form-data; name="file"; filename="'
        + filename.encode()
        + b'"\r\nContent-Type: video/mp4\r\n\r\nnot a video\r\n--zz--\r\n'
    )
    response = httpx.post(
        f"{server.url}/v1/uploads",
        content=body,
        headers={**AUTH, "Content-Type": "multipart/form-data; boundary=zz"},
        timeout=60,
    )
    assert response.status_code == 201, response.text
    assert response.json()["filename"] == stored


def test_a_malformed_job_id_never_reaches_the_database(tmp_path: Path) -> None:
    """PostgreSQL refuses a NUL in a string (a 500 on GET /v1/jobs/%00): an id that is not
    32 hex digits is no job, without a query."""
    from sqlalchemy import event

    store = JobStore(f"sqlite:///{tmp_path / 'jobs.db'}")
    store.create_all()
    queries: list[Any] = []
    event.listen(store._engine, "before_cursor_execute", lambda *args: queries.append(args[3]))
    for job_id in ("\0", "x\0y", "a" * 5000, "..", "é", "0" * 31, "A" * 32):
        assert store.get(job_id) is None
    assert queries == []
    assert store.get("0" * 32) is None and len(queries) == 1  # a well-formed id is looked up
