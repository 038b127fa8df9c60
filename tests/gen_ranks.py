"""Run a generation group of N ranks in spawned processes, for tests and benchmarks.

:func:`run_group` spawns ``layout.world`` processes (gloo, ``file://`` rendezvous, one
torch thread each), builds a runner on every rank, runs a plan of requests in order and
returns each rank's outcomes. :class:`TinyTileRunner` is :class:`WanRunner` with tiles
small enough to split the tiny test model's 32x32 video.
"""

from __future__ import annotations

import pickle
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vidshard.generation.rank import WanRunner
from vidshard.generation.types import GenerationModel, GenerationRequest, Layout


class TinyTileRunner(WanRunner):
    """16 px tiles, 8 px stride: a 32x32 video decodes as 16 overlapping tiles."""

    vae_tile_px = (16, 8)


@dataclass(frozen=True)
class Step:
    """One request of a plan; ``stop_rank`` asks to stop after ``stop_after`` steps."""

    request: GenerationRequest
    write: bool = False  # generate() (writes the mp4) instead of frames()
    stop_rank: int | None = None
    stop_after: int = 0


@dataclass
class Outcome:
    """What one rank saw for one step of the plan."""

    status: str  # "ok" or "cancelled"
    value: Any  # frames (rank 0) / result / None, or the Cancelled message
    steps: list[int] = field(default_factory=list)  # on_step calls


def _run_plan(runner: WanRunner, rank: int, plan: list[Step]) -> list[Outcome]:
    from vidshard.errors import Cancelled

    outcomes = []
    for item in plan:
        seen: list[int] = []
        asked = [0]

        def should_stop(item: Step = item, asked: list[int] = asked) -> bool:
            asked[0] += 1
            return item.stop_rank == rank and asked[0] >= item.stop_after

        def on_step(step: int, total: int, seen: list[int] = seen) -> None:
            seen.append(step)

        call = runner.generate if item.write else runner.frames
        try:
            outcomes.append(Outcome("ok", call(item.request, on_step, should_stop), seen))
        except Cancelled as exc:
            outcomes.append(Outcome("cancelled", str(exc), seen))
    return outcomes


def _rank_main(
    rank: int,
    layout: Layout,
    model_path: Path,
    runner_cls: type[WanRunner],
    plan: list[Step],
    folder: Path,
) -> None:
    import torch

    from vidshard.generation.dist import close_group, init_group

    torch.set_num_threads(1)
    init_group(rank, layout.world, f"file://{folder / 'rendezvous'}", timeout_s=120)
    try:
        runner = runner_cls(GenerationModel(model_path), layout, rank, "cpu")
        runner.load()
        outcomes = _run_plan(runner, rank, plan)
        runner.close()
    finally:
        close_group()
    (folder / f"rank{rank}.pkl").write_bytes(pickle.dumps(outcomes))


def run_group(
    layout: Layout,
    model_path: Path,
    plan: list[Step],
    folder: Path,
    runner_cls: type[WanRunner] = WanRunner,
    timeout_s: float = 240.0,
) -> list[list[Outcome]]:
    """Every rank's outcomes (index: rank) of running ``plan`` on a ``layout`` group."""
    import torch.multiprocessing as mp

    folder.mkdir(parents=True, exist_ok=True)
    context = mp.start_processes(
        _rank_main,
        args=(layout, model_path, runner_cls, plan, folder),
        nprocs=layout.world,
        join=False,
        start_method="spawn",
    )
    deadline = time.monotonic() + timeout_s
    try:
        while not context.join(timeout=5):
            if time.monotonic() > deadline:
                raise TimeoutError(f"the {layout.world}-rank group did not finish in {timeout_s} s")
    finally:
        for process in context.processes:
            if process.is_alive():
                process.kill()
    return [pickle.loads((folder / f"rank{r}.pkl").read_bytes()) for r in range(layout.world)]


def run_single(
    model_path: Path,
    plan: list[Step],
    layout: Layout | None = None,
    runner_cls: type[WanRunner] = WanRunner,
) -> list[Outcome]:
    """``plan`` on one rank in this process (no process group), one torch thread, as a
    group's rank runs it."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        runner = runner_cls(GenerationModel(model_path), layout or Layout(1), 0, "cpu")
        runner.load()
        return _run_plan(runner, 0, plan)
    finally:
        torch.set_num_threads(threads)
