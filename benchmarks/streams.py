"""Live streams: how many a slot holds at real time with cross-stream batching on and off,
latency capture -> result, time to reconnect, time to fail over.

The detector is a stand-in (``benchmarks/sleep_stream_detector.py``) whose call on a
batch of n frames sleeps ``--batch-ms + n * --frame-ms`` (20 + 2 ms by default) without
using the CPU, as an accelerator would; it logs every call, so detector calls per frame
are counted. Sources are a looped clip played in real time (``loop``, ``realtime``;
320x240 at 25 fps by default) or, with ``--source rtsp``, N clients of the RTSP test
server (``tests/rtsp_server.py``, Debian's GStreamer, run by ``/usr/bin/python3``).

- **capacity**: per slot count and batch size (``--batch-sizes 8,1``: batching on and
  off), N streams are added (a random phase each), and over ``--window-s`` each
  stream's processed rate and drops are read from its records (frame numbers give the
  drops). N is held at real time when every stream is processed at >= 95 % of the
  source rate and drops are <= 5 %; N steps up, then bisects to the largest held N.
  Latency p50/p95 (capture -> result, the same figure the stream statuses give) and the
  cores the workers used are per step.
- **reconnect**: the RTSP server is SIGKILLed, kept down ``--downtimes`` seconds and
  restarted on its port; from "ready" to each stream's first new record, with the
  default reconnect backoff (0.5 s doubling to 30 s) and a short one (0.1 s to 0.5 s).
- **failover**: on cpu:2 a hosting worker is SIGKILLed; from the kill to each of its
  streams' first record on the other slot: onto the other slot's running host, and onto
  an idle slot (a host must start there). Default supervision, as the CLI and service.

    python benchmarks/streams.py                        # ~5 minutes
    python benchmarks/streams.py --quick                # ~2 minutes
    python benchmarks/streams.py --size 640x360 --window-s 10 --batch-sizes 16,8,1
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import _common  # noqa: E402
from _stream_faults import print_times, run_failover, run_reconnect  # noqa: E402
from _streams import (  # noqa: E402
    Bench,
    all_started,
    decode_cost,
    fmt,
    pct,
    read_calls,
    rtsp_server,
)

TOLERANCE = 0.05  # real time: >= 95 % of the source rate, <= 5 % dropped
PER_SLOT_STEPS = (1, 2, 4, 6, 8, 10, 12, 16, 20, 24, 32, 40, 48, 64, 80, 96)


def window_figures(bench: Bench, ids: list[str], t0: float, t1: float, fps: float) -> dict:
    """Per-stream rates and drops over [t0, t1] from the records (frame numbers count the
    frames decoded meanwhile), latency pooled over every stream."""
    window_s = t1 - t0
    records = bench.rec.where(lambda r: t0 <= r.processed_at < t1)
    rates, drops, latencies, delivered = [], [], [], []
    for stream_id in ids:
        mine = [(at, r) for at, r in records if r.stream_id == stream_id]
        frames = [r.frame for _, r in mine]
        rates.append(len(mine) / window_s)
        span = (max(frames) - min(frames) + 1) if frames else 0
        drops.append(1 - len(mine) / span if span else 1.0)
        latencies += [(r.processed_at - r.captured_at) * 1000 for _, r in mine]
        delivered += [(at - r.captured_at) * 1000 for at, r in mine]
    held = min(rates) >= (1 - TOLERANCE) * fps and max(drops) <= TOLERANCE
    return {
        "held": held,
        "fps_mean": statistics.fmean(rates),
        "fps_min": min(rates),
        "drop_share_max": max(drops),
        "drop_share_mean": statistics.fmean(drops),
        "latency_p50_ms": pct(latencies, 50),
        "latency_p95_ms": pct(latencies, 95),
        "delivered_p50_ms": pct(delivered, 50),
        "delivered_p95_ms": pct(delivered, 95),
    }


def status_latency(bench: Bench, ids: list[str]) -> dict:
    """The manager's statuses: median of the streams' p50, largest of their p95."""
    views = [v for v in bench.manager.list() if v.stream_id in ids]
    p50 = [v.status.latency_p50_ms for v in views if v.status.latency_p50_ms is not None]
    p95 = [v.status.latency_p95_ms for v in views if v.status.latency_p95_ms is not None]
    return {
        "status_p50_ms": statistics.median(p50) if p50 else None,
        "status_p95_max_ms": max(p95) if p95 else None,
        "slots_used": sorted({v.slot for v in views if v.slot}),
    }


def measure(
    bench: Bench, urls: list[str], batch_size: int, args: argparse.Namespace, rng: random.Random
) -> dict[str, Any]:
    """Run ``len(urls)`` streams for a settle time and a measured window; then remove them."""
    ids = bench.add(urls, batch_size, rng, batch_wait_ms=args.batch_wait_ms)
    if not all_started(bench, ids):
        bench.remove_all()
        return {"n": len(urls), "held": False, "error": "not every stream gave a result"}
    time.sleep(args.settle_s)
    t0, cpu0, own0 = time.time(), bench.worker_cpu_s(), time.process_time()
    time.sleep(args.window_s)
    t1, cpu1, own1 = time.time(), bench.worker_cpu_s(), time.process_time()
    figures = window_figures(bench, ids, t0, t1, args.fps)
    figures.update(status_latency(bench, ids))
    calls, frames = read_calls(args.calls_path, t0, t1)
    figures.update(
        n=len(urls),
        calls=calls,
        calls_per_frame=calls / frames if frames else None,
        mean_batch=frames / calls if calls else None,
        worker_cores=(cpu1 - cpu0) / (t1 - t0),
        coordinator_cores=(own1 - own0) / (t1 - t0),
    )
    bench.remove_all()
    return figures


def model_limit(batch_size: int, args: argparse.Namespace) -> int:
    """The most streams one slot could hold if only the detector's time counted."""
    n = 0
    while True:
        k = min(n + 1, batch_size)
        capacity_fps = k / ((args.batch_ms + args.frame_ms * k) / 1000)
        if (n + 1) * args.fps > capacity_fps:
            return n
        n += 1


def sweep(
    bench: Bench, source: str, batch_size: int, args: argparse.Namespace
) -> list[dict[str, Any]]:
    """Step N up (per-slot steps x slots) to the first N not held, then bisect."""
    rng = random.Random(batch_size * 1000 + bench.slots)
    steps = [s * bench.slots for s in PER_SLOT_STEPS if s * bench.slots <= args.max_streams]
    runs: dict[int, dict[str, Any]] = {}

    def run(n: int) -> bool:
        result = measure(bench, [source] * n, batch_size, args, rng)
        result.update(slots=bench.slots, batch_size=batch_size, source=args.source)
        runs[n] = result
        print_step(result, args.fps)
        return bool(result["held"])

    good, bad = 0, None
    for n in steps:
        if run(n):
            good = n
        else:
            bad = n
            break
    while bad is not None and bad - good > 1:
        middle = (good + bad) // 2
        if run(middle):
            good = middle
        else:
            bad = middle
    return [runs[n] for n in sorted(runs)]


def print_step(r: dict[str, Any], fps: float) -> None:
    if "error" in r:
        print(f"  cpu:{r['slots']} {r['source']} batch {r['batch_size']} N={r['n']}: {r['error']}")
        return
    print(
        f"  cpu:{r['slots']} {r['source']} batch {r['batch_size']} N={r['n']}: "
        f"{r['fps_mean']:.1f} fps/stream (min {r['fps_min']:.1f} of {fps:g}), "
        f"drops max {r['drop_share_max']:.1%}, batch {fmt(r['mean_batch'])}, "
        f"p50/p95 {fmt(r['latency_p50_ms'])}/{fmt(r['latency_p95_ms'])} ms, "
        f"workers {r['worker_cores']:.2f} cores -> {'held' if r['held'] else 'NOT held'}",
        flush=True,
    )


def capacity_rows(runs: list[dict[str, Any]]) -> list[list[object]]:
    rows = []
    for r in runs:
        if "error" in r:
            rows.append([f"cpu:{r['slots']}", r["source"], r["batch_size"], r["n"], r["error"]])
            continue
        rows.append(
            [
                f"cpu:{r['slots']}",
                r["source"],
                r["batch_size"],
                r["n"],
                f"{r['fps_mean']:.1f} / {r['fps_min']:.1f}",
                f"{r['drop_share_mean']:.1%} / {r['drop_share_max']:.1%}",
                fmt(r["calls_per_frame"], 3),
                fmt(r["mean_batch"], 2),
                f"{fmt(r['latency_p50_ms'])} / {fmt(r['latency_p95_ms'])}",
                f"{fmt(r['status_p50_ms'])} / {fmt(r['status_p95_max_ms'])}",
                f"{r['worker_cores']:.2f}",
                "yes" if r["held"] else "no",
            ]
        )
    return rows


def held_max(runs: list[dict[str, Any]], slots: int, batch_size: int, source: str) -> int:
    mine = [
        r for r in runs if (r["slots"], r["batch_size"], r["source"]) == (slots, batch_size, source)
    ]
    return max((r["n"] for r in mine if r["held"]), default=0)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--quick", action="store_true", help="shorter windows, fewer trials (~2 minutes)")
    add("--slots", default=None, help="slot counts of the capacity sweep (1,2; quick 1)")
    add("--batch-sizes", default="8,1", help="batch sizes (8: batching on, 1: off)")
    add("--batch-ms", type=float, default=20.0, help="stand-in: fixed ms per call")
    add("--frame-ms", type=float, default=2.0, help="stand-in: ms per frame in a call")
    add("--batch-wait-ms", type=float, default=20.0, help="the streams' batch_wait_ms")
    add("--size", default="320x240", help="clip size WxH (640x360 or smaller)")
    add("--fps", type=int, default=25, help="clip frame rate")
    add("--source", choices=("file", "rtsp"), default="file", help="capacity sweep source")
    add("--no-rtsp-check", dest="rtsp_check", action="store_false", help="no RTSP rows")
    add("--max-streams", type=int, default=128, help="largest N tried")
    add("--window-s", type=float, default=None, help="measured window per step (6; quick 3)")
    add("--settle-s", type=float, default=None, help="wait after the first results (2; quick 1)")
    add("--downtimes", default=None, help="seconds the RTSP server is down, per trial")
    add("--reconnect-streams", type=int, default=2, help="streams on the RTSP server")
    add("--failover-trials", type=int, default=None, help="kills per case (4; quick 2)")
    add("--skip", default="", help="parts to skip: capacity,reconnect,failover")
    add("--json", metavar="PATH", help="write the figures as JSON")
    args = parser.parse_args()
    args.window_s = args.window_s or (3.0 if args.quick else 6.0)
    args.settle_s = args.settle_s if args.settle_s is not None else (1.0 if args.quick else 2.0)
    args.slots = args.slots or ("1" if args.quick else "1,2")
    args.downtimes = [
        float(v)
        for v in (args.downtimes or ("1.2,4.5" if args.quick else "1.2,2.5,4.5,7")).split(",")
    ]
    args.failover_trials = args.failover_trials or (2 if args.quick else 4)
    args.slot_counts = [int(v) for v in args.slots.split(",")]
    args.batch_list = [int(v) for v in args.batch_sizes.split(",")]
    args.size_wh = tuple(int(v) for v in args.size.lower().split("x"))
    args.skip = set(filter(None, args.skip.split(",")))
    return args


def run_capacity(args: argparse.Namespace, clip: Path, server: Any) -> list[dict[str, Any]]:
    runs: list[dict[str, Any]] = []
    source = server.url("cam") if args.source == "rtsp" else str(clip)
    for slots in args.slot_counts:
        bench = Bench(slots, per_slot_limit=args.max_streams)
        try:
            for batch_size in args.batch_list:
                found = sweep(bench, source, batch_size, args)
                runs += found
                held = held_max(found, slots, batch_size, args.source)
                if args.source == "file" and server is not None and held and args.rtsp_check:
                    runs.append(rtsp_check(bench, server, held, batch_size, args))
        finally:
            bench.close()
    return runs


def rtsp_check(
    bench: Bench, server: Any, n: int, batch_size: int, args: argparse.Namespace
) -> dict[str, Any]:
    """The largest N held from the file, again as N clients of the RTSP server."""
    rng = random.Random(n)
    result = measure(bench, [server.url("cam")] * n, batch_size, args, rng)
    result.update(slots=bench.slots, batch_size=batch_size, source="rtsp")
    print_step(result, args.fps)
    return result


def print_capacity(runs: list[dict[str, Any]], args: argparse.Namespace) -> None:
    print(
        f"\nstreams at real time ({args.fps} fps {args.size} {args.source}, stand-in "
        f"{args.batch_ms:g} ms + {args.frame_ms:g} ms/frame a call, {args.window_s:g} s "
        "windows); fps and drops: mean / worst stream; latency capture -> result over the "
        "window / from the statuses (median p50 / worst p95)"
    )
    _common.print_table(
        [
            "devices",
            "source",
            "batch",
            "streams",
            "fps/stream",
            "dropped",
            "calls/frame",
            "frames/call",
            "p50 / p95 ms",
            "status ms",
            "worker cores",
            "held",
        ],
        capacity_rows(runs),
    )
    print()
    rows = []
    for slots in args.slot_counts:
        for batch_size in args.batch_list:
            rows.append(
                [
                    f"cpu:{slots}",
                    batch_size,
                    held_max(runs, slots, batch_size, args.source),
                    model_limit(batch_size, args) * slots,
                ]
            )
    _common.print_table(["devices", "batch", "streams held", "detector-time limit"], rows)
    on, off = max(args.batch_list), min(args.batch_list)
    for slots in args.slot_counts:
        held_on = held_max(runs, slots, on, args.source)
        held_off = held_max(runs, slots, off, args.source)
        if on == off or not held_off:
            continue
        calls_on = calls_at(runs, slots, on, held_on, args.source)
        calls_off = calls_at(runs, slots, off, held_off, args.source)
        ratio = f" ({calls_off / calls_on:.1f}x fewer)" if calls_on and calls_off else ""
        print(
            f"cpu:{slots}: batch {on} holds {held_on / held_off:.1f}x the streams of batch "
            f"{off} ({held_on} vs {held_off}); detector calls per frame at those loads "
            f"{fmt(calls_on, 3)} vs {fmt(calls_off, 3)}{ratio}"
        )


def calls_at(runs: list[dict[str, Any]], slots: int, batch: int, n: int, source: str) -> Any:
    for r in runs:
        if (r["slots"], r["batch_size"], r["n"], r["source"]) == (slots, batch, n, source):
            return r.get("calls_per_frame")
    return None


def main() -> int:
    args = parse_args()
    info = _common.machine_info()
    _common.print_machine(info)
    print(f"command: python benchmarks/streams.py {' '.join(sys.argv[1:])}".rstrip(), flush=True)
    clip = _common.cached_clip(args.size_wh, 8.0, fps=args.fps, gop=args.fps)
    work = tempfile.TemporaryDirectory(prefix="vidshard-streams-bench-")
    args.calls_path = Path(work.name) / "calls.txt"
    os.environ["VIDSHARD_BENCH_BATCH_MS"] = str(args.batch_ms)  # read by every worker
    os.environ["VIDSHARD_BENCH_FRAME_MS"] = str(args.frame_ms)
    os.environ["VIDSHARD_BENCH_CALLS"] = str(args.calls_path)
    needs_rtsp = (
        args.source == "rtsp" or args.rtsp_check or not {"reconnect", "failover"} <= args.skip
    )
    server = rtsp_server(clip, Path(work.name)) if needs_rtsp else None
    if args.source == "rtsp" and server is None:
        return 1
    load = _common.ForeignLoad()
    costs = decode_cost(clip)
    print(
        f"the clip: decoding costs {costs['decode_ms']:.2f} ms CPU a frame, decoding and the "
        f"RGB conversion {costs['decode_rgb_ms']:.2f} ms",
        flush=True,
    )
    payload: dict[str, Any] = {
        "machine": info,
        "args": {k: str(v) for k, v in vars(args).items()},
        "clip_cpu": costs,
    }
    try:
        runs = [] if "capacity" in args.skip else run_capacity(args, clip, server)
        reconnect = run_reconnect(args, server) if server and "reconnect" not in args.skip else {}
        failover = {} if "failover" in args.skip else run_failover(args, clip, server)
    finally:
        if server is not None:
            server.stop()
    payload.update(
        foreign=load.print_report(), capacity=runs, reconnect=reconnect, failover=failover
    )
    if runs:
        print_capacity(runs, args)
    print_times(reconnect, failover)
    if failover.get("quarantined"):
        print(f"quarantined after the failover trials: {failover['quarantined']}")
    _common.write_json(args.json, payload)
    return 0


if __name__ == "__main__":
    sys.exit(main())
