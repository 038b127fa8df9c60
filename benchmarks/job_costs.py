"""What a job costs beyond its model time, and how that grows with the job's length.

Two parts, in one run:

**Bookkeeping** (no media, no workers): for a 1080p30 video of 1, 10, 60 and 120
minutes on 8 slots, the per-job work that does not touch pixels: planning the segments
and units, sending every unit to a worker (pickled, then unpickled) and the worker's
per-unit frame lookup, and recording each finished unit in the manifest. Each is timed
as vidshard does it now and, beside it, as it was done before (every unit carried the
whole video's frame lists; the manifest was rewritten whole after every unit): the
"before" figures are measured on a sample of units and multiplied out. What scales
with the job costs the same per frame at every length; what scales with its square
grows per frame with the length.

**A warm service vs a cold call**: the stand-in model (20 ms a frame, no CPU) on
``cpu:4`` over clips of 5, 30 and 120 s (320x180, 25 fps): each job through a running
``vidshard serve`` (its workers already started) and through ``vidshard.upscale`` in
this process (workers started for the job), alternating. Reported: wall time, model
time (frames x 20 ms / 4), what is left (the job's overhead) and that per frame.

    python benchmarks/job_costs.py            # both parts, 2 repetitions
    python benchmarks/job_costs.py --quick    # 1 repetition, 5 s and 30 s clips
"""

from __future__ import annotations

import argparse
import json
import pickle
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO))

import _common  # noqa: E402  (after the path fix-up)

SAMPLE_UNITS = 40  # units timed for the "before" figures, multiplied out
SLEEP_MS = 20.0
SLOTS = 4
CLIP_WH = (320, 180)
CLIP_FPS = 25
ENCODE = {"codec": "libx264", "crf": 0, "preset": "ultrafast"}


def synthetic_video(minutes: float) -> Any:
    from tests.clips import stream_info

    return stream_info(round(minutes * 60 * 30))


def _timed(fn: Any) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def bookkeeping(minutes: float, folder: Path) -> dict[str, Any]:
    from vidshard.engine.manifest import Manifest
    from vidshard.engine.upscale import build_plan
    from vidshard.media import EncodeSettings
    from vidshard.media.plan import plan_segments
    from vidshard.media.reader import _index_lookup
    from vidshard.media.types import MediaInfo
    from vidshard.models import resolve_model

    video = synthetic_video(minutes)
    info = MediaInfo(folder / "in.mp4", "mp4", 0, video.duration_s, video)
    model = resolve_model("lanczos")
    started = time.perf_counter()
    segments = plan_segments(video, slots=8, overlap_frames=4)
    plan = build_plan(info, segments, model, EncodeSettings(), folder, batch_size=4)
    plan_s = time.perf_counter() - started
    units = plan.units
    step = max(1, len(units) // SAMPLE_UNITS)
    sample = units[::step][:SAMPLE_UNITS]
    scale_up = len(units) / len(sample)

    def traffic(batch: list[Any]) -> tuple[float, int]:
        """Seconds and bytes to pickle and unpickle each unit, plus the worker's lookup."""
        seconds, size = 0.0, 0
        for unit in batch:
            started = time.perf_counter()
            data = pickle.dumps(unit, protocol=pickle.HIGHEST_PROTOCOL)
            _index_lookup(pickle.loads(data).video)
            seconds += time.perf_counter() - started
            size += len(data)
        return seconds, size

    now_s, now_bytes = traffic(units)
    whole_s, whole_bytes = traffic([replace(unit, video=video) for unit in sample])
    whole_s, whole_bytes = whole_s * scale_up, int(whole_bytes * scale_up)

    bounds = [s.start for s in segments] + [video.frame_count]
    ids = [unit.unit_id for unit in units]
    work = folder / f"manifest-{minutes:g}"
    work.mkdir()
    manifest = Manifest("digest", bounds, 4)

    def record_all() -> None:  # the plan once, then one line a unit
        manifest.save(work)
        for unit_id in ids:
            manifest.mark_finished(unit_id, work)

    manifest_now_s = _timed(record_all)
    # Before: the whole record rewritten after each unit (on average half the list done).
    record = {"fingerprint": "digest", "bounds": bounds, "overlap_frames": 4}
    half = {**record, "finished": ids[: len(ids) // 2]}
    path = work / "old.json"

    def rewrite() -> None:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(half, indent=1))
        tmp.replace(path)

    manifest_old_s = _timed(lambda: [rewrite() for _ in sample]) * scale_up
    return {
        "minutes": minutes,
        "frames": video.frame_count,
        "units": len(units),
        "plan_s": plan_s,
        "units_now_s": now_s,
        "units_now_bytes": now_bytes,
        "units_before_s": whole_s,
        "units_before_bytes": whole_bytes,
        "manifest_now_s": manifest_now_s,
        "manifest_before_s": manifest_old_s,
    }


def print_bookkeeping(rows: list[dict[str, Any]]) -> None:
    print(
        "\n## Bookkeeping per job (1080p30 on 8 slots; 'before' = whole lists in each "
        "unit, manifest rewritten per unit)"
    )
    table = []
    for r in rows:
        now = r["plan_s"] + r["units_now_s"] + r["manifest_now_s"]
        before = r["plan_s"] + r["units_before_s"] + r["manifest_before_s"]
        r["now_us_per_frame"] = now / r["frames"] * 1e6
        r["before_us_per_frame"] = before / r["frames"] * 1e6
        table.append(
            [
                f"{r['minutes']:g} min",
                r["frames"],
                r["units"],
                f"{r['plan_s'] * 1e3:.0f}",
                f"{r['units_now_bytes'] / 1e6:.1f} / {r['units_before_bytes'] / 1e6:,.0f}",
                f"{r['units_now_s']:.2f} / {r['units_before_s']:.1f}",
                f"{r['manifest_now_s']:.2f} / {r['manifest_before_s']:.1f}",
                f"{r['now_us_per_frame']:.1f} / {r['before_us_per_frame']:.0f}",
            ]
        )
    _common.print_table(
        [
            "video",
            "frames",
            "units",
            "plan ms",
            "unit MB now/before",
            "units s now/before",
            "manifest s now/before",
            "us/frame now/before",
        ],
        table,
    )
    first, last = rows[0], rows[-1]
    print(
        f"per-frame cost at {last['minutes']:g} min over {first['minutes']:g} min: now "
        f"{last['now_us_per_frame'] / first['now_us_per_frame']:.2f}x, before "
        f"{last['before_us_per_frame'] / first['before_us_per_frame']:.0f}x "
        "(1x: it grows as the job does)",
        flush=True,
    )


# --- a warm service vs a cold call ---------------------------------------------------------


def cold_call(clip: Path, out: Path) -> float:
    import vidshard

    started = time.monotonic()
    vidshard.upscale(
        clip, out, model=f"{HERE / 'sleep_model.py'}:SleepModel", devices=f"cpu:{SLOTS}", **ENCODE
    )
    return time.monotonic() - started


def warm_job(client: Any, name: str) -> float:
    started = time.monotonic()
    job = client.submit(name, model="sleep_model.py:SleepModel", **ENCODE)
    while True:
        job = client.status(job.id)
        if job.done:
            break
        time.sleep(0.02)
    if job.state != "succeeded":
        raise RuntimeError(f"the service's job {job.id} ended {job.state}: {job.error}")
    return time.monotonic() - started


def service_part(seconds_list: list[float], reps: int) -> list[dict[str, Any]]:
    import os

    from sleep_model import SLEEP_ENV
    from tests.service_helpers import start_server

    from vidshard.client import Client

    os.environ[SLEEP_ENV] = str(SLEEP_MS)  # this process's workers (the cold call) too
    clips = {s: _common.cached_clip(CLIP_WH, s, fps=CLIP_FPS) for s in seconds_list}
    times: dict[tuple[str, float], list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="vidshard-costs-") as tmp:
        server = start_server(
            Path(tmp) / "data",
            *("--devices", f"cpu:{SLOTS}", "--input-root", str(next(iter(clips.values())).parent)),
            *("--model-dir", str(HERE), "--log-level", "warning"),
            env={SLEEP_ENV: str(SLEEP_MS)},
        )
        try:
            with Client(server.url) as client:
                warm_job(client, clips[seconds_list[0]].name)  # the pool's workers start here
                for rep in range(reps):
                    for s in seconds_list:
                        order = ("warm", "cold") if rep % 2 == 0 else ("cold", "warm")
                        for kind in order:
                            if kind == "warm":
                                took = warm_job(client, clips[s].name)
                            else:
                                took = cold_call(clips[s], Path(tmp) / f"cold-{s:g}.mp4")
                            times.setdefault((kind, s), []).append(took)
                            print(f"  {kind} {s:g} s clip: {took:.2f} s", flush=True)
        finally:
            server.stop()
    rows = []
    for s in seconds_list:
        frames = round(s * CLIP_FPS)
        model_s = frames * SLEEP_MS / 1000 / SLOTS
        for kind in ("warm", "cold"):
            wall = statistics.median(times[(kind, s)])
            rows.append(
                {
                    "clip_s": s,
                    "kind": kind,
                    "frames": frames,
                    "wall_s": wall,
                    "model_s": model_s,
                    "overhead_s": wall - model_s,
                }
            )
    return rows


def print_service(rows: list[dict[str, Any]]) -> None:
    print(
        f"\n## A warm service vs a cold call (stand-in {SLEEP_MS:g} ms/frame, cpu:{SLOTS}, "
        f"{CLIP_WH[0]}x{CLIP_WH[1]} {CLIP_FPS} fps)"
    )
    _common.print_table(
        [
            "clip",
            "path",
            "frames",
            "wall s",
            "model s",
            "overhead s",
            "overhead ms/frame",
            "wall / model",
        ],
        [
            [
                f"{r['clip_s']:g} s",
                "service (warm)" if r["kind"] == "warm" else "API call (cold)",
                r["frames"],
                f"{r['wall_s']:.2f}",
                f"{r['model_s']:.2f}",
                f"{r['overhead_s']:.2f}",
                f"{r['overhead_s'] / r['frames'] * 1e3:.2f}",
                f"{r['wall_s'] / r['model_s']:.2f}x",
            ]
            for r in rows
        ],
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="1 repetition, short clips only")
    parser.add_argument("--skip-service", action="store_true", help="the bookkeeping part only")
    parser.add_argument("--json", metavar="PATH", help="write the figures as JSON")
    args = parser.parse_args()
    info = _common.machine_info()
    _common.print_machine(info)
    with tempfile.TemporaryDirectory(prefix="vidshard-costs-") as tmp:
        books = [bookkeeping(m, Path(tmp)) for m in (1, 10, 60, 120)]
    print_bookkeeping(books)
    service: list[dict[str, Any]] = []
    if not args.skip_service:
        seconds = [5.0, 30.0] if args.quick else [5.0, 30.0, 120.0]
        service = service_part(seconds, 1 if args.quick else 2)
        print_service(service)
    _common.write_json(
        args.json,
        {"benchmark": "job_costs", "machine": info, "bookkeeping": books, "service": service},
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
