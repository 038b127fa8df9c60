"""A caller without a key is turned away before the server reads its body: an upload or
a job body gets 401 at once (a real server over loopback), never after the server has
received megabytes, and a malformed body without a key is 401, not 422."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from tests.service_helpers import Server, running_server

KEY = "gate-test-key"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("gate")
    (root / "clips").mkdir()
    args = ("--devices", "cpu:1", "--input-root", str(root / "clips"))
    with running_server(root / "data", *args, env={"VIDSHARD_API_KEY": KEY}) as up:
        yield up


def _headers_only(server: Server, path: str, extra: str = "") -> bytes:
    """Send a request's headers announcing a chunked body, send none of the body, and
    return what the server answers (within a generous wait)."""
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(
            (
                f"POST {path} HTTP/1.1\r\nHost: {host}\r\n"
                "Content-Type: multipart/form-data; boundary=x\r\n"
                f"Transfer-Encoding: chunked\r\n{extra}\r\n"
            ).encode()
        )
        answer = b""
        while b"\r\n\r\n" not in answer:
            chunk = sock.recv(4096)
            if not chunk:
                break
            answer += chunk
        return answer


@pytest.mark.parametrize("path", ["/v1/uploads", "/v1/jobs", "/process_video", "/video/submit"])
def test_no_key_is_refused_before_the_body(server: Server, path: str) -> None:
    answer = _headers_only(server, path)
    assert answer.startswith(b"HTTP/1.1 401"), answer[:200]


def test_a_wrong_key_is_refused_before_the_body(server: Server) -> None:
    answer = _headers_only(server, "/v1/uploads", "X-API-Key: not-the-key\r\n")
    assert answer.startswith(b"HTTP/1.1 401"), answer[:200]


def test_with_the_key_the_body_is_read(server: Server) -> None:
    """The gate lets a keyed request through: the server waits for its body, and an
    empty upload form is then a 4xx of the route, not a 401."""
    response = httpx.post(
        f"{server.url}/v1/uploads", headers={"X-API-Key": KEY}, files={}, timeout=30
    )
    assert response.status_code == 422, response.text


@pytest.mark.parametrize(
    ("path", "body"),
    [("/v1/jobs", b"{not json"), ("/video/submit", b"[1, 2"), ("/v1/jobs", b'{"input": 1}')],
)
def test_a_malformed_body_without_a_key_is_401(server: Server, path: str, body: bytes) -> None:
    response = httpx.post(
        f"{server.url}{path}",
        content=body,
        headers={"Content-Type": "application/json"},
        timeout=30,
    )
    assert response.status_code == 401, response.text
    assert "API key" in response.json()["detail"]


def test_health_needs_no_key(server: Server, tmp_path: Path) -> None:
    assert httpx.get(f"{server.url}/health", timeout=30).status_code == 200
