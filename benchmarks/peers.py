"""vidshard beside its peers on one job: a plain PyAV loop, and the same job in Ray Data.

The job: a 30 s 640x360 clip with AAC audio (900 frames at 30 fps), a stand-in model
that waits 20 ms a frame (``sleep_model.py:SleepModel``: accelerator time, no CPU),
libx264 ``--crf 0 --preset ultrafast``, audio copied. Its model time alone is
900 x 20 ms / 4 slots = 4.5 s. Interleaved in one run, each repetition runs:

- **plain**: one process, one PyAV loop: decode, RGB, back to yuv420p, encode, audio
  packets copied (``overhead.py``'s baseline), no model;
- **vidshard**: ``vidshard.upscale(..., devices="cpu:4")`` with the stand-in;
- **Ray Data**: the same job as a Ray Data user writes it: ``read_videos`` ->
  ``map_batches`` with an actor pool of 4 running the stand-in -> ordered iteration ->
  PyAV encode, audio copied from the source (Ray Data reads no audio). Optional: it
  needs ``pip install -e '.[peers]'`` (Ray Data, decord); without them it is skipped,
  said once.

It prints each wall time, the ratio to the model time and vidshard's ratio to the others.

    python benchmarks/peers.py            # 3 repetitions
    python benchmarks/peers.py --quick    # 1 repetition
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import _common  # noqa: E402

SLEEP_ENV = "VIDSHARD_BENCH_SLEEP_MS"
SLEEP_MS = 20.0
SLOTS = 4
SIZE_WH = (640, 360)
FPS = 30
SECONDS = 30
ENCODE = {"codec": "libx264", "crf": 0, "preset": "ultrafast"}
MODEL = f"{HERE / 'sleep_model.py'}:SleepModel"


def clip_with_audio(folder: Path) -> Path:
    """The job's clip: the moving pattern with a 440 Hz AAC tone (made once, cached)."""
    import av
    import numpy as np

    path = _common.cache_dir() / f"peers-{SIZE_WH[0]}x{SIZE_WH[1]}-{SECONDS}s-audio.mp4"
    if path.exists():
        return path
    video = _common.write_clip(
        folder / "video.mp4", size_wh=SIZE_WH, seconds=SECONDS, fps=FPS, gop=FPS * 2
    )
    tmp = path.with_suffix(".partial.mp4")
    with av.open(str(video)) as src, av.open(str(tmp), mode="w") as out:
        vin = src.streams.video[0]
        vout = out.add_stream_from_template(vin)
        aout = out.add_stream("aac", rate=48000)
        aout.layout = "stereo"
        for packet in src.demux(vin):
            if packet.size:
                packet.stream = vout
                out.mux(packet)
        samples = 1024
        for start in range(0, SECONDS * 48000, samples):
            t = (np.arange(samples) + start) / 48000
            tone = (0.2 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
            frame = av.AudioFrame.from_ndarray(np.stack([tone, tone]), format="fltp")
            frame.sample_rate, frame.pts = 48000, start
            frame.time_base = Fraction(1, 48000)
            out.mux(aout.encode(frame))
        out.mux(aout.encode(None))
    tmp.replace(path)
    return path


def run_plain(clip: Path, out: Path) -> float:
    from overhead import plain_transcode

    return float(plain_transcode(clip, out, **ENCODE)["wall_s"])


def run_vidshard(clip: Path, out: Path) -> float:
    import vidshard

    started = time.monotonic()
    vidshard.upscale(clip, out, model=MODEL, devices=f"cpu:{SLOTS}", **ENCODE)
    return time.monotonic() - started


class StandIn:
    """Ray Data's callable class: the stand-in model over a batch of frames."""

    def __init__(self) -> None:
        from sleep_model import SleepModel

        self.model = SleepModel()

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        batch["frame"] = self.model.run(batch["frame"])
        return batch


def run_ray_data(clip: Path, out: Path) -> float:
    """The job as a Ray Data user writes it (the cluster is up: its start is not timed)."""
    import av
    import ray

    started = time.monotonic()
    ray.data.DataContext.get_current().execution_options.preserve_order = True
    frames = ray.data.read_videos(str(clip), include_timestamps=True).map_batches(
        StandIn, batch_size=16, concurrency=SLOTS
    )
    with av.open(str(clip)) as src, av.open(str(out), mode="w") as dst:
        vout = dst.add_stream(ENCODE["codec"], rate=FPS)
        vout.width, vout.height = SIZE_WH
        vout.pix_fmt = "yuv420p"
        vout.options = {"crf": str(ENCODE["crf"]), "preset": str(ENCODE["preset"])}
        ain = src.streams.audio[0]
        aout = dst.add_stream_from_template(ain)
        for index, row in enumerate(frames.iter_rows()):
            frame = av.VideoFrame.from_ndarray(row["frame"], format="rgb24").reformat(
                format="yuv420p"
            )
            frame.pts, frame.time_base = index, Fraction(1, FPS)
            dst.mux(vout.encode(frame))
        dst.mux(vout.encode(None))
        for packet in src.demux(ain):
            if packet.size:
                packet.stream = aout
                dst.mux(packet)
    return time.monotonic() - started


def have_ray_data() -> bool:
    return all(importlib.util.find_spec(name) for name in ("ray", "decord", "pyarrow"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args()
    os.environ[SLEEP_ENV] = str(SLEEP_MS)  # the workers and Ray's actors inherit it
    info = _common.machine_info()
    _common.print_machine(info)
    repeats = 1 if args.quick else 3
    peers = have_ray_data()
    if not peers:
        print("Ray Data is not installed (pip install 'ray[data]' decord): its row is skipped")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        clip = clip_with_audio(root)
        if peers:
            import ray

            # Ray's workers import the stand-in from here, and read its wait from the env
            paths = [str(HERE), os.environ.get("PYTHONPATH", "")]
            os.environ["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
            # a CPU per actor and two for the read tasks (with only the actors' CPUs,
            # the reads never get one: the pipeline waits forever)
            ray.init(
                address="local",
                num_cpus=SLOTS + 2,
                include_dashboard=False,
                log_to_driver=False,
            )
        times: dict[str, list[float]] = {"plain": [], "vidshard": [], "ray data": []}
        try:
            for _ in range(repeats):
                times["plain"].append(run_plain(clip, root / "plain.mp4"))
                times["vidshard"].append(run_vidshard(clip, root / "vidshard.mp4"))
                if peers:
                    times["ray data"].append(run_ray_data(clip, root / "ray.mp4"))
        finally:
            if peers:
                ray.shutdown()
    report(times, info, args.json)


def report(times: dict[str, list[float]], info: dict[str, Any], json_path: str | None) -> None:
    model_s = SECONDS * FPS * SLEEP_MS / 1000 / SLOTS
    medians = {name: statistics.median(walls) for name, walls in times.items() if walls}
    ours = medians["vidshard"]
    print(
        f"\n## {SECONDS} s {SIZE_WH[0]}x{SIZE_WH[1]} with audio, {SLEEP_MS:g} ms/frame on "
        f"{SLOTS} slots (model time {model_s:.2f} s), libx264 crf 0 ultrafast\n"
    )
    rows = [
        [
            name,
            f"{wall:.2f}",
            f"{wall / model_s:.2f}" if name != "plain" else "(no model)",
            f"{wall / ours:.2f}",
        ]
        for name, wall in medians.items()
    ]
    _common.print_table(["run", "wall s (median)", "x model time", "x vidshard"], rows)
    _common.write_json(
        json_path,
        {"times": times, "medians": medians, "model_s": model_s, "machine": info},
    )


if __name__ == "__main__":
    main()
