"""Nothing lost when things go wrong: dead, hung and frozen workers, interrupted runs.

Workers are made to fail at chosen moments through ``VIDSHARD_FAULT`` (see
``vidshard.engine.faults``); every run that completes must give output bit-identical
to a clean run (deterministic model, lossless encode).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from tests.clips import ClipSpec, write_clip
from tests.helpers import frame_hashes, frame_times, slow_model_source

import vidshard
from vidshard.engine.manifest import Manifest
from vidshard.engine.upscale import work_dir_for
from vidshard.errors import WorkerError
from vidshard.executors import local

SLOW_MODEL = slow_model_source("SlowNearest", 0.02)

OPTIONS = {"devices": "cpu:2", "segment_seconds": 0.4, "crf": 0, "preset": "ultrafast"}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    folder = tmp_path_factory.mktemp("failures")
    model_file = folder / "slow_model.py"
    model_file.write_text(SLOW_MODEL)
    source = write_clip(folder / "in.mp4", ClipSpec(frames=80, size_wh=(48, 32), gop=10))
    model = f"{model_file}:SlowNearest"
    reference = vidshard.upscale(source, folder / "reference.mp4", model=model, **OPTIONS)
    return source, model, frame_hashes(reference.output)


@pytest.fixture
def quick_supervision(monkeypatch):
    """Short heartbeat and deadline limits so hung workers are found within seconds."""
    monkeypatch.setattr(
        local,
        "DEFAULT_SUPERVISION",
        local.Supervision(heartbeat_timeout_s=3.0, min_deadline_s=3.0, restart_backoff_s=0.1),
    )


def fault(monkeypatch, tmp_path, **fields):
    once = tmp_path / f"fault-{len(list(tmp_path.glob('fault-*')))}"
    spec = ";".join(f"{k}={v}" for k, v in {**fields, "once": once}.items())
    monkeypatch.setenv("VIDSHARD_FAULT", spec)
    return once


@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    "fields",
    [
        # killed while loading the model
        {"point": "load"},
        # killed in the middle of a segment
        {"point": "mid", "unit": "segment-00002"},
        # killed after encoding, before the segment file is committed
        {"point": "encode", "unit": "segment-00003"},
        # exits with an error code as a unit arrives
        {"point": "start", "unit": "segment-00001", "action": "exit"},
        # hangs while its heartbeat goes on: the unit's deadline catches it
        {"point": "mid", "unit": "segment-00004", "action": "hang"},
        # freezes (SIGSTOP): the heartbeat stops
        {"point": "mid", "unit": "segment-00001", "action": "freeze"},
    ],
    ids=["load", "mid-segment", "encode", "exit", "hang", "freeze"],
)
def test_failed_worker_output_is_identical(setup, tmp_path, monkeypatch, quick_supervision, fields):
    source, model, reference = setup
    fired = fault(monkeypatch, tmp_path, **fields)
    result = vidshard.upscale(source, tmp_path / "out.mp4", model=model, **OPTIONS)
    assert fired.exists()  # the fault did happen
    assert frame_hashes(result.output) == reference
    assert frame_times(result.output) == frame_times(source)
    assert not work_dir_for(result.output).exists()


@pytest.mark.timeout(120)
def test_worker_killed_just_before_the_join(setup, tmp_path):
    source, model, reference = setup
    killed = []

    def on_phase(name):
        if name == "joining":  # every unit is done; the workers are still up
            for child in psutil.Process().children(recursive=True):
                if "vidshard-worker-" in " ".join(child.cmdline()):  # workers only
                    child.kill()
                    killed.append(child.pid)

    result = vidshard.upscale(
        source, tmp_path / "out.mp4", model=model, on_phase=on_phase, **OPTIONS
    )
    assert killed
    assert frame_hashes(result.output) == reference


@pytest.mark.timeout(120)
def test_device_failing_every_time_fails_the_job_clearly(setup, tmp_path, monkeypatch):
    source, model, _ = setup
    monkeypatch.setenv("VIDSHARD_FAULT", "point=start")  # every unit kills its worker
    monkeypatch.setattr(local, "DEFAULT_SUPERVISION", local.Supervision(restart_backoff_s=0.05))
    output = tmp_path / "out.mp4"
    # whichever limit is reached first: the unit's three attempts or the device's
    # three failures in a row; both name what happened
    with pytest.raises(WorkerError, match=r"quarantined after 3 failures|failed 3 times") as exc:
        vidshard.upscale(source, output, model=model, **OPTIONS)
    assert "died running" in str(exc.value)
    assert not output.exists()


def run_cli(source, output, model, *extra):
    """The CLI in its own process group, so a test can kill it and all its workers."""
    args = [sys.executable, "-m", "vidshard", "upscale", str(source), "-o", str(output)]
    args += ["--model", model, "--devices", "cpu:2", "--segment-seconds", "0.4"]
    args += ["--crf", "0", "--preset", "ultrafast", "--quiet", *extra]
    env = {k: v for k, v in os.environ.items() if k != "VIDSHARD_FAULT"}
    return subprocess.Popen(
        args,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,
        # a child of a non-interactive shell may start with SIGINT ignored
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # noqa: PLW1509
    )


def wait_finished_units(output: Path, count: int, timeout_s: float = 60) -> None:
    work_dir = work_dir_for(output)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        manifest = Manifest.load(work_dir)
        if manifest is not None and len(manifest.finished) >= count:
            return
        time.sleep(0.05)
    raise AssertionError(f"{count} units did not finish in {timeout_s} s")


def children_of(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


@pytest.mark.timeout(180)
@pytest.mark.parametrize(
    "how",
    [
        # Ctrl-C: the coordinator stops its workers and exits 130
        "sigint",
        # the coordinator alone is killed: orphaned workers notice and exit
        "kill-coordinator",
        # every process of the job at once
        "kill-all",
    ],
)
def test_interrupted_run_resumes_to_identical_output(setup, tmp_path, how):
    source, model, reference = setup
    output = tmp_path / "out.mp4"
    proc = run_cli(source, output, model)
    wait_finished_units(output, 4)
    workers = children_of(proc.pid)
    if how == "sigint":
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=30)
        assert proc.returncode == 130
        assert "run the same command again to resume" in stderr
    elif how == "kill-coordinator":
        proc.kill()
        proc.communicate(timeout=30)
    else:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=30)
    _, alive = psutil.wait_procs(workers, timeout=10)
    assert not alive  # no worker outlives its coordinator
    assert not output.exists()
    assert work_dir_for(output).exists()  # finished segments kept

    rerun = run_cli(source, output, model)
    stdout, stderr = rerun.communicate(timeout=120)
    assert rerun.returncode == 0, stderr
    assert "resumed" in stdout
    assert frame_hashes(output) == reference
    assert not work_dir_for(output).exists()


@pytest.mark.timeout(180)
def test_changed_options_invalidate_the_manifest(setup, tmp_path):
    source, model, _ = setup
    output = tmp_path / "out.mp4"
    proc = run_cli(source, output, model)
    wait_finished_units(output, 3)
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=30)
    assert proc.returncode == 130
    rerun = run_cli(source, output, model, "--crf", "10")  # a different output: start over
    stdout, stderr = rerun.communicate(timeout=120)
    assert rerun.returncode == 0, stderr
    assert "resumed" not in stdout
    assert len(frame_times(output)) == 80
