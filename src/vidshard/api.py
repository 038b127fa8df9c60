"""The Python API: the same jobs as the CLI, as plain function calls."""

from __future__ import annotations

import os

from vidshard.engine.upscale import (
    PhaseFn,
    ProgressFn,
    UpscaleOptions,
    UpscaleResult,
    run_upscale,
)
from vidshard.models.options import TileOption


def upscale(
    input: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    model: str = "lanczos",
    scale: int | None = None,
    devices: str = "all",
    workers_per_device: int = 1,
    tile: TileOption = "auto",
    tile_overlap: int = 16,
    overlap_frames: int = 0,
    segment_seconds: float | None = None,
    codec: str = "libx264",
    crf: int | None = 18,
    preset: str | None = "medium",
    precision: str = "fp32",
    batch_size: int | None = None,
    resume: bool = True,
    down_sample: bool = False,
    on_progress: ProgressFn | None = None,
    on_phase: PhaseFn | None = None,
) -> UpscaleResult:
    """Upscale one video over every slot ``devices`` names; see ``vidshard upscale --help``.

    Raises a :class:`vidshard.errors.VidshardError` subclass for bad input; nothing is
    left at ``output`` unless the job succeeds.
    """
    options = UpscaleOptions(
        model=model,
        scale=scale,
        devices=devices,
        workers_per_device=workers_per_device,
        tile=tile,
        tile_overlap=tile_overlap,
        overlap_frames=overlap_frames,
        segment_seconds=segment_seconds,
        codec=codec,
        crf=crf,
        preset=preset,
        precision=precision,
        batch_size=batch_size,
        resume=resume,
        down_sample=down_sample,
    )
    return run_upscale(input, output, options, on_progress=on_progress, on_phase=on_phase)
