"""The ``upscale`` task: one video in, one video out, segments over every slot."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator

from vidshard.engine import upscale as engine
from vidshard.engine.upscale import UpscaleOptions, UpscaleResult
from vidshard.errors import ConfigError, ModelError
from vidshard.models.options import TileOption
from vidshard.models.registry import (
    ModelOptions,
    ModelRef,
    default_registry,
    names_a_file,
    resolve_model,
    unknown_model_message,
)

from .base import ModelAccess, Outcome, Task, TaskRun
from .options import Cli, Served, TaskOptions, option_label

VIDEO_SUFFIXES = (".mp4", ".mkv", ".mov")
MIN_TILE, MAX_TILE = 16, 8192


def parse_tile(value: str) -> TileOption:
    """``auto``, ``0``/``none`` (no tiling) or a tile edge in pixels."""
    text = value.strip().lower()
    if text == "auto":
        return "auto"
    if text in ("0", "none", "off"):
        return None
    try:
        return int(text)
    except ValueError:
        raise ConfigError(f"--tile expects a number of pixels or 'auto', got {value!r}") from None


class UpscaleParams(TaskOptions):
    """The options of an ``upscale`` job."""

    model: Annotated[
        str,
        Field(
            "lanczos",
            min_length=1,
            max_length=4096,
            description="lanczos, bicubic, identity, a weights file (.pth/.safetensors: HAT, "
            "Real-ESRGAN, SwinIR, ...) or your own class (pkg.module:Class, file.py:Class).",
        ),
        Served(default_setting="default_model"),
    ]
    scale: Annotated[
        int | None, Field(None, ge=1, le=16, description="Scale factor (default: the model's).")
    ]
    tile: Annotated[
        int | Literal["auto"] | None,
        Field("auto", description="Tile edge in pixels, auto, or 0 (null) for none."),
        Cli(parse=parse_tile, metavar="auto|N|0"),
    ]
    tile_overlap: Annotated[int, Field(16, ge=0, le=512, description="Tile overlap in pixels.")]
    overlap_frames: Annotated[
        int,
        Field(0, ge=0, le=120, description="Context frames on each side of a segment; crossfaded."),
    ]
    segment_seconds: Annotated[
        float | None,
        Field(
            None,
            gt=0,
            le=3600,
            description="Segment length (default: ~2 s, a keyframe interval or more; 4+ per slot).",
        ),
    ]
    codec: Annotated[
        str, Field("libx264", min_length=1, max_length=64, description="Video encoder.")
    ]
    crf: Annotated[
        int | None, Field(18, ge=0, le=63, description="Quality; 0 with libx264 is lossless.")
    ]
    preset: Annotated[
        str | None, Field("medium", min_length=1, max_length=32, description="Encoder preset.")
    ]
    precision: Annotated[
        Literal["fp32", "fp16", "bf16"], Field("fp32", description="fp32, fp16 or bf16.")
    ]
    batch_size: Annotated[
        int | None, Field(None, ge=1, le=256, description="Frames per model call.")
    ]
    down_sample: Annotated[
        bool,
        Field(
            False,
            description="Shrink frames by the scale before the model: the output keeps the "
            "input's size (restoration instead of enlargement).",
        ),
    ]
    resume: Annotated[
        bool,
        Field(True, description="Reuse the finished segments of an interrupted run of the job."),
        Served(exposed=False),  # the service always resumes
    ]
    verify: Annotated[
        Literal["packets", "full"],
        Field(
            "packets",
            description="How the output is checked: packets (every piece's frames and times "
            "where it is made, the joined file's by demuxing) or full (the joined file "
            "decoded too).",
        ),
    ]

    @field_validator("tile")
    @classmethod
    def _tile(cls, tile: int | str | None) -> int | str | None:
        if isinstance(tile, int) and tile == 0:
            return None
        if isinstance(tile, int) and not MIN_TILE <= tile <= MAX_TILE:
            raise ValueError(f"expected 'auto', 0 (none), or {MIN_TILE}..{MAX_TILE} pixels")
        return tile


class UpscaleTask(Task[UpscaleParams, UpscaleResult]):
    name = "upscale"
    summary = "Upscale a video over every device: exact frames and timestamps, audio kept."
    options_type = UpscaleParams
    inputs = "one"
    output_suffixes = VIDEO_SUFFIXES
    input_help = "Video file to upscale."

    def check(self, options: UpscaleParams, models: ModelAccess) -> ModelRef:
        """The model, resolved (a registered name, or a file ``models`` allows), and the
        encoder settings, checked."""
        name = options.model
        if default_registry().get(name) is None:
            if not names_a_file(name):  # a typo of a built-in name, not a file
                where = option_label("model", UpscaleParams, models.naming)
                raise ModelError(f"{where}: {unknown_model_message(name)}")
            name = models.file(name, "model")
        engine = _engine_options(options, name)
        engine.validate()
        engine.encode_settings()
        return resolve_model(
            name,
            scale=options.scale,
            options=ModelOptions(
                precision=options.precision,
                tile=options.tile,
                tile_overlap=options.tile_overlap,
                batch_size=options.batch_size,
            ),
        )

    def output_name(self, source: Path, options: UpscaleParams, prepared: Any) -> str:
        suffix = source.suffix.lower() if source.suffix.lower() in VIDEO_SUFFIXES else ".mp4"
        stem = source.stem if source.suffix else "output"
        assert isinstance(prepared, ModelRef)
        return f"{stem}-x{prepared.spec.scale}{suffix}"

    def run(self, run: TaskRun[UpscaleParams]) -> UpscaleResult:
        ref = run.prepared
        assert isinstance(ref, ModelRef)
        target = run.options.model if ref.kind == "registered" else ref.target
        options = _engine_options(
            run.options,
            target,
            devices=run.devices,
            workers_per_device=run.workers_per_device,
            executor=run.executor,
        )
        return engine.run_upscale(  # looked up here, so a test can stand in for it
            run.input,
            run.output,
            options,
            on_progress=run.on_progress,
            on_phase=run.on_phase,
            executor=run.executor_for,
            source_identity=run.identities.get(str(run.input)),
        )

    def outcome(self, result: UpscaleResult) -> Outcome:
        w, h = result.size_wh
        lines = []
        if result.resumed_units:
            lines.append(f"resumed {result.resumed_units} finished unit(s) of an interrupted run")
        lines.append(
            f"wrote {result.output} ({w}x{h}, {result.frames} frames) in "
            f"{result.seconds:.1f} s, {result.fps:.1f} fps over {len(result.slots)} slot(s)"
        )
        warnings: tuple[str, ...] = ()
        if result.quarantined:
            names = ", ".join(result.quarantined)
            warnings = (f"quarantined after repeated failures: {names}",)
        return Outcome(
            frames=result.frames,
            files=(result.output,),
            lines=tuple(lines),
            warnings=warnings,
            summary={
                "output": str(result.output),
                "frames": result.frames,
                "seconds": round(result.seconds, 3),
                "fps": round(result.fps, 2),
                "size_wh": list(result.size_wh),
                "segments": result.segments,
                "resumed_units": result.resumed_units,
                "quarantined": list(result.quarantined),
                "slots": [
                    {"slot": s.label, "frames": s.frames, "units": s.units, "fps": round(s.fps, 2)}
                    for s in result.slots
                ],
            },
        )


def _engine_options(options: UpscaleParams, model: str, **run: Any) -> UpscaleOptions:
    return UpscaleOptions(
        model=model,
        scale=options.scale,
        tile=options.tile,
        tile_overlap=options.tile_overlap,
        overlap_frames=options.overlap_frames,
        segment_seconds=options.segment_seconds,
        codec=options.codec,
        crf=options.crf,
        preset=options.preset,
        precision=options.precision,
        batch_size=options.batch_size,
        resume=options.resume,
        down_sample=options.down_sample,
        verify=options.verify,
        **run,
    )
