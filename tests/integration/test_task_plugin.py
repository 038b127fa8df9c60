"""A task of the test's own, added the way a package adds one (an entry point in the
``vidshard.tasks`` group), runs through the CLI, the Python API and the service without a
line of theirs knowing it: a command with its options, a function, a job type with its
request schema, workers that import it.

The task, ``grey``, writes a video's frames in grey through the engine (segments over
the slots, audio kept), with one option of its own (``weight`` of the green channel).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import av
import httpx
import numpy as np
import pytest
from tests.clips import ClipSpec, write_clip
from tests.service_helpers import running_server

PLUGIN = '''
"""A vidshard task from outside vidshard: frames to grey."""

from typing import Annotated, Any

import numpy as np
from pydantic import Field

from vidshard.engine.upscale import UpscaleOptions, run_upscale
from vidshard.models import ModelSpec
from vidshard.models.registry import resolve_model
from vidshard.tasks import Outcome, Task, TaskOptions, TaskRun


class Grey:
    def __init__(self, weight: float = 0.6) -> None:
        self.spec = ModelSpec(name="grey", scale=1)
        self.weight = weight

    def load(self, device: str) -> None:
        pass

    def run(self, batch: np.ndarray) -> np.ndarray:
        rest = (1 - self.weight) / 2
        grey = batch[..., 0] * rest + batch[..., 1] * self.weight + batch[..., 2] * rest
        return np.repeat(np.clip(np.rint(grey), 0, 255).astype(np.uint8)[..., None], 3, axis=3)


class GreyOptions(TaskOptions):
    weight: Annotated[float, Field(0.6, ge=0, le=1, description="Green's share of the grey.")]
    preset: Annotated[str, Field("ultrafast", description="Encoder preset.")]


class GreyTask(Task[GreyOptions, Any]):
    name = "grey"
    summary = "Make a video grey."
    options_type = GreyOptions
    output_suffixes = (".mp4",)
    progress_unit = "grey frames"

    def check(self, options: GreyOptions, models: Any) -> Any:
        return resolve_model("vidshard_grey_task:Grey")

    def run(self, run: TaskRun[GreyOptions]) -> Any:
        options = UpscaleOptions(
            model="vidshard_grey_task:Grey",
            preset=run.options.preset,
            crf=0,
            devices=run.devices,
            workers_per_device=run.workers_per_device,
        )
        return run_upscale(
            run.input,
            run.output,
            options,
            on_progress=run.on_progress,
            executor=run.executor_for,
            source_identity=run.identities.get(str(run.input)),
        )

    def outcome(self, result: Any) -> Outcome:
        return Outcome(
            frames=result.frames,
            files=(result.output,),
            lines=(f"grey: {result.output} ({result.frames} frames)",),
            summary={"output": str(result.output), "frames": result.frames},
        )
'''

ENTRY_POINTS = "[vidshard.tasks]\ngrey = vidshard_grey_task:GreyTask\n"


@pytest.fixture(scope="module")
def plugin(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The plugin as an installed package would be: a module and its dist-info on the
    path (``PYTHONPATH``), found through its entry point."""
    root = tmp_path_factory.mktemp("plugin")
    site = root / "site"
    info = site / "vidshard_grey_task-0.1.dist-info"
    info.mkdir(parents=True)
    (site / "vidshard_grey_task.py").write_text(PLUGIN)
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: vidshard-grey-task\nVersion: 0.1\n"
    )
    (info / "entry_points.txt").write_text(ENTRY_POINTS)
    clips = root / "clips"
    clips.mkdir()
    write_clip(clips / "clip.mp4", ClipSpec(frames=20, size_wh=(48, 32), gop=5))
    path = os.pathsep.join([str(site), *filter(None, [os.environ.get("PYTHONPATH")])])
    return {"root": root, "clips": clips, "env": {**os.environ, "PYTHONPATH": path}}


def _python(plugin: dict[str, Any], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args],
        capture_output=True,
        text=True,
        timeout=180,
        env=plugin["env"],
        cwd=plugin["root"],
        check=False,
    )


def _assert_grey(path: Path, frames: int) -> None:
    with av.open(str(path)) as container:
        decoded = [f.to_ndarray(format="rgb24").astype(int) for f in container.decode(video=0)]
    assert len(decoded) == frames
    for image in decoded:  # grey: the three channels (nearly) equal everywhere
        assert np.abs(image[..., 0] - image[..., 1]).max() <= 3
        assert np.abs(image[..., 2] - image[..., 1]).max() <= 3


def test_the_cli_has_the_tasks_command_and_its_options(plugin: dict[str, Any]) -> None:
    helped = _python(plugin, "-m", "vidshard", "grey", "--help")
    assert helped.returncode == 0, helped.stderr
    assert "Make a video grey." in helped.stdout and "--weight" in helped.stdout
    out = plugin["root"] / "cli.mp4"
    ran = _python(
        plugin, "-m", "vidshard", "grey", str(plugin["clips"] / "clip.mp4"), "-o", str(out),
        "--weight", "0.5", "--devices", "cpu:2",
    )  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    assert f"grey: {out} (20 frames)" in ran.stdout
    _assert_grey(out, 20)
    refused = _python(
        plugin, "-m", "vidshard", "grey", str(plugin["clips"] / "clip.mp4"), "-o", str(out),
        "--weight", "2",
    )  # fmt: skip
    assert refused.returncode == 2 and "--weight" in refused.stderr, refused.stderr


def test_the_python_api_runs_it(plugin: dict[str, Any]) -> None:
    out = plugin["root"] / "api.mp4"
    code = (
        "import json, vidshard\n"
        f"result = vidshard.run('grey', {str(plugin['clips'] / 'clip.mp4')!r}, {str(out)!r},"
        " weight=0.7, devices='cpu:1')\n"
        "print(json.dumps({'frames': result.frames}))\n"
        "try:\n"
        f"    vidshard.run('grey', {str(plugin['clips'] / 'clip.mp4')!r}, 'x.mp4', shade=1)\n"
        "except vidshard.VidshardError as exc:\n"
        "    print(type(exc).__name__, exc)\n"
    )
    ran = _python(plugin, "-c", code)
    assert ran.returncode == 0, ran.stderr
    first, second = ran.stdout.strip().splitlines()[-2:]
    assert json.loads(first) == {"frames": 20}
    assert second.startswith("ConfigError shade: unknown option"), second
    _assert_grey(out, 20)


def test_the_service_takes_it_as_a_job_type(plugin: dict[str, Any]) -> None:
    args = ("--devices", "cpu:1", "--input-root", str(plugin["clips"]))
    env = {"PYTHONPATH": plugin["env"]["PYTHONPATH"]}
    with running_server(plugin["root"] / "data", *args, env=env) as server:
        schema = httpx.get(f"{server.url}/openapi.json", timeout=30).json()
        assert "GreyParams" in schema["components"]["schemas"]  # its request schema
        submitted = httpx.post(
            f"{server.url}/v1/jobs",
            json={"task": "grey", "input": "clip.mp4", "params": {"weight": 0.4}},
            timeout=30,
        )
        assert submitted.status_code == 202, submitted.text
        job_id = submitted.json()["id"]
        deadline = time.monotonic() + 120
        while True:
            job = httpx.get(f"{server.url}/v1/jobs/{job_id}", timeout=30).json()
            if job["state"] in ("succeeded", "failed", "cancelled"):
                break
            assert time.monotonic() < deadline, job
            time.sleep(0.2)
        assert job["state"] == "succeeded", job
        assert job["params"] == {"weight": 0.4, "preset": "ultrafast"}
        assert job["frames_done"] == 20 and job["progress_unit"] == "grey frames"
        download = httpx.get(f"{server.url}{job['result']['url']}", timeout=30)
        result = plugin["root"] / "served.mp4"
        result.write_bytes(download.content)
        _assert_grey(result, 20)
        refused = httpx.post(
            f"{server.url}/v1/jobs",
            json={"task": "grey", "input": "clip.mp4", "params": {"weight": 5}},
            timeout=30,
        )
        assert refused.status_code == 422 and "params.weight" in refused.json()["detail"]
