"""Image-to-video generation on a device group: denoising step time over 1, 2 and 4 ranks,
memory per rank with and without FSDP, and the time to the first step of a request on a
group that is already loaded.

Everything runs as users run it: a pool of CPU slots (``LocalExecutor``, ``model=None``,
gloo), a ``GroupKeeper`` on it, ``keeper.run(model, layout, request)``. The model is a
random-weight Wan2.1 I2V made big enough that a step is seconds of computation on one
core (``benchmarks/_generate_model.py``: a 12 M parameter transformer, a 21 M parameter
text encoder; written once to the benchmarks' cache folder). Its video is noise; the
computation is Wan's. The request: 17 frames at 384x384 (2880 tokens a transformer pass;
quick: 9 frames at 256x256, 768 tokens), guidance 5 (two passes a step), 8 steps (quick 3).

- **steps**: one request per layout, each on a fresh pool: 1 rank with 1 torch thread,
  1 rank with a thread per core (the fair single-process baseline), Ulysses 2, CFG 2,
  Ulysses 2 + FSDP, Ulysses 4 (not in --quick) and CFG 2 x Ulysses 2. A slot's torch
  threads are its share of the cores (``cpu:N``: cores / N, at least 1), so with 2 cores
  every rank of a 2- or 4-rank group has one thread. The step time is the median time
  between rank 0's consecutive steps (the first step, which follows the prompt and image
  encoding, is not counted). The ranks' figures come from
  ``benchmarks/_generate_runner.py``: the real ``WanRunner``, loaded by file as a user's
  runner is, only noting times and memory.
- **memory**: per rank of the 1-rank, Ulysses 2 and Ulysses 2 + FSDP runs (a fresh worker
  process each): the parameter bytes the rank holds (a sharded parameter counts its
  shard), its memory after loading and after the request split as anonymous / mapped
  files / PSS, and its peak resident memory. On CPU the checkpoint's safetensors are
  memory-mapped: without FSDP a rank's weights are pages of those files, which every rank
  counts in its RSS but the machine holds once (PSS shares them out); FSDP's shards are
  each rank's own copies, and its all-gathers add buffers. So here FSDP halves the
  parameter bytes a rank holds without lowering the memory in use; what it is for, device
  memory on an accelerator, this benchmark does not show on CPU.
- **reuse**: a fresh pool of 2 slots, Ulysses 2 and the plain ``WanRunner``: the time from
  ``keeper.run()`` to its first ``on_step`` callback for the first request (forming the
  group, importing diffusers in the ranks, loading, encoding, one step) and for a second
  request with the same model and layout on the group kept loaded.

Read the ratios, not the seconds. With 2 cores, 2 ranks can at best halve the 1-thread
step, and 4 ranks share the 2 cores (two processes a core): they show the cost of more
communication and of oversubscription, not a 4x speed-up. "Ideal" is the 1-thread step
divided by the cores a group can use (min(ranks x threads, cores)); "overhead" is how far
the step is above it: collectives (Ulysses' all-to-alls, the CFG and FSDP all-gathers),
work every rank repeats (the text and image keys and values of the cross-attention, the
scheduler step) and, on 4 ranks, two processes a core. The smaller quick request shows
more overhead: the repeated work is a larger share of it. The figures need a quiet
machine: the other processes' CPU share is printed with them.

    python benchmarks/generate.py                 # ~5 minutes on 2 cores
    python benchmarks/generate.py --quick         # ~2 minutes
    python benchmarks/generate.py --configs 0,2,3 --skip reuse --json gen.json
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import os
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import _common  # noqa: E402
from _generate_model import ModelSpec, bench_model  # noqa: E402

RUNNER = f"{HERE / '_generate_runner.py'}:StatsRunner"
MIB = 1024 * 1024


@dataclass(frozen=True)
class Config:
    """One measured layout; ``cores`` is what its pool's slots share (threads per rank:
    ``max(1, cores // ranks)``)."""

    name: str
    world: int
    ulysses: int = 1
    cfg: int = 1
    fsdp: bool = False
    cores: int = 0  # 0: the machine's cores (--cores)

    def layout(self) -> Any:
        from vidshard.generation.types import Layout

        return Layout(self.world, ulysses=self.ulysses, cfg=self.cfg, fsdp=self.fsdp)


CONFIGS = (
    Config("1 rank, 1 thread", 1, cores=1),
    Config("1 rank, all cores", 1),
    Config("ulysses 2", 2, ulysses=2),
    Config("cfg 2", 2, cfg=2),
    Config("ulysses 2 + fsdp", 2, ulysses=2, fsdp=True),
    Config("ulysses 4", 4, ulysses=4),
    Config("cfg 2 x ulysses 2", 4, ulysses=2, cfg=2),
)


class Pool:
    """A started pool of ``slots`` CPU slots sharing ``cores``, with a keeper on it."""

    def __init__(self, slots: int, cores: int) -> None:
        from vidshard.devices import discover_devices, parse_device_spec
        from vidshard.executors.local import LocalExecutor
        from vidshard.generation.group import GroupKeeper

        devices = [status.device for status in discover_devices()]
        spec = parse_device_spec(f"cpu:{slots}", devices, cpu_count=cores)
        started = time.monotonic()
        self.executor = LocalExecutor()
        self.executor.start(spec, None, lambda _event: None)
        self.start_s = time.monotonic() - started
        self.keeper = GroupKeeper(self.executor, collective_timeout_s=300.0)

    def run(self, model: Any, layout: Any, request: Any) -> dict[str, Any]:
        """``keeper.run`` timed from the caller's side: to the first step and to the end."""
        first: list[float] = []
        steps: list[float] = []

        def on_step(_step: int, _total: int) -> None:
            steps.append(time.monotonic())
            if not first:
                first.append(time.monotonic())

        started, own_cpu = time.monotonic(), time.process_time()
        result = self.keeper.run(model, layout, request, job_id="bench", on_step=on_step)
        ended = time.monotonic()
        gaps = step_gaps(steps)
        return {
            "coordinator_cpu_s": time.process_time() - own_cpu,
            "first_step_s": first[0] - started if first else None,
            "wall_s": ended - started,
            "load_s": result.load_seconds,
            "step_s": statistics.median(gaps) if gaps else None,
            "frames": result.frames,
        }

    def close(self) -> None:
        self.keeper.close()
        self.executor.shutdown()


def make_request(args: argparse.Namespace, folder: Path, name: str) -> Any:
    from vidshard.generation.types import GenerationRequest

    return GenerationRequest(
        request_id=name,
        image=args.image,
        prompt="a cat walks on the grass slowly camera pans left",
        negative_prompt="blurry static low quality",
        frames=args.frames,
        size_wh=args.size_wh,
        steps=args.steps,
        guidance=5.0,
        seed=0,
        solver="unipc",
        shift=3.0,
        cache=None,
        output=folder / f"{name}.mp4",
    )


def write_image(path: Path, size_wh: tuple[int, int]) -> Path:
    import numpy as np
    from PIL import Image

    width, height = size_wh
    pixels = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def rank_stats(output: Path, world: int) -> list[dict[str, Any]]:
    """What each rank's StatsRunner wrote next to the output."""
    return [
        json.loads(Path(f"{output}.rank{rank}.json").read_text(encoding="utf-8"))
        for rank in range(world)
    ]


def step_gaps(marks: list[float]) -> list[float]:
    """The times between consecutive steps: the first step, which follows the prompt and
    image encoding, is not one of them."""
    return [b - a for a, b in itertools.pairwise(marks)]


def run_config(config: Config, args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    from vidshard.generation.types import GenerationModel

    cores = config.cores or args.cores
    pool = Pool(config.world, cores)
    name = config.name.replace(" ", "").replace(",", "-").replace("+", "-")
    request = make_request(args, folder, name)
    try:
        outside = pool.run(GenerationModel(args.model, runner=RUNNER), config.layout(), request)
    finally:
        pool.close()
    ranks = rank_stats(request.output, config.world)
    gaps = step_gaps(ranks[0]["step_marks_s"])
    step_s = statistics.median(gaps)
    row = {
        "config": config.name,
        "ranks": config.world,
        "ulysses": config.ulysses,
        "cfg": config.cfg,
        "fsdp": config.fsdp,
        "cores": cores,
        "threads_per_rank": ranks[0]["torch_threads"],
        "pool_start_s": pool.start_s,
        "step_s": step_s,
        "step_gaps_s": gaps,
        "caller": outside,
        "rank_stats": ranks,
    }
    peaks = "/".join(f"{r['memory_end']['peak'] / MIB:.0f}" for r in ranks)
    shape = f"{_count(config.world, 'rank')} x {_count(row['threads_per_rank'], 'thread')}"
    print(
        f"  {config.name} ({shape}): "
        f"{step_s:.2f} s/step (gaps {', '.join(f'{g:.2f}' for g in gaps)}), "
        f"load {outside['load_s']:.1f} s, request {outside['wall_s']:.1f} s, "
        f"peak RSS {peaks} MiB",
        flush=True,
    )
    return row


def run_reuse(args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    """Two requests on one kept Ulysses-2 group of the plain WanRunner."""
    from vidshard.generation.types import GenerationModel, Layout

    pool = Pool(2, args.cores)
    model, layout = GenerationModel(args.model), Layout(2, ulysses=2)
    try:
        first = pool.run(model, layout, make_request(args, folder, "reuse-1"))
        print(
            f"  first request: first step after {first['first_step_s']:.1f} s "
            f"(load {first['load_s']:.1f} s)",
            flush=True,
        )
        second = pool.run(model, layout, make_request(args, folder, "reuse-2"))
        print(
            f"  second request: first step after {second['first_step_s']:.1f} s "
            f"(load {second['load_s']:.1f} s)",
            flush=True,
        )
    finally:
        pool.close()
    return {"pool_start_s": pool.start_s, "first": first, "second": second}


def print_steps(rows: list[dict[str, Any]], args: argparse.Namespace) -> None:
    by_name = {r["config"]: r for r in rows}
    one = by_name.get(CONFIGS[0].name, {}).get("step_s")
    full = by_name.get(CONFIGS[1].name, {}).get("step_s")
    tokens = latent_tokens(args)
    print(
        f"\ndenoising step ({args.frames} frames {args.size}: {tokens} tokens, guidance 5: "
        f"two transformer passes a step; median of {args.steps - 1} steps; {args.cores} cores)"
    )
    table = []
    for r in rows:
        used = min(r["ranks"] * r["threads_per_rank"], r["cores"])
        ideal = one / used if one else None
        table.append(
            [
                r["config"],
                r["ranks"],
                r["threads_per_rank"],
                f"{r['step_s']:.2f}",
                _ratio(one, r["step_s"]),
                _ratio(full, r["step_s"]),
                f"{ideal:.2f}" if ideal else "-",
                f"{r['step_s'] / ideal - 1:+.0%}" if ideal else "-",
            ]
        )
    _common.print_table(
        [
            "layout",
            "ranks",
            "threads/rank",
            "s/step",
            "vs 1 rank 1 thread",
            f"vs 1 rank {args.cores} threads",
            "ideal s/step",
            "overhead",
        ],
        table,
    )


def _count(n: int, what: str) -> str:
    return f"{n} {what}{'' if n == 1 else 's'}"


def _ratio(base: float | None, value: float) -> str:
    return f"{base / value:.2f}x" if base else "-"


MEMORY_CONFIGS = (CONFIGS[0].name, "ulysses 2", "ulysses 2 + fsdp")


def print_memory(rows: list[dict[str, Any]]) -> None:
    print(
        "\nmemory per rank (MiB): parameters the rank holds; its process's memory after "
        "loading and after the request as anon (its own) / file (mapped: libraries and "
        "checkpoint pages, shared with the other ranks) / PSS (shared pages split between "
        "the processes); the peak resident memory by the end of loading, of the steps, of "
        "the request"
    )
    table = []
    for r in rows:
        if r["config"] not in MEMORY_CONFIGS:
            continue
        for stats in r["rank_stats"]:
            held = stats["param_bytes"]
            loaded, end = stats["memory_loaded"], stats["memory_end"]
            table.append(
                [
                    r["config"],
                    stats["rank"],
                    _mib(held.get("transformer", 0)),
                    _mib(held.get("text_encoder", 0)),
                    _mib(sum(held.values())),
                    _split(loaded),
                    _split(end),
                    " / ".join(
                        _mib(v, 0)
                        for v in (loaded["peak"], stats["step_peak_rss_bytes"][-1], end["peak"])
                    ),
                ]
            )
    _common.print_table(
        [
            "layout",
            "rank",
            "transformer",
            "text encoder",
            "all params",
            "loaded: anon / file / PSS",
            "after: anon / file / PSS",
            "peak: loaded / steps / request",
        ],
        table,
    )


def _mib(value: float, digits: int = 1) -> str:
    return f"{value / MIB:.{digits}f}"


def _split(figures: dict[str, int]) -> str:
    return " / ".join(_mib(figures[key], 0) for key in ("anon", "file", "pss"))


def print_reuse(reuse: dict[str, Any]) -> None:
    first, second = reuse["first"], reuse["second"]
    print("\ntime to the first step, Ulysses 2 (keeper.run() -> first on_step)")
    _common.print_table(
        ["request", "first step s", "of which load s", "s/step", "request s"],
        [
            [
                name,
                f"{r['first_step_s']:.1f}",
                f"{r['load_s']:.1f}",
                f"{r['step_s']:.2f}" if r["step_s"] else "-",
                f"{r['wall_s']:.1f}",
            ]
            for name, r in (("first (group formed)", first), ("second (group kept)", second))
        ],
    )
    saved = first["first_step_s"] - second["first_step_s"]
    print(f"the kept group saves {saved:.1f} s before the first step")


def latent_tokens(args: argparse.Namespace) -> int:
    width, height = args.size_wh
    return ((args.frames - 1) // 4 + 1) * (height // 16) * (width // 16)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--quick", action="store_true", help="a smaller video and 3 steps (~2 minutes)")
    add("--frames", type=int, default=None, help="frames, 4k+1 (17; quick 9)")
    add("--size", default=None, help="video size WxH, multiples of 16 (384x384; quick 256x256)")
    add("--steps", type=int, default=None, help="denoising steps, >= 3 (8; quick 3)")
    add("--cores", type=int, default=None, help="cores the slots share (default: available)")
    add("--configs", default=None, help="layouts to run, by number (0-6; all; quick not 5)")
    add("--skip", default="", help="parts to skip: steps,reuse")
    add("--json", metavar="PATH", help="write the figures as JSON")
    args = parser.parse_args()
    args.frames = args.frames or (9 if args.quick else 17)
    args.size = args.size or ("256x256" if args.quick else "384x384")
    args.steps = args.steps or (3 if args.quick else 8)
    if args.steps < 3:
        parser.error(f"--steps: expected at least 3 (two gaps between steps), got {args.steps}")
    args.cores = args.cores or len(os.sched_getaffinity(0))
    try:
        width, height = (int(v) for v in args.size.lower().split("x"))
    except ValueError:
        parser.error(f"--size: expected WxH, e.g. 384x384, got {args.size!r}")
    args.size_wh = (width, height)
    if args.configs:
        picked = [int(i) for i in args.configs.split(",") if i.isdigit()]
        if len(picked) != len(args.configs.split(",")) or max(picked) >= len(CONFIGS):
            parser.error(f"--configs: expected numbers 0-{len(CONFIGS) - 1}, got {args.configs}")
    else:  # quick: one 4-rank layout, the 2-D mesh
        picked = [i for i, c in enumerate(CONFIGS) if not (args.quick and c.name == "ulysses 4")]
    args.config_list = [CONFIGS[i] for i in picked]
    args.skip = set(filter(None, args.skip.split(",")))
    if args.skip - {"steps", "reuse"}:
        parser.error(f"--skip: expected steps and/or reuse, got {','.join(args.skip)}")
    return args


def check_requests(args: argparse.Namespace) -> None:
    """Each layout's request checked as the ranks will check it: a bad --frames, --size or
    layout is a one-line error here, not a failed group later."""
    from vidshard.generation.checks import check_request
    from vidshard.generation.types import Layout

    layouts = [config.layout() for config in args.config_list]
    if "reuse" not in args.skip:
        layouts.append(Layout(2, ulysses=2))
    for layout in layouts:
        check_request(
            args.model,
            layout,
            frames=args.frames,
            size_wh=args.size_wh,
            steps=args.steps,
            guidance=5.0,
            shift=3.0,
        )


def main() -> int:
    args = parse_args()
    # the workers inherit it: no diffusers notices (experimental API, split skipped) in
    # the output; relayed Python warnings (deprecations inside diffusers) are dropped too
    os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
    logging.getLogger("py.warnings").setLevel(logging.ERROR)
    info = _common.machine_info()
    _common.print_machine(info)
    print(f"command: python benchmarks/generate.py {' '.join(sys.argv[1:])}".rstrip(), flush=True)
    args.model = bench_model(_common.cache_dir(), ModelSpec())
    from vidshard.errors import VidshardError

    try:
        check_requests(args)
    except VidshardError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    work = tempfile.TemporaryDirectory(prefix="vidshard-generate-bench-")
    folder = Path(work.name)
    args.image = write_image(folder / "first.png", args.size_wh)
    print(f"model {args.model.name}; {latent_tokens(args)} tokens a pass", flush=True)
    load = _common.ForeignLoad()
    rows: list[dict[str, Any]] = []
    reuse: dict[str, Any] = {}
    if "steps" not in args.skip:
        print("steps:", flush=True)
        rows = [run_config(config, args, folder) for config in args.config_list]
    if "reuse" not in args.skip:
        print("reuse:", flush=True)
        reuse = run_reuse(args, folder)
    payload: dict[str, Any] = {
        "machine": info,
        "args": {k: str(v) for k, v in vars(args).items() if k != "config_list"},
        "model": asdict(ModelSpec()),
        "tokens": latent_tokens(args),
        "foreign": load.print_report(),
        "steps": rows,
        "reuse": reuse,
    }
    if rows:
        print_steps(rows, args)
        print_memory(rows)
    if reuse:
        print_reuse(reuse)
    _common.write_json(args.json, payload)
    work.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
