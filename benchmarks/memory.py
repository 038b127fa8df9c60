"""Peak memory against video length: a 1-minute and a 10-minute 360p clip, same options.

Each job runs as ``python -m vidshard upscale ... --quiet --json`` in a subprocess; a
thread of this process samples that process tree (the coordinator, every worker, and
multiprocessing's resource tracker) every 50 ms with psutil and keeps the largest SUM of
their resident set sizes (RSS). Shared pages (libraries mapped by every process) count
once per process, as RSS does; that inflates both peaks alike and cancels in the ratio.
The figure is peak(10 min) / peak(1 min): flat memory means a ratio near 1.

The default model is ``benchmarks/sleep_model.py:NearestModel`` (nearest-neighbour x2:
2x-sized frames flow through decode -> model -> encode as with a real upscaler, at a
fraction of ``lanczos``'s CPU cost, which would make the 10-minute job take ~9 minutes
on 2 cores). ``--model lanczos`` runs the same comparison with lanczos.

    python benchmarks/memory.py            # 60 s vs 600 s, 640x360, nearest x2, cpu:2
    python benchmarks/memory.py --quick    # 10 s vs 40 s, identity
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import _common  # noqa: E402  (after the path fix-up)

NEAREST = f"{HERE / 'sleep_model.py'}:NearestModel"
SAMPLE_S = 0.05
GOAL_RATIO = 1.2
MIB = 1024 * 1024


class TreeSampler(threading.Thread):
    """Samples the RSS of a process and all its descendants until stopped."""

    def __init__(self, pid: int, interval_s: float = SAMPLE_S) -> None:
        super().__init__(name="rss-sampler", daemon=True)
        import psutil

        self._psutil = psutil
        self._root = psutil.Process(pid)
        self._interval = interval_s
        self._stop_event = threading.Event()
        self.peak_sum = 0
        self.peak_root = 0
        self.peak_child = 0  # the largest single descendant (a worker)
        self.max_procs = 0
        self.samples = 0
        self.timeline: list[tuple[float, int]] = []  # (s, sum) once per second
        self._t0 = time.monotonic()

    def stop(self) -> None:
        self._stop_event.set()
        self.join()

    def _rss(self, proc: Any) -> int:
        try:
            return int(proc.memory_info().rss)
        except (self._psutil.NoSuchProcess, self._psutil.AccessDenied):
            return 0

    def run(self) -> None:
        next_mark = 0.0
        while not self._stop_event.is_set():
            try:
                children = self._root.children(recursive=True)
            except self._psutil.NoSuchProcess:
                return
            root = self._rss(self._root)
            kids = [self._rss(c) for c in children]
            total = root + sum(kids)
            self.samples += 1
            self.peak_sum = max(self.peak_sum, total)
            self.peak_root = max(self.peak_root, root)
            self.peak_child = max(self.peak_child, *kids, 0)
            self.max_procs = max(self.max_procs, 1 + len(children))
            now = time.monotonic() - self._t0
            if now >= next_mark:
                self.timeline.append((round(now, 1), total))
                next_mark = now + 1.0
            self._stop_event.wait(self._interval)


def run_job(clip: Path, output: Path, job_args: list[str]) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "vidshard", "upscale", str(clip), "-o", str(output)]
    cmd += [*job_args, "--quiet", "--json"]
    started = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    sampler = TreeSampler(proc.pid)
    sampler.start()
    stdout, stderr = proc.communicate()
    sampler.stop()
    wall = time.monotonic() - started
    if proc.returncode != 0:
        raise SystemExit(f"vidshard failed ({proc.returncode}): {stderr.strip()}")
    result = json.loads(stdout)
    output.unlink(missing_ok=True)
    return {
        "clip": clip.name,
        "frames": result["frames"],
        "segments": result["segments"],
        "wall_s": wall,
        "peak_rss_sum_mib": sampler.peak_sum / MIB,
        "peak_coordinator_mib": sampler.peak_root / MIB,
        "peak_worker_mib": sampler.peak_child / MIB,
        "processes": sampler.max_procs,
        "samples": sampler.samples,
        "timeline_mib": [(t, round(v / MIB, 1)) for t, v in sampler.timeline],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small run, under a minute")
    parser.add_argument(
        "--seconds",
        default=None,
        help="short,long clip lengths in seconds (full 60,600; quick 10,40)",
    )
    parser.add_argument("--size", default="640x360", help="clip size WxH (default 640x360)")
    parser.add_argument(
        "--model", default=None, help="vidshard --model (full: NearestModel x2; quick: identity)"
    )
    parser.add_argument("--scale", type=int, default=None, help="--scale (default 2; identity 1)")
    parser.add_argument("--devices", default="cpu:2")
    parser.add_argument("--preset", default="ultrafast")
    parser.add_argument("--json", metavar="PATH", help="write the figures as JSON")
    args = parser.parse_args()

    short_s, long_s = (
        float(v) for v in (args.seconds or ("10,40" if args.quick else "60,600")).split(",")
    )
    width, height = (int(v) for v in args.size.lower().split("x"))
    model = args.model or ("identity" if args.quick else NEAREST)
    scale = args.scale or (1 if model == "identity" else 2)
    job_args = ["--model", model, "--devices", args.devices, "--preset", args.preset]
    if model != "identity":
        job_args += ["--scale", str(scale)]

    info = _common.machine_info()
    _common.print_machine(info)
    clips = [_common.cached_clip((width, height), s, fps=25) for s in (short_s, long_s)]
    shown = " ".join(
        a if "/" not in a else Path(a.split(":")[0]).name + ":" + a.split(":")[1] for a in job_args
    )
    print(f"job: vidshard upscale CLIP -o OUT {shown} --quiet --json", flush=True)

    load = _common.ForeignLoad()
    rows = []
    with tempfile.TemporaryDirectory(prefix="vidshard-memory-") as tmp:
        for clip in clips:
            row = run_job(clip, Path(tmp) / "out.mp4", job_args)
            rows.append(row)
            print(
                f"  {clip.name}: {row['wall_s']:.1f} s, peak RSS sum "
                f"{row['peak_rss_sum_mib']:.0f} MiB over {row['processes']} processes "
                f"({row['samples']} samples)",
                flush=True,
            )

    ratio = rows[1]["peak_rss_sum_mib"] / rows[0]["peak_rss_sum_mib"]
    print()
    print(f"Peak resident memory of the vidshard process tree ({shown})")
    _common.print_table(
        [
            "clip",
            "frames",
            "segments",
            "wall s",
            "peak sum MiB",
            "coordinator MiB",
            "largest worker MiB",
            "processes",
        ],
        [
            [
                r["clip"],
                r["frames"],
                r["segments"],
                f"{r['wall_s']:.1f}",
                f"{r['peak_rss_sum_mib']:.0f}",
                f"{r['peak_coordinator_mib']:.0f}",
                f"{r['peak_worker_mib']:.0f}",
                r["processes"],
            ]
            for r in rows
        ],
    )
    met = ratio <= GOAL_RATIO
    print(
        f"\ngoal: peak({long_s:g} s) / peak({short_s:g} s) <= {GOAL_RATIO}: {ratio:.3f} -> "
        f"{'MET' if met else 'MISSED'}"
    )
    foreign = load.print_report()
    _common.write_json(
        args.json,
        {
            "benchmark": "memory",
            "foreign_load": foreign,
            "machine": info,
            "params": {
                "seconds": [short_s, long_s],
                "size": [width, height],
                "job_args": job_args,
                "quick": args.quick,
                "sample_s": SAMPLE_S,
            },
            "rows": rows,
            "goal": {"ratio_max": GOAL_RATIO, "ratio": ratio, "met": met},
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
