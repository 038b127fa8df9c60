"""Every error answer of the service has one shape, ``{"error", "detail"}``, FastAPI's
own answers (unreadable bodies, unknown routes, wrong methods) included, and a detail
never echoes a client's megabytes back."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from vidshard.service.app import create_app
from vidshard.service.settings import load_settings


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    root = tmp_path_factory.mktemp("errors")
    (root / "clips").mkdir()
    settings = load_settings(data_dir=root / "data", input_roots=[root / "clips"], devices="cpu:1")
    with TestClient(create_app(settings)) as test_client:
        yield test_client


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "error"),
    [
        ("POST", "/v1/jobs", "[" * 100_000 + "]" * 100_000, 400, "InvalidRequest"),  # too deep
        ("POST", "/v1/jobs", '{"priority": ' + "9" * 5000 + "}", 400, "InvalidRequest"),
        ("POST", "/video/submit", '{"a": ' * 10_000 + "1" + "}" * 10_000, 400, "InvalidRequest"),
        ("GET", "/no/such/route", None, 404, "NotFound"),
        ("DELETE", "/v1/jobs", None, 405, "MethodNotAllowed"),
        ("GET", "/v1/jobs/" + "a" * 5000, None, 404, "NotFound"),
    ],
    ids=["deep-json", "huge-int", "deep-compat", "no-route", "wrong-method", "long-id"],
)
def test_errors_have_one_shape(
    client: TestClient, method: str, path: str, body: str | None, status: int, error: str
) -> None:
    response = client.request(
        method, path, content=body, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == status, response.text
    answer = response.json()
    assert answer["error"] == error, answer
    assert isinstance(answer["detail"], str) and len(answer["detail"]) < 300, answer


def test_the_data_dir_is_not_in_an_error(client: TestClient, tmp_path: Path) -> None:
    answer = client.get("/v1/jobs/" + "0" * 32).json()
    assert answer == {"error": "NotFound", "detail": "no job " + "0" * 32}
