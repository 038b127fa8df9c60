"""The Ray executor against the local one, scaling over a two-node cluster, and recovery.

A two-node Ray cluster is started on this machine (``tests/ray_fixtures.py``: the head
on 127.0.0.2, a second node on 127.0.0.3, 4 CPUs each) and three things are measured,
interleaved in one run:

1. **The same job on both executors**: an upscale of a generated clip with the stand-in
   model (``sleep_model.py:SleepModel``: a fixed wait per frame, no CPU), ``cpu:2``,
   on the local executor and on the Ray executor (one slot per node); the ratio of
   wall times (end to end: connection, actors, workers, segments, join).
2. **Scaling over slots on the cluster**: the same job on ``cpu:1``, ``cpu:2``, ``cpu:4``
   and ``cpu:8`` slots spread over the two nodes, each beside the local executor on as
   many slots (both share this machine's cores); efficiency = fps(N) / (N x fps(1)).
3. **Recovery**: a pool of 2 slots runs a job; the first time a unit of the second node's
   slot reports progress, that slot's actor is SIGKILLed. Measured: from the kill to the
   coordinator seeing the worker down, and to the lost unit starting again on a slot.

    python benchmarks/ray_executor.py            # 1200 frames, 20 ms/frame, 3 repeats
    python benchmarks/ray_executor.py --quick    # 150 frames, 1 repeat
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))

import _common  # noqa: E402

SLEEP_ENV = "VIDSHARD_BENCH_SLEEP_MS"
MODEL = f"{HERE / 'sleep_model.py'}:SleepModel"


def upscale(clip: Path, out: Path, devices: str, executor: str, address: str) -> dict[str, Any]:
    import vidshard

    extra = {"executor": "ray", "ray_address": address} if executor == "ray" else {}
    started = time.monotonic()
    result = vidshard.upscale(
        clip, out, model=MODEL, devices=devices, preset="ultrafast", crf=23, **extra
    )
    wall_s = time.monotonic() - started
    out.unlink(missing_ok=True)
    return {"wall_s": wall_s, "frames": result.frames, "fps": result.frames / wall_s}


def recovery(clip: Path, out: Path, cluster: Any) -> dict[str, float]:
    """Kill the second node's actor at its slot's first progress; time what follows."""
    import psutil

    from ray_fixtures import NODE_IP
    from vidshard.engine.events import UnitProgress, UnitStarted, WorkerDown
    from vidshard.engine.upscale import UpscaleOptions, run_upscale
    from vidshard.executors.local import PoolJob
    from vidshard.executors.ray_cluster import RayExecutor

    pool = RayExecutor(cluster.address)
    pool.start(pool.resolve_slots("cpu:2"), None, lambda _event: None)
    marks: dict[str, float] = {}
    victim: dict[str, str] = {}
    lock = threading.Lock()

    def kill(label: str) -> None:
        worker = next(
            p
            for p in psutil.process_iter(["cmdline"])
            if any(f"vidshard-worker-{label}" == part for part in (p.info["cmdline"] or []))
        )
        actor = worker.parent()
        assert actor is not None
        marks["killed"] = time.monotonic()
        os.kill(actor.pid, signal.SIGKILL)

    def watch(event: Any) -> None:
        with lock:
            on_node = getattr(event, "slot_label", "").startswith(NODE_IP)
            if isinstance(event, UnitProgress) and not victim and on_node:
                victim["unit"] = event.unit_id
                threading.Thread(target=kill, args=(event.slot_label,), daemon=True).start()
            elif isinstance(event, WorkerDown) and "killed" in marks and "down" not in marks:
                marks["down"] = time.monotonic()
            elif (
                isinstance(event, UnitStarted)
                and event.unit_id == victim.get("unit")
                and "killed" in marks
                and "restarted" not in marks
            ):
                marks["restarted"] = time.monotonic()

    class Watched(PoolJob):
        def start(self, slots: Any, model: Any, on_event: Any) -> None:
            super().start(slots, model, lambda e: (watch(e), on_event(e)))

    try:
        options = UpscaleOptions(model=MODEL, preset="ultrafast", crf=23, segment_seconds=1.0)
        run_upscale(clip, out, options, executor=lambda model: Watched(pool, "bench", model))
    finally:
        pool.shutdown()
        out.unlink(missing_ok=True)
    return {
        "to_worker_down_ms": 1000 * (marks["down"] - marks["killed"]),
        "to_unit_running_again_ms": 1000 * (marks["restarted"] - marks["killed"]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args()
    frames = 150 if args.quick else 1200
    repeats = 1 if args.quick else 3
    os.environ[SLEEP_ENV] = "20"  # before the cluster starts: its workers inherit it
    info = _common.machine_info()
    _common.print_machine(info)
    clip = _common.cached_clip((320, 180), frames / 25)
    from ray_fixtures import TwoNodeCluster

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        cluster = TwoNodeCluster(root / "cluster", cpus=4)
        cluster.root.mkdir()
        cluster.start()
        try:
            payload = measure(clip, root, cluster, repeats, frames)
        finally:
            cluster.stop()
    payload["machine"] = info
    _common.write_json(args.json, payload)


def measure(clip: Path, root: Path, cluster: Any, repeats: int, frames: int) -> dict[str, Any]:
    pairs: list[tuple[float, float]] = []
    for _ in range(repeats):  # interleaved: local, ray, local, ray ...
        local = upscale(clip, root / "local.mp4", "cpu:2", "local", cluster.address)
        on_ray = upscale(clip, root / "ray.mp4", "cpu:2", "ray", cluster.address)
        pairs.append((local["wall_s"], on_ray["wall_s"]))
    local_s = statistics.median(p[0] for p in pairs)
    ray_s = statistics.median(p[1] for p in pairs)
    print(f"\n## The same job ({frames} frames, 20 ms/frame stand-in, cpu:2)\n")
    _common.print_table(
        ["executor", "wall s (median)", "fps", "ratio to local"],
        [
            ["local", f"{local_s:.2f}", f"{frames / local_s:.1f}", "1.00"],
            ["ray (2 nodes)", f"{ray_s:.2f}", f"{frames / ray_s:.1f}", f"{ray_s / local_s:.2f}"],
        ],
    )
    scaling: dict[tuple[str, int], list[float]] = {}
    for _ in range(repeats):
        for slots in (1, 2, 4, 8):
            for executor in ("local", "ray"):  # side by side: the same slots on one machine
                run = upscale(clip, root / "s.mp4", f"cpu:{slots}", executor, cluster.address)
                scaling.setdefault((executor, slots), []).append(run["wall_s"])
    walls = {key: statistics.median(values) for key, values in scaling.items()}
    rows = []
    for slots in (1, 2, 4, 8):
        local_wall, ray_wall = walls[("local", slots)], walls[("ray", slots)]
        rows.append(
            [
                slots,
                f"{ray_wall:.2f}",
                f"{frames / ray_wall:.1f}",
                f"{walls[('ray', 1)] / (slots * ray_wall):.2f}",
                f"{local_wall:.2f}",
                f"{walls[('local', 1)] / (slots * local_wall):.2f}",
                f"{ray_wall / local_wall:.2f}",
            ]
        )
    print(f"\n## Scaling over slots on the two-node cluster ({frames} frames)\n")
    headers = ["slots", "ray wall s", "ray fps", "ray efficiency", "local wall s"]
    _common.print_table([*headers, "local efficiency", "ray / local"], rows)
    recoveries = [recovery(clip, root / "r.mp4", cluster) for _ in range(repeats)]
    down = statistics.median(r["to_worker_down_ms"] for r in recoveries)
    again = statistics.median(r["to_unit_running_again_ms"] for r in recoveries)
    print("\n## Recovery: an actor SIGKILLed mid-unit\n")
    _common.print_table(
        ["from the kill to", "ms (median)"],
        [["the worker seen down", f"{down:.0f}"], ["its unit running again", f"{again:.0f}"]],
    )
    return {
        "frames": frames,
        "same_job": {"local_s": local_s, "ray_s": ray_s, "ratio": ray_s / local_s},
        "scaling": {f"{executor}:{slots}": wall for (executor, slots), wall in walls.items()},
        "recovery": recoveries,
    }


if __name__ == "__main__":
    main()
