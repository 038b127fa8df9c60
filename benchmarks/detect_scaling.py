"""List-level scaling of ``vidshard detect``: videos per minute over 1, 2, 4, 8 slots.

A list of videos of mixed lengths (the longest several times the shortest) goes through
``run_detect`` with a stand-in detector (``benchmarks/sleep_detector.py:SleepDetector``)
that waits a fixed time per frame without using the CPU, as an accelerator would, and
finds nothing. Per slot count it reports wall time, videos per minute, frames per second
and efficiency = rate(N) / (N * rate(1)), end to end (worker start-up included) and in
the steady state (from every worker ready to the last JSONL line).

A naive round-robin deal of the same list (video i to slot i mod N, one video at a time
per slot) is computed from the same per-frame time for comparison: its makespan is the
largest sum a slot was dealt.

    python benchmarks/detect_scaling.py           # 24 videos, 20 ms/frame, 1/2/4/8 slots
    python benchmarks/detect_scaling.py --quick   # 8 videos, 1/2/4 slots, under a minute
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import _common  # noqa: E402

SLEEP_ENV = "VIDSHARD_BENCH_SLEEP_MS"
DETECTOR = f"{HERE / 'sleep_detector.py'}:SleepDetector"
GOAL_EFFICIENCY = 0.90


def video_list(count: int, seconds: list[float], folder: Path) -> list[Path]:
    """``count`` distinct paths (links to cached clips) cycling through ``seconds`` lengths."""
    videos = []
    for i in range(count):
        clip = _common.cached_clip((320, 180), seconds[i % len(seconds)], gop=25)
        link = folder / f"video-{i:03d}.mp4"
        link.symlink_to(clip)
        videos.append(link)
    return videos


def run_once(videos: list[Path], slots: int, out_dir: Path) -> dict[str, Any]:
    from vidshard.detection.pipeline import DetectorOptions, DetectRecipe
    from vidshard.engine.detect import DetectOptions, run_detect

    out = out_dir / f"detect-{slots}.jsonl"
    out.unlink(missing_ok=True)
    marks: dict[str, float] = {}

    def phase(name: str) -> None:
        if "part(s) on" in name:
            marks["ready"] = time.monotonic()

    recipe = DetectRecipe(detector="class", weights=DETECTOR, options=DetectorOptions(batch_size=8))
    started = time.monotonic()
    cpu0 = _common.cpu_seconds()
    result = run_detect(
        [str(v) for v in videos],
        out,
        recipe,
        DetectOptions(devices=f"cpu:{slots}"),
        on_phase=phase,
    )
    ended = time.monotonic()
    assert not result.failed, result.failed
    lines = out.read_text().count("\n")
    assert lines == len(videos), (lines, len(videos))
    return {
        "slots": slots,
        "videos": len(videos),
        "frames": result.frames,
        "wall_s": ended - started,
        "steady_s": ended - marks.get("ready", started),
        "cpu_s": _common.cpu_seconds() - cpu0,
        "slot_frames": [s.frames for s in result.slots],
    }


def round_robin_s(frames: list[int], slots: int, per_frame_s: float) -> float:
    """The makespan of dealing video i to slot i mod N (the seeds' way)."""
    loads = [0] * slots
    for i, n in enumerate(frames):
        loads[i % slots] += n
    return max(loads) * per_frame_s


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small run, under a minute")
    parser.add_argument("--videos", type=int, default=None, help="list length (24; quick 8)")
    parser.add_argument("--sleep-ms", type=float, default=20.0, help="stand-in ms per frame")
    parser.add_argument("--slots", default=None, help="slot counts (1,2,4,8; quick 1,2,4)")
    parser.add_argument("--json", metavar="PATH", help="write the figures as JSON")
    args = parser.parse_args()
    count = args.videos or (8 if args.quick else 24)
    slot_counts = [
        int(s) for s in (args.slots or ("1,2,4" if args.quick else "1,2,4,8")).split(",")
    ]
    seconds = [2.0, 4.0, 8.0] if args.quick else [4.0, 8.0, 16.0, 6.0]
    os.environ[SLEEP_ENV] = str(args.sleep_ms)  # read by every worker's detector
    per_frame_s = args.sleep_ms / 1000

    info = _common.machine_info()
    _common.print_machine(info)
    links = tempfile.TemporaryDirectory()
    videos = video_list(count, seconds, Path(links.name))
    from vidshard.media import probe

    frames = [probe(v).video.frame_count for v in videos]
    print(
        f"{count} videos, {sum(frames)} frames ({min(frames)}..{max(frames)} a video), "
        f"stand-in detector {args.sleep_ms:g} ms/frame",
        flush=True,
    )
    load = _common.ForeignLoad()
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in slot_counts:
            run = run_once(videos, n, Path(tmp))
            runs.append(run)
            print(
                f"  cpu:{n}: wall {run['wall_s']:.1f} s, steady {run['steady_s']:.1f} s, "
                f"CPU {run['cpu_s']:.1f} s, frames per slot {run['slot_frames']}",
                flush=True,
            )
    foreign = load.print_report()
    base = runs[0]
    rows, figures = [], []
    for run in runs:
        n = run["slots"]
        vpm = run["videos"] / run["wall_s"] * 60
        eff = base["wall_s"] / (n * run["wall_s"]) * base["slots"]
        steady_eff = base["steady_s"] / (n * run["steady_s"]) * base["slots"]
        naive = round_robin_s(frames, n, per_frame_s)
        ideal = sum(frames) * per_frame_s / n
        figures.append(
            {
                **run,
                "videos_per_min": vpm,
                "efficiency": eff,
                "steady_efficiency": steady_eff,
                "round_robin_model_s": naive,
                "ideal_model_s": ideal,
            }
        )
        rows.append(
            [
                n,
                f"{run['wall_s']:.1f}",
                f"{vpm:.1f}",
                f"{run['frames'] / run['wall_s']:.0f}",
                f"{eff:.2f}",
                f"{run['steady_s']:.1f}",
                f"{steady_eff:.2f}",
                f"{ideal:.1f}",
                f"{naive:.1f} ({ideal / naive:.2f})",
            ]
        )
    print()
    print(
        "efficiency = rate(N) / (N x rate(1)); steady = from every worker ready to the last "
        "line; model time = frames x per-frame time: ideal split over N vs round-robin deal "
        "(its efficiency in brackets)"
    )
    _common.print_table(
        [
            "slots",
            "wall s",
            "videos/min",
            "fps",
            "efficiency",
            "steady s",
            "steady eff.",
            "ideal model s",
            "round-robin model s",
        ],
        rows,
    )
    last = figures[-1]
    verdict = "MET" if last["steady_efficiency"] >= GOAL_EFFICIENCY else "MISSED"
    print(
        f"\ngoal: list-level efficiency >= {GOAL_EFFICIENCY} at {last['slots']} slots: "
        f"steady {last['steady_efficiency']:.2f}, end-to-end {last['efficiency']:.2f} -> {verdict}"
    )
    _common.write_json(args.json, {"machine": info, "foreign": foreign, "runs": figures})
    return 0


if __name__ == "__main__":
    sys.exit(main())
