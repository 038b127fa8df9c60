"""Workers start while the input is probed and the job planned, not after.

The probe of a long file reads every packet, and a real model takes seconds to load:
the two overlap. A job refused meanwhile stops its workers at once, without waiting
for their model to load.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import psutil
import pytest
from tests.clips import ClipSpec, write_clip

from vidshard.engine import upscale as upscale_module
from vidshard.engine.upscale import UpscaleOptions, run_upscale
from vidshard.errors import InputError, WorkerError
from vidshard.executors.local import LocalExecutor
from vidshard.models import resolve_model

MODEL = '''
import os, time
from vidshard.models import ModelSpec


class Stamped:
    """Identity; ``load`` notes when it ran, then waits ``LOAD_S``."""

    LOAD_S = float(os.environ.get("EARLY_LOAD_S", "0"))

    def __init__(self, scale=1):
        self.spec = ModelSpec(name="stamped", scale=1)

    def load(self, device):
        with open(os.environ["EARLY_STAMPS"], "a") as out:
            out.write(f"{time.time()}\\n")
        time.sleep(self.LOAD_S)

    def run(self, batch):
        return batch
'''


@pytest.fixture
def setup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    model = tmp_path / "stamped.py"
    model.write_text(MODEL)
    stamps = tmp_path / "stamps.txt"
    monkeypatch.setenv("EARLY_STAMPS", str(stamps))
    clip = write_clip(tmp_path / "in.mp4", ClipSpec(frames=24))
    return {"model": model, "stamps": stamps, "clip": clip, "out": tmp_path / "out.mp4"}


def _loads(stamps: Path) -> int:
    return len(stamps.read_text().split()) if stamps.exists() else 0


def _children() -> set[int]:
    return {p.pid for p in psutil.Process().children(recursive=True)}


def test_workers_load_while_the_input_is_probed(
    setup: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    probed: list[tuple[float, float]] = []
    real_probe = upscale_module.probe

    def slow_probe(*args: object, **kwargs: object) -> object:
        # A long file's packet scan: it lasts until both workers have loaded (or 60 s,
        # which is what it lasts when they only start after it).
        began, deadline = time.time(), time.monotonic() + 60
        while _loads(setup["stamps"]) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        info = real_probe(*args, **kwargs)  # type: ignore[arg-type]
        probed.append((began, time.time()))
        return info

    monkeypatch.setattr(upscale_module, "probe", slow_probe)
    options = UpscaleOptions(model=f"{setup['model']}:Stamped", devices="cpu:2", crf=0)
    result = run_upscale(setup["clip"], setup["out"], options)
    loads = [float(line) for line in setup["stamps"].read_text().split()]
    assert len(loads) == 2 and len(probed) == 1
    _, ended = probed[0]
    assert all(load < ended for load in loads), (loads, probed)  # loaded during the probe
    assert result.frames == 24 and len(result.slots) == 2  # their events reached the job


def test_a_job_refused_during_the_probe_stops_its_loading_workers_at_once(
    setup: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EARLY_LOAD_S", "120")  # a load that would outlast the test
    before = _children()

    def refusing_probe(*args: object, **kwargs: object) -> object:
        deadline = time.monotonic() + 60
        while not setup["stamps"].exists() and time.monotonic() < deadline:
            time.sleep(0.05)  # until a worker is loading
        raise InputError("in.mp4: not a video this test accepts")

    monkeypatch.setattr(upscale_module, "probe", refusing_probe)
    options = UpscaleOptions(model=f"{setup['model']}:Stamped", devices="cpu:2", crf=0)
    started = time.monotonic()
    with pytest.raises(InputError, match="not a video this test accepts"):
        run_upscale(setup["clip"], setup["out"], options)
    assert time.monotonic() - started < 60  # not the 120 s load
    assert setup["stamps"].exists()  # a worker was loading when the job was refused
    assert _children() - before == set()  # every worker is gone
    assert not setup["out"].exists()
    assert list(setup["out"].parent.glob(".*.vidshard")) == []


def test_an_interrupt_while_waiting_for_the_workers_stops_their_start(
    setup: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Ctrl-C lands while the job waits for workers still loading: the start under way
    # is aborted before the shutdown, so none comes up afterwards.
    monkeypatch.setenv("EARLY_LOAD_S", "120")
    before = _children()

    def interrupted(self: object, sink: object) -> None:
        deadline = time.monotonic() + 60
        while not setup["stamps"].exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        raise KeyboardInterrupt

    monkeypatch.setattr(upscale_module._EarlyStart, "wait", interrupted)
    options = UpscaleOptions(model=f"{setup['model']}:Stamped", devices="cpu:2", crf=0)
    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        run_upscale(setup["clip"], setup["out"], options)
    assert time.monotonic() - started < 60  # not the 120 s load
    assert _children() - before == set()
    assert not setup["out"].exists()


def test_an_aborted_start_fails_with_a_worker_error(
    setup: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EARLY_LOAD_S", "120")
    before = _children()
    executor = LocalExecutor()
    slots = executor.resolve_slots("cpu:2")
    model = resolve_model(f"{setup['model']}:Stamped")
    raised: list[BaseException] = []

    def start() -> None:
        try:
            executor.start(slots, model, lambda _event: None)
        except BaseException as exc:
            raised.append(exc)

    thread = threading.Thread(target=start)
    thread.start()
    deadline = time.monotonic() + 60
    while not setup["stamps"].exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    executor.abort_start()
    thread.join(60)
    executor.shutdown()
    assert not thread.is_alive()
    assert len(raised) == 1 and isinstance(raised[0], WorkerError), raised
    assert _children() - before == set()
