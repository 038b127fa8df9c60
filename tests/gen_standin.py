"""A stand-in generation runner, for the device group's mechanics (not the model's).

It has WanRunner's interface. Each step does one all_reduce over the group (so a dead or
hung peer shows as it would with the real model) and sleeps a little; the ranks agree on
``should_stop`` after each step as WanRunner does; rank 0 writes a small valid mp4 of
``request.frames`` grey frames, atomically.

Faults come from the request's prompt, ``fault=ACTION,rank=R,step=S,once=PATH``:
``hang`` (sleep forever inside step S on rank R) or ``kill`` (SIGKILL itself there);
with ``once``, the fault fires only for the first process to create PATH (so the retry
runs clean), ``once=PATH,times=N`` for the first N (PATH.1 ... PATH.N). A model whose
folder is named ``bad-model`` fails to load with a ModelError (a user's error).
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

from vidshard.errors import Cancelled, ModelError
from vidshard.generation.types import GenerationModel, GenerationRequest, GenerationResult, Layout

STEP_SLEEP_S = 0.05
LOAD_SLEEP_S = 0.2
DEFAULT_FPS = 16
TARGET = f"{Path(__file__).resolve()}:Runner"  # what a test puts in model.runner


def standin_model(folder: Path, name: str = "standin") -> GenerationModel:
    """A model whose runner is this stand-in (the folder is only its name)."""
    return GenerationModel(path=folder / name, runner=TARGET)


class Runner:
    def __init__(self, model: GenerationModel, layout: Layout, rank: int, device: str) -> None:
        self.model = model
        self.layout = layout
        self.rank = rank
        self.device = device
        self.loaded = False

    def load(self) -> float:
        import torch
        import torch.distributed as dist

        started = time.monotonic()
        if self.model.name == "bad-model":
            raise ModelError(f"{self.model.path}: no model_index.json")
        time.sleep(LOAD_SLEEP_S)
        ranks = torch.tensor([float(self.rank)])
        dist.all_reduce(ranks)  # every rank is there
        expected = self.layout.world * (self.layout.world - 1) / 2
        if ranks.item() != expected:
            raise RuntimeError(f"all_reduce of the ranks gave {ranks.item()}, not {expected}")
        self.loaded = True
        return time.monotonic() - started

    def generate(
        self,
        request: GenerationRequest,
        on_step: Callable[[int, int], None],
        should_stop: Callable[[], bool],
    ) -> GenerationResult | None:
        import torch
        import torch.distributed as dist

        started = time.monotonic()
        fault = _parse_fault(request.prompt)
        for step in range(1, request.steps + 1):
            if _hits(fault, self.rank, step):
                _act(fault["fault"])  # type: ignore[index]
            total = torch.ones(1)
            dist.all_reduce(total)
            time.sleep(STEP_SLEEP_S)
            on_step(step, request.steps)
            stop = torch.tensor([1.0 if should_stop() else 0.0])
            dist.all_reduce(stop, op=dist.ReduceOp.MAX)
            if stop.item() > 0:
                raise Cancelled(f"{request.request_id} was cancelled at step {step}")
        if self.rank != 0:
            return None
        fps = request.fps or DEFAULT_FPS
        write_mp4(request.output, request.frames, request.size_wh, fps)
        return GenerationResult(
            request.request_id, request.output, request.frames, fps, time.monotonic() - started
        )

    def close(self) -> None:
        self.loaded = False


def write_mp4(path: Path, frames: int, size_wh: tuple[int, int], fps: int) -> None:
    """``frames`` grey frames at ``fps``, written to a temp file and renamed into place."""
    import av
    import numpy as np

    temp = path.with_name(f".{path.name}.part")
    width, height = size_wh
    with av.open(str(temp), "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for index in range(frames):
            pixels = np.full((height, width, 3), (index * 7) % 256, dtype=np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    os.replace(temp, path)


def fault_prompt(action: str, rank: int, step: int, once: Path, times: int = 1) -> str:
    return f"fault={action},rank={rank},step={step},once={once},times={times}"


def _parse_fault(prompt: str) -> dict[str, str] | None:
    if not prompt.startswith("fault="):
        return None
    return dict(part.split("=", 1) for part in prompt.split(","))


def _hits(fault: dict[str, str] | None, rank: int, step: int) -> bool:
    if fault is None or fault.get("rank") != str(rank) or fault.get("step") != str(step):
        return False
    return _first(fault)


def _first(fault: dict[str, str]) -> bool:
    """True for the first ``times`` processes that get here (each takes a marker file)."""
    once = fault.get("once")
    if once is None:
        return True
    for index in range(1, int(fault.get("times", "1")) + 1):
        try:
            fd = os.open(f"{once}.{index}", os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            continue
        os.close(fd)
        return True
    return False


def _act(action: str) -> None:
    if action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    while True:  # "hang": inside a step, the heartbeat goes on
        time.sleep(3600)
