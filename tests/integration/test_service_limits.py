"""Bodies over their limit are 413 on a real server, whether they declare a length or come
chunked, JSON or upload, and nothing of a refused upload stays on the server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from tests.service_helpers import Server, running_server

UPLOAD_LIMIT = 64 * 1024
JSON_LIMIT = 4 * 1024


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("limits")
    (root / "clips").mkdir()
    env = {
        "VIDSHARD_MAX_UPLOAD_BYTES": str(UPLOAD_LIMIT),
        "VIDSHARD_MAX_REQUEST_BYTES": str(JSON_LIMIT),
    }
    args = ("--devices", "cpu:1", "--input-root", str(root / "clips"))
    with running_server(root / "data", *args, env=env) as up:
        yield up


def _multipart(size: int, *, chunked: bool) -> tuple[dict[str, str], bytes | Iterator[bytes]]:
    head = (
        b'--zz\r\nContent-Disposition: form-data; name="file"; filename="big.mp4"\r\n'
        b"Content-Type: video/mp4\r\n\r\n"
    )
    tail = b"\r\n--zz--\r\n"
    headers = {"Content-Type": "multipart/form-data; boundary=zz"}
    if not chunked:
        return headers, head + b"x" * size + tail

    def chunks() -> Iterator[bytes]:
        yield head
        for _ in range(size // 65536):
            yield b"x" * 65536
        yield b"x" * (size % 65536)
        yield tail

    return headers, chunks()


@pytest.mark.parametrize("chunked", [False, True], ids=["declared", "chunked"])
@pytest.mark.parametrize(
    "size",
    [
        4 * UPLOAD_LIMIT,  # over the upload limit: refused by the route as it copies
        (1 << 20) + 8 * UPLOAD_LIMIT,  # over the body limit too: refused while it arrives
    ],
    ids=["over-upload-limit", "over-body-limit"],
)
def test_an_upload_over_the_limit_is_413(server: Server, size: int, chunked: bool) -> None:
    headers, content = _multipart(size, chunked=chunked)
    response = httpx.post(f"{server.url}/v1/uploads", headers=headers, content=content, timeout=60)
    assert response.status_code == 413, response.text
    assert "limit" in response.json()["detail"]
    uploads = server.data_dir / "uploads"
    assert not uploads.exists() or not any(uploads.iterdir())  # nothing stays


@pytest.mark.parametrize("chunked", [False, True], ids=["declared", "chunked"])
def test_a_json_body_over_the_limit_is_413(server: Server, chunked: bool) -> None:
    body = b'{"input": "a.mp4", "pad": "' + b"x" * (2 * JSON_LIMIT) + b'"}'
    content: bytes | Iterator[bytes] = iter([body[:1000], body[1000:]]) if chunked else body
    response = httpx.post(
        f"{server.url}/v1/jobs",
        headers={"Content-Type": "application/json"},
        content=content,
        timeout=60,
    )
    assert response.status_code == 413, response.text


def test_an_upload_under_the_limit_is_taken(server: Server, tmp_path: Path) -> None:
    headers, content = _multipart(UPLOAD_LIMIT // 2, chunked=True)
    response = httpx.post(f"{server.url}/v1/uploads", headers=headers, content=content, timeout=60)
    assert response.status_code == 201, response.text
    assert response.json()["bytes"] == UPLOAD_LIMIT // 2
