"""vidshard's own overhead: the ``identity`` model through vidshard vs a plain PyAV transcode.

Both sides decode the same file and encode it with the same encoder settings (libx264,
same crf and preset, yuv420p, encoder threads left to the encoder), in the same run,
alternating: each repetition runs the plain baseline, then vidshard on ``cpu:1``, then
on ``cpu:2`` (then the informational no-RGB baseline); the medians are compared.

The plain baseline is ONE process, ONE Python thread: it demuxes the input, decodes the
video (FFmpeg frame threads, ``thread_type = AUTO``, count left to FFmpeg), converts
every frame to an RGB24 numpy array (what vidshard hands a model), converts it back to
yuv420p with the BT.709 matrix and limited range (what vidshard's segment writer does),
encodes it with libx264 and muxes it into an MP4 with the input frame's pts; audio and
other packets are copied as they are demuxed. No segments, no worker processes, no join,
no verification. A second baseline ("plain, no RGB") encodes the decoded yuv420p frames
directly (an ``ffmpeg -c:v libx264`` transcode) and is shown for information only:
vidshard's model interface needs the RGB round trip, so it is not the goal's baseline.

    python benchmarks/overhead.py            # car-detection.mp4 + a 60 s 640x360 clip, 5 reps
    python benchmarks/overhead.py --quick    # car-detection.mp4 + a 10 s clip, 1 rep
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import _common  # noqa: E402  (after the path fix-up; light: no heavy imports)

EXAMPLE = HERE.parent / "examples" / "car-detection.mp4"
GOAL_RATIO = 1.3


def plain_transcode(
    source: Path, output: Path, *, codec: str, crf: int, preset: str, rgb: bool = True
) -> dict[str, Any]:
    """The baseline (see the module docstring): decode -> [RGB -> yuv420p] -> encode."""
    import av
    from av.video.reformatter import ColorPrimaries, ColorRange, Colorspace, ColorTrc

    cpu0 = _common.cpu_seconds()
    started = time.monotonic()
    frames = 0
    with av.open(str(source)) as src, av.open(str(output), mode="w") as dst:
        vin = src.streams.video[0]
        vin.thread_type = "AUTO"
        vout = dst.add_stream(codec, rate=vin.average_rate)
        vout.width, vout.height = vin.width, vin.height
        vout.pix_fmt = "yuv420p"
        vout.time_base = vin.time_base
        vout.codec_context.time_base = vin.time_base
        if rgb:  # tagged as vidshard tags its output
            vout.codec_context.colorspace = Colorspace.ITU709.value
            vout.codec_context.color_range = ColorRange.MPEG.value
            vout.codec_context.color_primaries = ColorPrimaries.BT709.value
            vout.codec_context.color_trc = ColorTrc.BT709.value
        vout.options = {"crf": str(crf), "preset": preset}
        copied = {}
        for stream in src.streams:
            if stream.index != vin.index and stream.type in ("audio", "subtitle", "data"):
                copied[stream.index] = dst.add_stream_from_template(stream, opaque=True)
        for packet in src.demux():
            if packet.stream.index != vin.index:
                if packet.stream.index in copied and packet.size:
                    packet.stream = copied[packet.stream.index]
                    dst.mux(packet)
                continue
            for frame in packet.decode():
                if rgb:
                    image = frame.to_ndarray(format="rgb24", src_color_range=frame.color_range)
                    out = av.VideoFrame.from_ndarray(image, format="rgb24").reformat(
                        format="yuv420p",
                        dst_colorspace=Colorspace.ITU709,
                        dst_color_range=ColorRange.MPEG,
                        dst_color_trc=ColorTrc.BT709,
                        dst_color_primaries=ColorPrimaries.BT709,
                    )
                else:
                    out = frame if frame.format.name == "yuv420p" else frame.reformat("yuv420p")
                    out.pict_type = av.video.frame.PictureType.NONE
                out.pts = frame.pts
                out.time_base = vin.time_base
                dst.mux(vout.encode(out))
                frames += 1
        dst.mux(vout.encode(None))
    wall = time.monotonic() - started
    return {"wall_s": wall, "cpu_s": _common.cpu_seconds() - cpu0, "frames": frames}


def vidshard_run(
    source: Path, output: Path, *, slots: int, codec: str, crf: int, preset: str
) -> dict[str, Any]:
    return _common.timed_upscale(
        source,
        output,
        model="identity",
        devices=f"cpu:{slots}",
        codec=codec,
        crf=crf,
        preset=preset,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small run, under a minute")
    parser.add_argument("--repeats", type=int, default=None, help="repetitions (full 5, quick 1)")
    parser.add_argument(
        "--seconds", type=float, default=None, help="generated clip length (full 60, quick 10)"
    )
    parser.add_argument("--codec", default="libx264")
    parser.add_argument("--crf", type=int, default=18)
    parser.add_argument("--preset", default="ultrafast", help="x264 preset (default ultrafast)")
    parser.add_argument("--slots", default="1,2", help="vidshard CPU slot counts (default 1,2)")
    parser.add_argument("--json", metavar="PATH", help="write the figures as JSON")
    args = parser.parse_args()

    repeats = args.repeats or (1 if args.quick else 5)
    seconds = args.seconds or (10.0 if args.quick else 60.0)
    slot_counts = [int(s) for s in args.slots.split(",")]
    enc = {"codec": args.codec, "crf": args.crf, "preset": args.preset}

    info = _common.machine_info()
    _common.print_machine(info)
    generated = _common.cached_clip((640, 360), seconds, fps=25)
    clips = [EXAMPLE, generated]
    variants = ["plain", *(f"vidshard cpu:{n}" for n in slot_counts), "plain, no RGB"]
    print(
        f"clips: {', '.join(c.name for c in clips)}; {repeats} repetition(s); "
        f"{args.codec} crf {args.crf} preset {args.preset}",
        flush=True,
    )

    load = _common.ForeignLoad()
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="vidshard-overhead-") as tmp:
        out_dir = Path(tmp)
        for clip in clips:
            for rep in range(repeats):
                for variant in variants:
                    output = out_dir / f"{variant.replace(' ', '_').replace(':', '')}.mp4"
                    if variant.startswith("plain"):
                        run = plain_transcode(clip, output, rgb=variant == "plain", **enc)
                    else:
                        slots = int(variant.rsplit(":", 1)[1])
                        run = vidshard_run(clip, output, slots=slots, **enc)
                    output.unlink(missing_ok=True)
                    run.update(clip=clip.name, variant=variant, rep=rep)
                    runs.append(run)
                    extra = ""
                    if "startup_s" in run:
                        extra = (
                            f" (start-up {run['startup_s']:.1f}, work {run['work_s']:.1f}, "
                            f"tail {run['tail_s']:.1f}; "
                            f"{run['segments']} segments)"
                        )
                    print(
                        f"  {clip.name} [{rep + 1}/{repeats}] {variant}: "
                        f"{run['wall_s']:.2f} s, CPU {run['cpu_s']:.1f} s{extra}",
                        flush=True,
                    )

    rows: list[dict[str, Any]] = []
    for clip in clips:
        group = [r for r in runs if r["clip"] == clip.name]
        plain = statistics.median(r["wall_s"] for r in group if r["variant"] == "plain")
        for variant in variants:
            mine = [r for r in group if r["variant"] == variant]
            wall = statistics.median(r["wall_s"] for r in mine)
            plain_by_rep = {r["rep"]: r["wall_s"] for r in group if r["variant"] == "plain"}
            row = {
                "clip": clip.name,
                "frames": next((r["frames"] for r in mine), None),
                "variant": variant,
                "wall_s": wall,
                "min_s": min(r["wall_s"] for r in mine),
                "max_s": max(r["wall_s"] for r in mine),
                "cpu_s": statistics.median(r["cpu_s"] for r in mine),
                "ratio": wall / plain,
                # each run against the plain run of the same repetition (adjacent in time)
                "paired_ratio": statistics.median(
                    r["wall_s"] / plain_by_rep[r["rep"]] for r in mine
                ),
            }
            for key in ("startup_s", "work_s", "tail_s"):
                if key in mine[0]:
                    row[key] = statistics.median(r[key] for r in mine)
            rows.append(row)

    print()
    print(
        f"vidshard (identity) vs plain PyAV decode -> RGB -> encode, {args.codec} "
        f"crf {args.crf} preset {args.preset}; medians of {repeats}\n"
        "x plain = median wall / median plain wall (the goal's figure); "
        "paired = median of each run / the plain run of its repetition"
    )

    def fmt(row: dict[str, Any], key: str) -> str:
        return f"{row[key]:.1f}" if key in row else ""

    _common.print_table(
        [
            "clip",
            "frames",
            "run",
            "wall s",
            "min-max s",
            "x plain",
            "paired",
            "CPU s",
            "start-up s",
            "work s",
            "tail s",
        ],
        [
            [
                r["clip"],
                r["frames"],
                r["variant"],
                f"{r['wall_s']:.2f}",
                f"{r['min_s']:.1f}-{r['max_s']:.1f}",
                f"{r['ratio']:.2f}",
                f"{r['paired_ratio']:.2f}",
                f"{r['cpu_s']:.1f}",
                fmt(r, "startup_s"),
                fmt(r, "work_s"),
                fmt(r, "tail_s"),
            ]
            for r in rows
        ],
    )
    checked = [r for r in rows if r["variant"].startswith("vidshard")]
    worst = max(checked, key=lambda r: r["ratio"])
    met = worst["ratio"] <= GOAL_RATIO
    print(
        f"\ngoal: vidshard / plain <= {GOAL_RATIO} for every clip and slot count: worst "
        f"{worst['ratio']:.2f} ({worst['clip']}, {worst['variant']}) -> "
        f"{'MET' if met else 'MISSED'}"
    )
    foreign = load.print_report()
    _common.write_json(
        args.json,
        {
            "benchmark": "overhead",
            "foreign_load": foreign,
            "machine": info,
            "params": {**enc, "repeats": repeats, "slots": slot_counts, "quick": args.quick},
            "clips": [str(c) for c in clips],
            "runs": runs,
            "rows": rows,
            "goal": {"ratio_max": GOAL_RATIO, "worst": worst["ratio"], "met": met},
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
