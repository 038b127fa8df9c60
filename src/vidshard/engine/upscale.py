"""The file → file job: probe, plan, run segments over every slot, join, verify."""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from vidshard.devices import discover_devices, parse_device_spec
from vidshard.devices.types import DeviceSlot
from vidshard.errors import ConfigError, InputError, OutputError, write_failure
from vidshard.executors.base import create_executor
from vidshard.media import (
    SEGMENT_SUFFIX,
    EncodeSettings,
    MediaInfo,
    check_output_container,
    join_segments,
    probe,
)
from vidshard.media.plan import Segment, plan_segments
from vidshard.models.options import TileOption
from vidshard.models.registry import ModelOptions, ModelRef, resolve_model

from .events import Event, UnitProgress
from .merger import OrderedMerger
from .progress import ProgressSnapshot, ProgressTracker, SlotStats
from .scheduler import run_units
from .units import SeamUnit, SegmentUnit, UnitResult, WorkUnit

logger = logging.getLogger(__name__)
DEFAULT_BATCH_SIZE = 4

ProgressFn = Callable[[ProgressSnapshot], None]
PhaseFn = Callable[[str], None]


@dataclass(frozen=True)
class UpscaleOptions:
    """Every option of ``vidshard upscale``; the CLI, the API and the service build one."""

    model: str = "lanczos"
    scale: int | None = None  # None: the model's own scale
    devices: str = "all"
    workers_per_device: int = 1
    tile: TileOption = "auto"
    tile_overlap: int = 16
    overlap_frames: int = 0
    segment_seconds: float | None = None
    codec: str = "libx264"
    crf: int | None = 18
    preset: str | None = "medium"
    precision: str = "fp32"
    batch_size: int | None = None
    executor: str = "local"

    def validate(self) -> None:
        if self.workers_per_device < 1:
            raise ConfigError(
                f"--workers-per-device must be 1 or more, got {self.workers_per_device}"
            )
        if self.overlap_frames < 0:
            raise ConfigError(f"--overlap-frames must be 0 or more, got {self.overlap_frames}")
        if self.tile_overlap < 0:
            raise ConfigError(f"--tile-overlap must be 0 or more, got {self.tile_overlap}")
        if self.batch_size is not None and self.batch_size < 1:
            raise ConfigError(f"--batch-size must be 1 or more, got {self.batch_size}")
        if self.segment_seconds is not None and self.segment_seconds <= 0:
            raise ConfigError(f"--segment-seconds must be positive, got {self.segment_seconds}")

    def encode_settings(self) -> EncodeSettings:
        settings = EncodeSettings(codec=self.codec, crf=self.crf, preset=self.preset)
        settings.validate()
        return settings


@dataclass(frozen=True)
class UpscaleResult:
    output: Path
    frames: int
    seconds: float
    size_wh: tuple[int, int]
    segments: int
    slots: tuple[SlotStats, ...] = field(default_factory=tuple)

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0


def check_paths(source: Path, output: Path) -> None:
    """Cheap checks before anything starts; typed errors naming the problem."""
    if not source.exists():
        raise InputError(f"input file not found: {source}")
    if source.is_dir():
        raise InputError(f"input is a directory, not a video file: {source}")
    if output.exists() and output.is_dir():
        raise OutputError(f"output is a directory; give a file name: {output}")
    if output.parent.exists() and not output.parent.is_dir():
        raise OutputError(f"output directory is not a directory: {output.parent}")
    if not output.parent.is_dir():
        raise OutputError(f"output directory does not exist: {output.parent}")
    same = output.resolve() == source.resolve()
    if not same and output.exists():
        same = os.path.samefile(output, source)
    if same:
        raise OutputError(f"output path is the input file: {output}")
    if not os.access(output.parent, os.W_OK):
        raise OutputError(f"no permission to write in {output.parent}")


def work_dir_for(output: Path) -> Path:
    """The job's scratch folder, beside the output so the final rename stays on one disk."""
    return output.parent / f".{output.name}.vidshard"


@dataclass(frozen=True)
class _Plan:
    units: list[WorkUnit]
    depends_on: dict[str, tuple[str, ...]]
    positions: dict[str, int]  # unit id → piece position in the joined output
    pieces: int
    segments: int


def build_plan(
    info: MediaInfo,
    segments: list[Segment],
    model: ModelRef,
    settings: EncodeSettings,
    work_dir: Path,
    batch_size: int,
) -> _Plan:
    scale = model.spec.scale
    video = info.video
    out_wh = (video.width * scale, video.height * scale)
    units: list[WorkUnit] = []
    depends_on: dict[str, tuple[str, ...]] = {}
    positions: dict[str, int] = {}
    seam_paths = {
        seg.index: (
            work_dir / f"seam-{seg.index:05d}-left.npy",
            work_dir / f"seam-{seg.index:05d}-right.npy",
        )
        for seg in segments
        if seg.seam_right is not None
    }
    for seg in segments:
        unit_id = f"segment-{seg.index:05d}"
        positions[unit_id] = len(positions)
        units.append(
            SegmentUnit(
                unit_id=unit_id,
                source=info.path,
                video=video,
                segment=seg,
                core_path=work_dir / f"core-{seg.index:05d}{SEGMENT_SUFFIX}",
                seam_left_path=seam_paths[seg.index - 1][1] if seg.seam_left else None,
                seam_right_path=seam_paths[seg.index][0] if seg.seam_right else None,
                settings=settings,
                scale=scale,
                batch_size=batch_size,
            )
        )
        if seg.seam_right is not None:
            seam_id = f"seam-{seg.index:05d}"
            positions[seam_id] = len(positions)
            left, right = seam_paths[seg.index]
            units.append(
                SeamUnit(
                    unit_id=seam_id,
                    video=video,
                    frame_range=seg.seam_right,
                    left_path=left,
                    right_path=right,
                    out_path=work_dir / f"seam-{seg.index:05d}{SEGMENT_SUFFIX}",
                    settings=settings,
                    size_wh=out_wh,
                )
            )
            depends_on[seam_id] = (unit_id, f"segment-{seg.index + 1:05d}")
    return _Plan(units, depends_on, positions, len(positions), len(segments))


def _prepare(
    source: Path, output: Path, options: UpscaleOptions
) -> tuple[MediaInfo, ModelRef, list[DeviceSlot], EncodeSettings]:
    options.validate()
    check_paths(source, output)
    settings = options.encode_settings()
    info = probe(source)
    check_output_container(info, output, video_codec=settings.codec)
    model = resolve_model(
        options.model,
        scale=options.scale,
        options=ModelOptions(
            precision=options.precision,
            tile=options.tile,
            tile_overlap=options.tile_overlap,
            batch_size=options.batch_size,
        ),
    )
    devices = [status.device for status in discover_devices()]
    slots = parse_device_spec(
        options.devices, devices, workers_per_device=options.workers_per_device
    )
    return info, model, slots, settings


def run_upscale(
    source: str | os.PathLike[str],
    output: str | os.PathLike[str],
    options: UpscaleOptions,
    *,
    on_progress: ProgressFn | None = None,
    on_phase: PhaseFn | None = None,
) -> UpscaleResult:
    """Upscale ``source`` into ``output`` over the slots ``options.devices`` names."""
    started = time.monotonic()
    source_path, output_path = Path(source), Path(output)
    phase = on_phase or (lambda _name: None)
    phase("checking input")
    info, model, slots, settings = _prepare(source_path, output_path, options)
    segments = plan_segments(
        info.video,
        slots=len(slots),
        segment_seconds=options.segment_seconds,
        overlap_frames=max(options.overlap_frames, model.spec.temporal_window),
    )
    work_dir = work_dir_for(output_path)
    shutil.rmtree(work_dir, ignore_errors=True)
    try:
        work_dir.mkdir()
    except OSError as exc:  # e.g. a directory that refuses new files even to root
        where = f"in {output_path.parent}"
        raise write_failure(exc, where) or OutputError(f"cannot write {where}: {exc}") from exc
    batch_size = options.batch_size or DEFAULT_BATCH_SIZE
    plan = build_plan(info, segments, model, settings, work_dir, batch_size)
    tracker = ProgressTracker(frames_total=info.video.frame_count)
    merger = OrderedMerger(plan.pieces)

    def on_event(event: Event) -> None:
        tracker.handle(event)
        if on_progress is not None and isinstance(event, UnitProgress):
            on_progress(tracker.snapshot())

    def on_result(unit: WorkUnit, result: UnitResult) -> None:
        path = unit.core_path if isinstance(unit, SegmentUnit) else unit.out_path
        merger.add(plan.positions[unit.unit_id], path)

    def on_retry(unit: WorkUnit, _exc: BaseException) -> None:
        tracker.restart_unit(unit.unit_id)

    executor = create_executor(options.executor)
    try:
        phase(f"starting {len(slots)} worker(s)")
        executor.start(slots, model, on_event)
        phase(f"upscaling x{model.spec.scale} in {plan.segments} segment(s)")
        run_units(
            executor, plan.units, depends_on=plan.depends_on, on_result=on_result, on_retry=on_retry
        )
        executor.shutdown()
        phase("joining")
        out_wh = (info.video.width * model.spec.scale, info.video.height * model.spec.scale)
        join_segments(
            merger.ordered(),
            info,
            output_path,
            expected_pts=info.video.pts,
            expected_size_wh=out_wh,
        )
    except OSError as exc:  # the disk refused a write: full, quota, file size limit, ...
        failure = write_failure(exc, f"in {output_path.parent}")
        if failure is None:
            raise
        raise failure from exc
    finally:
        executor.shutdown()
        shutil.rmtree(work_dir, ignore_errors=True)
    snapshot = tracker.snapshot()
    if on_progress is not None:
        on_progress(snapshot)
    return UpscaleResult(
        output=output_path,
        frames=info.video.frame_count,
        seconds=time.monotonic() - started,
        size_wh=(info.video.width * model.spec.scale, info.video.height * model.spec.scale),
        segments=plan.segments,
        slots=snapshot.slots,
    )
