"""The ``detect`` and ``track`` tasks: a list of videos in, one JSONL line per video out
(and, when asked, each video with the results drawn)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from vidshard.detection.pipeline import DetectorOptions, DetectRecipe, detector_kind
from vidshard.engine import detect as engine
from vidshard.engine.detect import DetectOptions, DetectResult, VideoOutcome
from vidshard.models.detect_files import is_shipped_config_name, weights_argument
from vidshard.pathnames import expand_user

from .base import ModelAccess, Outcome, Task, TaskRun
from .options import Cli, Served, TaskOptions

MAX_CLASS_NAME = 200


def parse_classes(value: str) -> list[str]:
    """``car,person`` or ``0, 2``: class names or ids, comma-separated."""
    return [name.strip() for name in value.split(",") if name.strip()]


class DetectorParams(TaskOptions):
    """The detector's options: what detect, track and live streams share."""

    model: Annotated[
        str,
        Field(
            "yolo11n.pt",
            min_length=1,
            max_length=4096,
            description="YOLO weights (.pt, .onnx, .engine) you provide, a YOLO model config "
            "(yolo11n.yaml: random weights, for trying out), a Grounding DINO folder (with "
            "prompt), or your own detector class (file.py:Class).",
        ),
        Cli(flags=("--model", "-m")),
        Served(required=True),
    ]
    prompt: Annotated[
        str | None,
        Field(
            None,
            min_length=1,
            max_length=2000,
            description='Text prompt for Grounding DINO: "car. person."',
        ),
    ]
    conf: Annotated[
        float, Field(0.25, ge=0, le=1, description="Minimum score (Grounding DINO: box threshold).")
    ]
    iou: Annotated[float, Field(0.7, gt=0, le=1, description="NMS IoU threshold (YOLO).")]
    classes: Annotated[
        list[str] | None,
        Field(None, max_length=1000, description="Keep only these classes: names or ids."),
        Cli(parse=parse_classes, metavar="NAMES"),
    ]
    imgsz: Annotated[
        int,
        Field(640, ge=32, le=8192, multiple_of=32, description="Inference size in pixels (YOLO)."),
    ]
    half: Annotated[bool, Field(False, description="fp16 inference on accelerators.")]
    batch_size: Annotated[int, Field(8, ge=1, le=256, description="Frames per detector call.")]

    @field_validator("classes")
    @classmethod
    def _class_names(cls, classes: list[str] | None) -> list[str] | None:
        for name in classes or []:
            if not 1 <= len(name) <= MAX_CLASS_NAME:
                raise ValueError(f"expected names of 1..{MAX_CLASS_NAME} characters")
        return classes


class DetectParams(DetectorParams):
    """The options of a ``detect`` job."""

    fps: Annotated[
        float | None,
        Field(None, gt=0, le=1000, description="Process this many frames per second of video."),
    ]
    max_frames: Annotated[
        int | None,
        Field(None, ge=1, le=2**63 - 1, description="At most this many frames per video."),
    ]
    annotate: Annotated[
        bool,
        Field(
            False,
            description="Also write each video with boxes, ids and masks drawn, audio kept "
            "(beside the JSONL, or in annotate_dir).",
        ),
    ]
    annotate_dir: Annotated[
        Path | None,
        Field(None, description="Write the annotated videos here (created when missing)."),
        Served(exposed=False),  # a service job's files stay in its own folder
    ]
    skip_existing: Annotated[
        bool,
        Field(False, description="Leave out videos the JSONL already has a line for."),
        Served(exposed=False),  # a service job writes a JSONL of its own
    ]


class TrackParams(DetectParams):
    """The options of a ``track`` job: a detect job's, and the tracker's."""

    tracker: Annotated[
        Literal["bytetrack", "sam2"],
        Field("bytetrack", description="bytetrack (boxes), or sam2 (masks, needs sam2)."),
    ]
    sam2: Annotated[
        str | None,
        Field(None, min_length=1, max_length=4096, description="SAM2 video model folder."),
    ]
    masks: Annotated[bool, Field(False, description="Write masks (RLE); with sam2.")]
    detection_frequency: Annotated[
        int,
        Field(1, ge=1, le=10000, description="With sam2: detect every N frames, follow between."),
    ]
    overlap_frames: Annotated[
        int,
        Field(
            8, ge=0, le=120, description="Frames two parts of a split video share, to match ids."
        ),
    ]

    @model_validator(mode="after")
    def _masks_need_sam2(self) -> TrackParams:
        if self.masks and self.tracker != "sam2":
            raise ValueError("masks need tracker sam2 (ByteTrack follows boxes only)")
        return self


class DetectTask(Task[DetectParams, DetectResult]):
    name = "detect"
    summary = "Detect objects in videos over every device; one JSONL line per video."
    options_type: ClassVar[type[DetectParams]] = DetectParams
    inputs = "many"
    output_suffixes = (".jsonl",)
    default_output = "detections.jsonl"
    input_help = "Video files, or list files (.txt: one path a line, # comments)."
    tracking: ClassVar[bool] = False

    def check(self, options: DetectParams, models: ModelAccess) -> DetectRecipe:
        """The detect pipeline the workers build, with every model file checked (before any
        worker starts: a missing file fails here)."""
        if not isinstance(options, TrackParams):
            return detector_recipe(options, models)
        sam2 = None
        if options.sam2 is not None:
            sam2 = str(expand_user(models.file(options.sam2, "sam2")).resolve())
        return detector_recipe(
            options,
            models,
            tracker=options.tracker,
            sam2=sam2,
            detection_frequency=options.detection_frequency,
            masks=options.masks,
        )

    def run(self, run: TaskRun[DetectParams]) -> DetectResult:
        options = run.options
        annotate_dir = options.annotate_dir
        if annotate_dir is None and options.annotate:
            annotate_dir = run.output.parent
        settings = DetectOptions(
            devices=run.devices,
            workers_per_device=run.workers_per_device,
            sample_fps=options.fps,
            max_frames=options.max_frames,
            overlap_frames=options.overlap_frames if isinstance(options, TrackParams) else 8,
            annotate_dir=annotate_dir,
            skip_existing=options.skip_existing,
            executor=run.executor,
        )

        def on_video(outcome: VideoOutcome) -> None:
            if outcome.error is None:
                run.note(True, f"{outcome.path}: {frames_text(outcome)}")
            else:
                where = "" if outcome.error.startswith(outcome.path) else f"{outcome.path}: "
                run.note(False, f"{where}{outcome.error}")

        return engine.run_detect(
            [str(path) for path in run.inputs],
            run.output,
            run.prepared,
            settings,
            on_progress=run.on_progress,
            on_phase=run.on_phase,
            on_video=on_video,
            executor=run.executor_for,
            source_identities=run.identities,
        )

    def outcome(self, result: DetectResult) -> Outcome:
        failed = result.failed
        lines = []
        if result.skipped:
            lines.append(f"skipped {len(result.skipped)} video(s) already in {result.output}")
        lines.append(
            f"wrote {len(result.videos) - len(failed)} video(s) to {result.output} "
            f"({result.frames} frames processed) in {result.seconds:.1f} s, "
            f"{result.fps:.1f} fps over {len(result.slots)} slot(s)"
        )
        annotated = tuple(v.annotated for v in result.videos if v.annotated is not None)
        return Outcome(
            frames=result.frames,
            files=(result.output, *annotated),
            lines=tuple(lines),
            failed=tuple(v.error or "" for v in failed),
            failure_line=(
                f"{len(failed)} video(s) failed; their lines in {result.output} carry the error"
                if failed
                else None
            ),
            summary=_summary(result),
        )


class TrackTask(DetectTask):
    name = "track"
    summary = (
        "Track objects in videos over every device: ids kept across frames (and across the "
        "parts of a long video split over devices); one JSONL line per video."
    )
    options_type = TrackParams
    default_output = "tracks.jsonl"
    tracking = True


def detector_recipe(
    options: DetectorParams,
    models: ModelAccess,
    *,
    tracker: str = "none",
    sam2: str | None = None,
    detection_frequency: int = 1,
    masks: bool = False,
) -> DetectRecipe:
    """The recipe a worker builds its detector (and tracker) from, its model files
    checked now: a missing or broken file fails here, before any worker starts."""
    model = options.model
    if not (is_shipped_config_name(model) and not models.exists(model)):
        model = models.file(model, "model")
    kind = detector_kind(model)
    recipe = DetectRecipe(
        detector=kind,
        weights=weights_argument(model, kind),
        options=DetectorOptions(
            conf=options.conf,
            iou=options.iou,
            classes=tuple(options.classes) if options.classes else None,
            imgsz=options.imgsz,
            half=options.half,
            batch_size=options.batch_size,
            prompt=options.prompt,
        ),
        tracker=tracker,
        sam2=sam2,
        detection_frequency=detection_frequency,
        masks=masks,
    )
    recipe.validate()
    return recipe


def frames_text(outcome: VideoOutcome) -> str:
    """``8 of 40 frames processed``: the video's frame records in the JSONL, of its
    ``video_info.frames``."""
    total = "?" if outcome.video_frames is None else str(outcome.video_frames)
    return f"{outcome.frames} of {total} frames processed"


def _summary(result: DetectResult) -> dict[str, Any]:
    return {
        "output": str(result.output),
        "videos": len(result.videos),
        "failed": [{"video": v.path, "error": v.error} for v in result.failed],
        "skipped": list(result.skipped),
        "frames": result.frames,
        "seconds": round(result.seconds, 3),
        "fps": round(result.fps, 2),
        "annotated": [str(v.annotated) for v in result.videos if v.annotated],
        "slots": [{"slot": s.label, "frames": s.frames, "units": s.units} for s in result.slots],
    }
