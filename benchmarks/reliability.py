"""Reliability: runs that each kill a random worker at a random moment.

Every run upscales the same clip with a deterministic model and lossless encoding while
a thread SIGKILLs one random worker process at a random moment: in one run in five while
the workers start and load the model, otherwise once a random fraction (0-95 %) of the
frames is done. A run counts as completed when it returns normally, and as identical when
its decoded frames equal the clean reference run's frame for frame. Goal: 20/20 and
20/20.

    python benchmarks/reliability.py            # 20 runs
    python benchmarks/reliability.py --quick    # 5 runs
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import tempfile
import threading
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np


class SlowNearest:
    """Nearest x2 taking 15 ms a frame: deterministic, and slow enough to interrupt."""

    def __init__(self) -> None:
        from vidshard.models import ModelSpec

        self.spec = ModelSpec(name="slow-nearest", scale=2)

    def load(self, device: str) -> None:
        pass

    def run(self, batch: np.ndarray) -> np.ndarray:
        time.sleep(0.015 * len(batch))
        return batch.repeat(2, axis=1).repeat(2, axis=2)


def write_clip(path: Path, frames: int, size_wh: tuple[int, int] = (96, 64)) -> Path:
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=25)
        stream.width, stream.height = size_wh
        stream.pix_fmt = "yuv420p"
        stream.codec_context.time_base = Fraction(1, 25)
        stream.codec_context.options = {"preset": "ultrafast", "keyint": "25"}
        w, h = size_wh
        y, x = np.mgrid[0:h, 0:w]
        for i in range(frames):
            img = np.stack([(x * 3 + i * 5) % 256, (y * 4 + i) % 256, (x + y + i * 7) % 256], -1)
            frame = av.VideoFrame.from_ndarray(img.astype(np.uint8), format="rgb24")
            frame.pts = i
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


def frame_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            for plane in frame.planes:
                digest.update(bytes(plane))
    return digest.hexdigest()


def worker_pids() -> list[int]:
    import psutil

    return [
        p.pid
        for p in psutil.Process().children(recursive=True)
        if "vidshard-worker-" in " ".join(p.cmdline())
    ]


def kill_when(go: threading.Event, rng: random.Random, killed: list[int]) -> None:
    import os
    import signal

    go.wait()
    pids = worker_pids()
    if pids:
        victim = rng.choice(pids)
        try:
            os.kill(victim, signal.SIGKILL)
            killed.append(victim)
        except ProcessLookupError:
            pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="5 runs instead of 20")
    parser.add_argument("--runs", type=int, default=None)
    parser.add_argument("--slots", type=int, default=4)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
    args = parser.parse_args()
    runs = args.runs or (5 if args.quick else 20)

    import vidshard

    rng = random.Random(args.seed)
    model = f"{Path(__file__).resolve()}:SlowNearest"
    options = {
        "model": model,
        "devices": f"cpu:{args.slots}",
        "segment_seconds": 0.5,
        "crf": 0,
        "preset": "ultrafast",
    }
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        source = write_clip(folder / "in.mp4", frames=300)
        clean = vidshard.upscale(source, folder / "clean.mp4", **options)
        reference = frame_digest(clean.output)
        print(f"clean run: {clean.seconds:.1f} s, {clean.frames} frames, {clean.segments} segments")
        completed = identical = kills = 0
        rows = []
        for n in range(runs):
            during_start = rng.random() < 0.2
            target = rng.uniform(0.0, 0.95)
            go = threading.Event()
            killed: list[int] = []
            killer = threading.Thread(target=kill_when, args=(go, rng, killed), daemon=True)

            def on_phase(name: str, go: threading.Event = go, early: bool = during_start) -> None:
                if early and name.startswith("starting"):
                    threading.Timer(rng.uniform(0.1, 1.0), go.set).start()

            def on_progress(snap, go: threading.Event = go, target: float = target) -> None:
                if snap.fraction >= target:
                    go.set()

            output = folder / f"run{n}.mp4"
            started = time.monotonic()
            killer.start()
            try:
                vidshard.upscale(
                    source, output, on_phase=on_phase, on_progress=on_progress, **options
                )
                ok = True
            except Exception as exc:
                print(f"run {n}: failed: {exc}")
                ok = False
            go.set()
            killer.join()
            same = ok and frame_digest(output) == reference
            completed += ok
            identical += same
            kills += bool(killed)
            seconds = time.monotonic() - started
            moment = "start-up" if during_start else f"{target:.0%} done"
            rows.append(
                {
                    "run": n,
                    "kill_at": moment,
                    "killed": bool(killed),
                    "completed": ok,
                    "identical": same,
                    "seconds": round(seconds, 2),
                }
            )
            print(
                f"run {n:2d}: kill at {moment:>9} -> {'ok' if ok else 'FAILED'}, "
                f"{'identical' if same else 'DIFFERENT'}, {seconds:.1f} s"
            )
            output.unlink(missing_ok=True)
    print()
    print("| runs | workers killed | completed | identical to the clean run |")
    print("|---|---|---|---|")
    print(f"| {runs} | {kills} | {completed}/{runs} | {identical}/{runs} |")
    if args.json:
        args.json.write_text(
            json.dumps(
                {"runs": rows, "completed": completed, "identical": identical, "kills": kills},
                indent=1,
            )
        )


if __name__ == "__main__":
    main()
