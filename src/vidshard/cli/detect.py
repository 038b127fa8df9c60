"""`vidshard detect` and `vidshard track`: videos → JSONL (+ annotated videos)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from vidshard.errors import ConfigError, InputError

from .app import app, err, out, user_errors

Inputs = Annotated[
    list[Path] | None, typer.Argument(help="Video files (or give --list).", show_default=False)
]
ListFile = Annotated[
    Path | None, typer.Option("--list", help="A file of video paths, one a line, # comments.")
]
Output = Annotated[Path, typer.Option("--output", "-o", help="The JSONL file to write.")]
Model = Annotated[
    str,
    typer.Option(
        "--model",
        "-m",
        help="YOLO weights (.pt, .onnx, .engine) you provide, a YOLO model config "
        "(yolo11n.yaml: random weights, for trying out), a Grounding DINO folder (with "
        "--prompt), or your own detector class (file.py:Class).",
    ),
]
Prompt = Annotated[str | None, typer.Option(help='Text prompt for Grounding DINO: "car. person."')]
Conf = Annotated[float, typer.Option(help="Minimum score (Grounding DINO: box threshold).")]
Iou = Annotated[float, typer.Option(help="NMS IoU threshold (YOLO).")]
Classes = Annotated[
    str | None, typer.Option(help="Keep only these classes: names or ids, comma-separated.")
]
Imgsz = Annotated[int, typer.Option(help="Inference size in pixels (YOLO).")]
Half = Annotated[bool, typer.Option("--half", help="fp16 inference on accelerators.")]
BatchSize = Annotated[int, typer.Option(help="Frames per detector call.")]
Fps = Annotated[
    float | None, typer.Option("--fps", help="Process this many frames per second of video.")
]
MaxFrames = Annotated[int | None, typer.Option(help="At most this many frames per video.")]
AnnotateDir = Annotated[
    Path | None,
    typer.Option(help="Also write each video with boxes, ids and masks drawn, audio kept."),
]
SkipExisting = Annotated[
    bool,
    typer.Option("--skip-existing", help="Leave out videos the JSONL already has a line for."),
]
Devices = Annotated[
    str, typer.Option(help="all, 0,1,3, cuda:0-3, npu:0-7, cpu:4; repeats are weights.")
]
WorkersPerDevice = Annotated[int, typer.Option(help="Worker slots per device.")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")]
AsJson = Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")]


def _inputs(inputs: list[Path] | None, list_file: Path | None) -> list[str]:
    from vidshard.engine.detect import read_list

    videos = [str(p) for p in inputs or []]
    if list_file is not None:
        videos += read_list(list_file)
    if not videos:
        raise InputError("no videos: give video files, or --list FILE")
    return videos


def _run(
    videos: list[str],
    output: Path,
    recipe: object,
    options: object,
    quiet: bool,
    as_json: bool,
) -> None:
    from vidshard.cli.display import JobDisplay
    from vidshard.detect.pipeline import DetectRecipe
    from vidshard.engine.detect import DetectOptions, VideoOutcome, run_detect

    assert isinstance(recipe, DetectRecipe) and isinstance(options, DetectOptions)
    show = not quiet and not as_json and err.is_terminal
    with JobDisplay(err, "starting", enabled=show) as display:

        def on_video(outcome: VideoOutcome) -> None:
            if as_json or quiet:
                return
            if outcome.error is None:
                err.print(
                    f"[green]done[/] {outcome.path}: {_frames_text(outcome)}",
                    highlight=False,
                    soft_wrap=True,  # one line per video, however long its path
                )
            else:
                error = outcome.error
                where = "" if error.startswith(outcome.path) else f"{outcome.path}: "
                err.print(f"[red]failed[/] {where}{error}", highlight=False, soft_wrap=True)

        result = run_detect(
            videos,
            output,
            recipe,
            options,
            on_progress=display.update,
            on_phase=display.phase,
            on_video=on_video,
        )
    failed = result.failed
    if as_json:
        out.print_json(
            json.dumps(
                {
                    "output": str(result.output),
                    "videos": len(result.videos),
                    "failed": [{"video": v.path, "error": v.error} for v in failed],
                    "skipped": list(result.skipped),
                    "frames": result.frames,
                    "seconds": round(result.seconds, 3),
                    "fps": round(result.fps, 2),
                    "annotated": [str(v.annotated) for v in result.videos if v.annotated],
                    "slots": [
                        {"slot": s.label, "frames": s.frames, "units": s.units}
                        for s in result.slots
                    ],
                }
            )
        )
    else:
        if result.skipped:
            out.print(
                f"skipped {len(result.skipped)} video(s) already in {output}",
                highlight=False,
                soft_wrap=True,
            )
        ok = len(result.videos) - len(failed)
        out.print(
            f"wrote {ok} video(s) to {result.output} ({result.frames} frames processed) in "
            f"{result.seconds:.1f} s, {result.fps:.1f} fps over {len(result.slots)} slot(s)",
            highlight=False,
            soft_wrap=True,
        )
        if failed:
            err.print(
                f"[red]{len(failed)} video(s) failed[/]; their lines in {output} carry the error",
                highlight=False,
                soft_wrap=True,
            )
    if failed:
        raise typer.Exit(1)


def _frames_text(outcome: object) -> str:
    """``8 of 40 frames processed``: the video's frame records in the JSONL, of its
    ``video_info.frames``."""
    from vidshard.engine.detect import VideoOutcome

    assert isinstance(outcome, VideoOutcome)
    total = "?" if outcome.video_frames is None else str(outcome.video_frames)
    return f"{outcome.frames} of {total} frames processed"


def _recipe(
    model: str,
    prompt: str | None,
    conf: float,
    iou: float,
    classes: str | None,
    imgsz: int,
    half: bool,
    batch_size: int,
    tracker: str = "none",
    sam2: Path | None = None,
    detection_frequency: int = 1,
    masks: bool = False,
) -> object:
    from vidshard.detect.pipeline import DetectorOptions, DetectRecipe, detector_kind
    from vidshard.models.detect_files import weights_argument

    kind = detector_kind(model)
    weights = weights_argument(model, kind)
    names = tuple(c.strip() for c in classes.split(",") if c.strip()) if classes else None
    recipe = DetectRecipe(
        detector=kind,
        weights=weights,
        options=DetectorOptions(
            conf=conf,
            iou=iou,
            classes=names,
            imgsz=imgsz,
            half=half,
            batch_size=batch_size,
            prompt=prompt,
        ),
        tracker=tracker,
        sam2=str(sam2.expanduser().resolve()) if sam2 is not None else None,
        detection_frequency=detection_frequency,
        masks=masks,
    )
    recipe.validate()
    return recipe


@app.command()
def detect(
    inputs: Inputs = None,
    output: Output = Path("detections.jsonl"),
    list_file: ListFile = None,
    model: Model = "yolo11n.pt",
    prompt: Prompt = None,
    conf: Conf = 0.25,
    iou: Iou = 0.7,
    classes: Classes = None,
    imgsz: Imgsz = 640,
    half: Half = False,
    batch_size: BatchSize = 8,
    fps: Fps = None,
    max_frames: MaxFrames = None,
    annotate_dir: AnnotateDir = None,
    skip_existing: SkipExisting = False,
    devices: Devices = "all",
    workers_per_device: WorkersPerDevice = 1,
    quiet: Quiet = False,
    as_json: AsJson = False,
) -> None:
    """Detect objects in videos over every device; one JSONL line per video."""
    from vidshard.engine.detect import DetectOptions

    with user_errors():
        recipe = _recipe(model, prompt, conf, iou, classes, imgsz, half, batch_size)
        options = DetectOptions(
            devices=devices,
            workers_per_device=workers_per_device,
            sample_fps=fps,
            max_frames=max_frames,
            annotate_dir=annotate_dir,
            skip_existing=skip_existing,
        )
        _run(_inputs(inputs, list_file), output, recipe, options, quiet, as_json)


@app.command()
def track(
    inputs: Inputs = None,
    output: Output = Path("tracks.jsonl"),
    list_file: ListFile = None,
    model: Model = "yolo11n.pt",
    prompt: Prompt = None,
    tracker: Annotated[
        str, typer.Option(help="bytetrack (boxes), or sam2 (masks, needs --sam2).")
    ] = "bytetrack",
    sam2: Annotated[Path | None, typer.Option(help="SAM2 video model folder.")] = None,
    masks: Annotated[bool, typer.Option("--masks", help="Write masks (RLE); with sam2.")] = False,
    detection_frequency: Annotated[
        int, typer.Option(help="With sam2: detect every N frames, follow masks between.")
    ] = 1,
    overlap_frames: Annotated[
        int, typer.Option(help="Frames two parts of a split video share, to match track ids.")
    ] = 8,
    conf: Conf = 0.25,
    iou: Iou = 0.7,
    classes: Classes = None,
    imgsz: Imgsz = 640,
    half: Half = False,
    batch_size: BatchSize = 8,
    fps: Fps = None,
    max_frames: MaxFrames = None,
    annotate_dir: AnnotateDir = None,
    skip_existing: SkipExisting = False,
    devices: Devices = "all",
    workers_per_device: WorkersPerDevice = 1,
    quiet: Quiet = False,
    as_json: AsJson = False,
) -> None:
    """Track objects in videos over every device: ids kept across frames (and across the
    parts of a long video split over devices); one JSONL line per video."""
    from vidshard.engine.detect import DetectOptions

    with user_errors():
        if masks and tracker != "sam2":
            raise ConfigError("--masks needs --tracker sam2 (ByteTrack follows boxes only)")
        recipe = _recipe(
            model,
            prompt,
            conf,
            iou,
            classes,
            imgsz,
            half,
            batch_size,
            tracker=tracker,
            sam2=sam2,
            detection_frequency=detection_frequency,
            masks=masks,
        )
        options = DetectOptions(
            devices=devices,
            workers_per_device=workers_per_device,
            sample_fps=fps,
            max_frames=max_frames,
            overlap_frames=overlap_frames,
            annotate_dir=annotate_dir,
            skip_existing=skip_existing,
        )
        _run(_inputs(inputs, list_file), output, recipe, options, quiet, as_json)
