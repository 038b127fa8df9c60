"""The service through a job store that cannot be used for a while, with a real pool:
a full disk refuses submits with 503 and Retry-After while /health says why, and both
recover by themselves when space returns; a database that refuses every write while a
job runs neither kills the job nor the dispatcher, loses neither its output nor its
final state, and the job is recorded once the database takes writes again.

The failures are SQLite's own, on demand (``PRAGMA max_page_count``: SQLITE_FULL,
"database or disk is full"; ``PRAGMA query_only``: every write refused), set on each
connection the store takes from its pool.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event
from tests.clips import ClipSpec, write_clip
from tests.helpers import slow_model_source

from vidshard.service import store_watch
from vidshard.service.app import create_app
from vidshard.service.settings import load_settings

ROOM = 2**31 - 2  # a max_page_count that is never reached
FAST = {"model": "lanczos", "scale": 2, "preset": "ultrafast"}
SLOW = {"model": "slow.py:Slow", "preset": "ultrafast", "segment_seconds": 0.5}


class Pragmas:
    def __init__(self, engine: Any, **values: object) -> None:
        self.values = dict(values)
        event.listen(engine, "checkout", self._apply)

    def _apply(self, dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
        cursor = dbapi_connection.cursor()
        for name, value in self.values.items():
            cursor.execute(f"PRAGMA {name} = {value}")
        cursor.close()


@pytest.fixture
def client(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    clips, models = tmp_path / "clips", tmp_path / "models"
    clips.mkdir()
    models.mkdir()
    (models / "slow.py").write_text(slow_model_source("Slow", 0.05))
    write_clip(clips / "small.mp4", ClipSpec(frames=24, size_wh=(64, 48)))
    write_clip(clips / "long.mp4", ClipSpec(frames=100, size_wh=(64, 48), gop=10))
    monkeypatch.setattr(store_watch, "PROBE_TTL_S", 0.0)  # /health probes on each call
    settings = load_settings(
        data_dir=tmp_path / "data", devices="cpu:1", input_roots=[clips], model_dirs=[models]
    )
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def pragmas(client: TestClient, **values: object) -> Pragmas:
    return Pragmas(client.app.state.service.store.engine, **values)  # type: ignore[attr-defined]


def wait_for(what: Callable[[], Any], timeout_s: float = 60) -> Any:
    deadline = time.monotonic() + timeout_s
    while not (found := what()):
        assert time.monotonic() < deadline, "it never happened"
        time.sleep(0.05)
    return found


def job(client: TestClient, job_id: str) -> dict[str, Any]:
    found: dict[str, Any] = client.get(f"/v1/jobs/{job_id}").json()
    return found


def test_a_full_disk_is_503_with_the_reason_and_recovers_by_itself(client: TestClient) -> None:
    full = pragmas(client, max_page_count=ROOM)
    assert client.get("/health").json()["store"] == "ok"
    full.values["max_page_count"] = 1  # no page more than the database has now
    for _ in range(1000):
        answer = client.post("/v1/jobs", json={"input": "small.mp4", "params": FAST})
        if answer.status_code != 202:
            break
    assert answer.status_code == 503, answer.text
    assert answer.json()["error"] == "StoreUnavailable"
    assert "disk is full" in answer.json()["detail"]
    assert int(answer.headers["retry-after"]) > 0
    listed = client.get("/v1/jobs", params={"limit": 500})
    assert listed.status_code == 200  # reads go on
    health = client.get("/health")
    assert health.status_code == 503 and health.json()["store"] == "disk full"
    assert client.get("/ready").status_code == 503
    full.values["max_page_count"] = ROOM  # space is back: no restart
    again = client.post("/v1/jobs", json={"input": "small.mp4", "params": FAST})
    assert again.status_code == 202, again.text
    assert client.get("/health").status_code == 200
    done = wait_for(lambda: (j := job(client, again.json()["id"]))["state"] == "succeeded" and j)
    assert done["attempts"] == 1
    total = client.get("/v1/jobs", params={"limit": 500}).json()["total"]
    assert total == listed.json()["total"] + 1  # the refused submit left nothing behind


def test_a_store_refusing_writes_mid_job_loses_neither_the_output_nor_the_state(
    client: TestClient,
) -> None:
    read_only = pragmas(client, query_only=0)
    started = client.post("/v1/jobs", json={"input": "long.mp4", "params": SLOW}).json()
    job_id = started["id"]
    wait_for(lambda: job(client, job_id)["frames_done"] > 0)
    read_only.values["query_only"] = 1  # progress writes and the final write now fail
    service = client.app.state.service  # type: ignore[attr-defined]
    # The job runs on and finishes; its final state waits for the store.
    wait_for(lambda: service.store_watch.waiting() == {job_id: "succeeded"}, timeout_s=120)
    waiting = job(client, job_id)
    assert waiting["state"] == "running"  # what the store still says
    health = client.get("/health")
    assert health.status_code == 503 and health.json()["store"] == "read-only"
    refused = client.post("/v1/jobs", json={"input": "small.mp4", "params": FAST})
    assert refused.status_code == 503 and "read-only" in refused.json()["detail"]
    output = Path(service.settings.outputs_dir / job_id)
    assert [p.suffix for p in output.iterdir() if p.is_file()] == [".mp4"]  # kept
    read_only.values["query_only"] = 0  # the store is back
    done = wait_for(lambda: (j := job(client, job_id))["state"] == "succeeded" and j)
    assert done["attempts"] == 1 and done["frames_done"] == done["frames_total"] == 100
    record = service.store.get(job_id)
    assert record.finished_at < record.updated_at  # when it finished, written later
    assert Path(done["result"]["path"]).stat().st_size > 0
    # The dispatcher lived through it: a new job runs.
    after = client.post("/v1/jobs", json={"input": "small.mp4", "params": FAST}).json()
    assert wait_for(lambda: job(client, after["id"])["state"] in ("succeeded", "failed")) and (
        job(client, after["id"])["state"] == "succeeded"
    )
    assert client.get("/health").status_code == 200
