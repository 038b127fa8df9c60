"""An input checked once and swapped afterwards is refused wherever it is opened: by the
service's runner for a job that waited in the queue (a real server over loopback), and by
the workers when the file changes after the coordinator's probe.

The swapped-in file lies outside the input root; nothing of it may be read, processed
or served.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.clips import ClipSpec, write_clip
from tests.helpers import slow_model_source
from tests.service_helpers import Server, running_server

import vidshard
from vidshard.errors import InputChanged

BLOCKER = {"model": "blocker.py:Blocker", "preset": "ultrafast", "segment_seconds": 0.5}
FAST = {"model": "lanczos", "scale": 2, "preset": "ultrafast"}

# A model whose load() swaps the job's source for a link to another file, once: the
# workers then open a path that no longer names the file the coordinator probed.
SWAPPER = """
import os
from vidshard.models import ModelSpec


class Swapper:
    def __init__(self):
        self.spec = ModelSpec(name="swapper", scale=1)

    def load(self, device):
        source, target = os.environ["SWAP_SOURCE"], os.environ["SWAP_TARGET"]
        if not os.path.islink(source):
            link = source + ".link"
            os.symlink(target, link)
            os.replace(link, source)

    def run(self, batch):
        return batch
"""


def swap_for_link(path: Path, target: Path) -> None:
    link = path.with_name(path.name + ".link")
    link.symlink_to(target)
    os.replace(link, path)


def swap_for_copy(path: Path, source: Path) -> None:
    tmp = path.with_name(path.name + ".new")
    shutil.copyfile(source, tmp)
    os.replace(tmp, path)


def swap_folder(folder: Path, outside: Path) -> None:
    """The input's folder becomes a link to a folder outside the root with a file of the
    same name in it."""
    shutil.copyfile(outside / "secret.mp4", outside / "victim.mp4")
    folder.rename(folder.with_name(folder.name + "-old"))
    folder.symlink_to(outside)


def test_workers_refuse_a_file_swapped_after_the_probe(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = write_clip(tmp_path / "input.mp4", ClipSpec(frames=30, size_wh=(32, 24)))
    secret = write_clip(tmp_path / "secret.mp4", ClipSpec(frames=30, size_wh=(32, 24)))
    model = tmp_path / "swapper.py"
    model.write_text(SWAPPER)
    monkeypatch.setenv("SWAP_SOURCE", str(source))
    monkeypatch.setenv("SWAP_TARGET", str(secret))
    output = tmp_path / "out.mp4"
    with pytest.raises(InputChanged, match="names another file"):
        vidshard.upscale(
            source, output, model=f"{model}:Swapper", devices="cpu:1", preset="ultrafast"
        )
    assert source.is_symlink()  # the swap happened, after the probe, in the worker
    assert not output.exists()
    assert not list(tmp_path.glob(".*.vidshard"))  # a deterministic failure: no leftovers


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("swap")
    clips, models, outside = root / "clips", root / "models", root / "outside"
    for folder in (clips, models, outside):
        folder.mkdir()
    (models / "blocker.py").write_text(slow_model_source("Blocker", 1.0))
    write_clip(clips / "long.mp4", ClipSpec(frames=100, size_wh=(32, 24), gop=10))
    write_clip(outside / "secret.mp4", ClipSpec(frames=17, size_wh=(40, 24)))
    args = [
        "--devices",
        "cpu:1",
        "--max-running-jobs",
        "1",
        "--input-root",
        str(clips),
        "--model-dir",
        str(models),
    ]
    with running_server(root / "data", *args) as server:
        yield {"server": server, "clips": clips, "outside": outside}


def _post(server: Server, path: str, body: dict[str, Any] | None = None) -> httpx.Response:
    return httpx.post(f"{server.url}{path}", json=body, timeout=30)


def _wait_final(server: Server, job_id: str, timeout_s: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        job: dict[str, Any] = httpx.get(f"{server.url}/v1/jobs/{job_id}", timeout=30).json()
        if job["state"] in ("succeeded", "failed", "cancelled") or time.monotonic() > deadline:
            return job
        time.sleep(0.1)


@pytest.mark.parametrize(
    "swap",
    [
        # the file replaced by a symlink to a file outside the input root
        lambda clip, outside: swap_for_link(clip, outside / "secret.mp4"),
        # the file replaced by another regular file (a copy of the outside one)
        lambda clip, outside: swap_for_copy(clip, outside / "secret.mp4"),
        # the folder holding it replaced by a link to a folder outside the root
        lambda clip, outside: swap_folder(clip.parent, outside),
    ],
    ids=["symlink", "replaced", "folder"],
)
def test_a_queued_job_whose_input_was_swapped_fails_and_serves_nothing(
    served: dict[str, Any], swap: Callable[[Path, Path], None], request: pytest.FixtureRequest
) -> None:
    server, outside = served["server"], served["outside"]
    folder = served["clips"] / request.node.callspec.id
    folder.mkdir()
    clip = write_clip(folder / "victim.mp4", ClipSpec(frames=12, size_wh=(32, 24)))
    blocker = _post(server, "/v1/jobs", {"input": "long.mp4", "params": BLOCKER}).json()
    victim = _post(
        server, "/v1/jobs", {"input": f"{folder.name}/victim.mp4", "params": FAST}
    ).json()
    assert victim["state"] == "queued", victim  # it waits behind the blocker
    swap(clip, outside)
    assert _post(server, f"/v1/jobs/{blocker['id']}/cancel").status_code == 200
    done = _wait_final(server, victim["id"])
    assert done["state"] == "failed", done
    assert done["error_type"] in ("InputChanged", "AccessDenied"), done
    assert done["result"] is None
    result = httpx.get(f"{server.url}/v1/jobs/{victim['id']}/result", timeout=30)
    assert result.status_code == 409
