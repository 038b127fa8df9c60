"""The file → file job: probe, plan, run segments over every slot, join, verify."""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import threading
import time
from collections.abc import Callable
from concurrent.futures import CancelledError
from dataclasses import dataclass, field, replace
from pathlib import Path

from vidshard.devices.types import DeviceSlot
from vidshard.errors import ConfigError, InputError, OutputError, WorkerError, write_failure
from vidshard.executors.base import Executor
from vidshard.executors.registry import executor_with_slots
from vidshard.media import (
    SEGMENT_SUFFIX,
    EncodeSettings,
    MediaInfo,
    check_output_container,
    join_segments,
    probe,
)
from vidshard.media.plan import Segment, plan_segments, segments_from_bounds
from vidshard.media.reader import reading_window
from vidshard.media.source import FileIdentity
from vidshard.media.writer import output_notes
from vidshard.models.options import TileOption
from vidshard.models.registry import ModelOptions, ModelRef, resolve_model
from vidshard.pathnames import path_name_problem, shown

from .events import Event, UnitProgress
from .manifest import Manifest, fingerprint
from .merger import OrderedMerger
from .progress import ProgressSnapshot, ProgressTracker, SlotStats
from .scheduler import run_units
from .units import SeamUnit, SegmentUnit, UnitResult, WorkUnit, output_size_wh

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
    resume: bool = True  # reuse finished segments of an interrupted run of the same job
    down_sample: bool = False  # shrink by the scale first: the output keeps the input's size
    verify: str = "packets"  # "full": the joined output is decoded too

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
        if self.verify not in ("packets", "full"):
            raise ConfigError(f"--verify: expected packets or full, got {self.verify!r}")

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
    resumed_units: int = 0  # units reused from an interrupted run
    quarantined: tuple[str, ...] = ()  # devices taken out of the job after failing

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0


def check_paths(source: Path, output: Path) -> None:
    """Cheap checks before anything starts; typed errors naming the problem."""
    for given, error in ((source, InputError), (output, OutputError)):
        problem = path_name_problem(str(given))
        if problem is not None:
            kind = "input" if error is InputError else "output"
            raise error(f"{kind} {shown(str(given))} cannot name a file: {problem}")
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
    down_sample: bool = False,
) -> _Plan:
    scale = model.spec.scale
    video = info.video
    out_wh = output_size_wh(video.size_wh, scale, down_sample=down_sample)
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
                video=reading_window(video, *seg.read_range),  # not the whole video's lists
                segment=seg,
                core_path=work_dir / f"core-{seg.index:05d}{SEGMENT_SUFFIX}",
                seam_left_path=seam_paths[seg.index - 1][1] if seg.seam_left else None,
                seam_right_path=seam_paths[seg.index][0] if seg.seam_right else None,
                settings=settings,
                scale=scale,
                batch_size=batch_size,
                source_identity=info.identity,
                down_sample=down_sample,
            )
        )
        if seg.seam_right is not None:
            seam_id = f"seam-{seg.index:05d}"
            positions[seam_id] = len(positions)
            left, right = seam_paths[seg.index]
            units.append(
                SeamUnit(
                    unit_id=seam_id,
                    video=reading_window(video, *seg.seam_right),
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


def _resolve(source: Path, output: Path, options: UpscaleOptions) -> ModelRef:
    """The checks that need no probe, and the model: enough to start the workers."""
    options.validate()
    check_paths(source, output)
    return resolve_model(
        options.model,
        scale=options.scale,
        options=ModelOptions(
            precision=options.precision,
            tile=options.tile,
            tile_overlap=options.tile_overlap,
            batch_size=options.batch_size,
        ),
    )


def _prepare(
    source: Path,
    output: Path,
    options: UpscaleOptions,
    model: ModelRef,
    expected: FileIdentity | None = None,
) -> tuple[MediaInfo, EncodeSettings]:
    settings = options.encode_settings()
    info = probe(source, expected)
    check_output_container(info, output, video_codec=settings.codec)
    out_wh = output_size_wh(info.video.size_wh, model.spec.scale, down_sample=options.down_sample)
    for note in output_notes(settings, info.video, out_wh):  # once here, not per segment
        logger.warning("%s: %s", source.name, note)
    return info, settings


class _EarlyStart:
    """The workers start (and load the model) on a thread while the coordinator probes
    the input and plans the job; :meth:`wait` joins them when the first unit is due.

    Their events wait in order until the job's sink is there. A job refused before
    it waited (a bad input, an output another job holds) stops them at once
    (:meth:`close`), without waiting for a model to load.
    """

    def __init__(self, runner: Executor, slots: list[DeviceSlot], model: ModelRef) -> None:
        self.runner = runner
        self._lock = threading.Lock()
        self._early: list[Event] = []
        self._sink: Callable[[Event], None] | None = None
        self._error: BaseException | None = None
        self._waited = False
        self._stopped = False
        self._thread = threading.Thread(
            target=self._start, args=(slots, model), name="start-workers", daemon=True
        )
        self._thread.start()

    def _start(self, slots: list[DeviceSlot], model: ModelRef) -> None:
        try:
            self.runner.start(slots, model, self._relay)
        except BaseException as exc:  # raised by wait(), in the job's thread
            self._error = exc

    def _relay(self, event: Event) -> None:
        with self._lock:  # in order: the held events go first, under the same lock
            if self._sink is None:
                self._early.append(event)
            else:
                self._sink(event)

    def wait(self, sink: Callable[[Event], None]) -> None:
        """Hand the workers' events to ``sink`` (those so far first); return once every
        worker is ready or has failed, raising what ``start`` raised."""
        with self._lock:
            for event in self._early:
                sink(event)
            self._early, self._sink = [], sink
        self._thread.join()  # a Ctrl-C here leaves it unwaited: close() stops it
        self._waited = True
        if self._error is not None:
            raise self._error

    def stop(self) -> None:
        """Stop the workers (once): a start still under way is aborted first, so no
        slot comes up after the shutdown."""
        if self._stopped:
            return
        self._stopped = True
        if self._thread.is_alive():
            self.runner.abort_start()
            self._thread.join()
        self.runner.shutdown()

    def close(self) -> None:
        """The job ended before its workers were waited for (refused, interrupted):
        stop them now."""
        if not self._waited:
            self.stop()


class _WorkDir:
    """The job's scratch folder, locked against a second job writing the same output."""

    def __init__(self, output: Path) -> None:
        self.path = work_dir_for(output)
        self.output = Path(os.path.abspath(output))  # named in messages: never "."
        self._lock_fd: int | None = None

    def __enter__(self) -> _WorkDir:
        try:
            self.path.mkdir(exist_ok=True)
            fd = os.open(self.path / "lock", os.O_CREAT | os.O_RDWR)
        except OSError as exc:  # e.g. a directory that refuses new files even to root
            where = f"in {self.path.parent}"
            raise write_failure(exc, where) or OutputError(f"cannot write {where}: {exc}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise OutputError(
                f"another vidshard job is writing {self.output}: wait for it to finish, "
                "or choose another output"
            ) from None
        self._lock_fd = fd
        for partial in self.path.glob("*.partial*"):
            partial.unlink()
        return self

    def clear(self) -> None:
        for child in self.path.iterdir():
            if child.name != "lock":
                child.unlink()

    def __exit__(self, *exc_info: object) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)

    def keep_for_resume(self) -> bool:
        """After an interruption: True (partial files removed) if a finished unit is
        recorded for a rerun to reuse; False when there is nothing worth keeping (the
        job stopped before its first unit, e.g. while its workers started)."""
        manifest = Manifest.load(self.path)
        if manifest is None or not manifest.finished:
            return False
        for partial in self.path.glob("*.partial*"):  # the workers have stopped
            partial.unlink(missing_ok=True)
        return True


def _output_options(options: UpscaleOptions, settings: EncodeSettings) -> dict[str, object]:
    """The options that decide the output's bits (the manifest's fingerprint)."""
    return {
        "scale": options.scale,
        "tile": options.tile,
        "tile_overlap": options.tile_overlap,
        "overlap_frames": options.overlap_frames,
        "segment_seconds": options.segment_seconds,
        "precision": options.precision,
        "batch_size": options.batch_size or DEFAULT_BATCH_SIZE,
        "down_sample": options.down_sample,
        "settings": repr(settings),
    }


def _load_or_plan(
    work: _WorkDir,
    info: MediaInfo,
    model: ModelRef,
    options: UpscaleOptions,
    settings: EncodeSettings,
    slots: int,
) -> Manifest:
    """The stored plan when the same job was interrupted; a new one otherwise."""
    digest = fingerprint(info, model, _output_options(options, settings))
    stored = Manifest.load(work.path) if options.resume else None
    if stored is not None and stored.fingerprint == digest:
        logger.info("resuming: %d unit(s) already finished", len(stored.finished))
        return stored
    if stored is not None:
        logger.info("input or options changed since the interrupted run: starting over")
    work.clear()
    segments = plan_segments(
        info.video,
        slots=slots,
        segment_seconds=options.segment_seconds,
        overlap_frames=max(options.overlap_frames, model.spec.temporal_window),
    )
    overlap = segments[0].overlap_frames if len(segments) > 1 else 0
    manifest = Manifest(digest, [s.start for s in segments] + [info.video.frame_count], overlap)
    manifest.save(work.path)
    return manifest


def _finished_units(plan: _Plan, manifest: Manifest) -> set[str]:
    """Units the manifest lists as finished whose files are all still there."""
    done = set()
    recorded = set(manifest.finished)
    for unit in plan.units:
        if unit.unit_id not in recorded:
            continue
        if isinstance(unit, SegmentUnit):
            paths = [unit.core_path, unit.seam_left_path, unit.seam_right_path]
        else:
            paths = [unit.out_path]
        if all(p is None or p.exists() for p in paths):
            done.add(unit.unit_id)
    return done


def _piece_path(unit: WorkUnit) -> Path:
    return unit.core_path if isinstance(unit, SegmentUnit) else unit.out_path


def run_upscale(
    source: str | os.PathLike[str],
    output: str | os.PathLike[str],
    options: UpscaleOptions,
    *,
    on_progress: ProgressFn | None = None,
    on_phase: PhaseFn | None = None,
    executor: Callable[[ModelRef], Executor] | None = None,
    source_identity: FileIdentity | None = None,
) -> UpscaleResult:
    """Upscale ``source`` into ``output`` over the slots ``options.devices`` names.

    An interrupted or failed-by-infrastructure job keeps its finished segments in a
    hidden work dir beside the output; running the same job again resumes from them.
    A job cancelled on purpose (:class:`Cancelled`) leaves nothing behind.

    ``executor``, when given, makes the executor for the resolved model instead of
    starting workers for ``options.devices``: the service passes a handle on its
    shared pool (``LocalExecutor.job``). ``source_identity``, when given, is the identity
    of the source as an earlier check saw it: any other file at that path is refused.
    """
    started = time.monotonic()
    source_path, output_path = Path(source), Path(output)
    phase = on_phase or (lambda _name: None)
    phase("checking input")
    model = _resolve(source_path, output_path, options)
    slots: list[DeviceSlot] = []  # a shared pool's slots are already up
    early: _EarlyStart | None = None
    if executor is not None:
        runner = executor(model)
    else:
        runner, slots = executor_with_slots(
            options.executor, options.devices, options.workers_per_device
        )
        early = _EarlyStart(runner, slots, model)  # they load while the input is probed
    try:
        info, settings = _prepare(
            source_path, output_path, options, model, expected=source_identity
        )
        with _WorkDir(output_path) as work:
            keep = False
            try:
                result = _run(
                    info,
                    output_path,
                    options,
                    model,
                    slots,
                    settings,
                    work,
                    phase,
                    on_progress,
                    runner,
                    early,
                )
            except (KeyboardInterrupt, WorkerError, CancelledError):
                keep = work.keep_for_resume()  # finished segments stay for a resume
                raise
            except OSError as exc:  # the disk refused a write: full, quota, file size limit
                failure = write_failure(exc, f"in {output_path.parent}")
                if failure is None:
                    raise
                raise failure from exc
            finally:
                if not keep:
                    work.remove()
    finally:
        if early is not None:
            early.close()  # refused before its first unit: the workers stop now
    return replace(result, seconds=time.monotonic() - started)


def _run(
    info: MediaInfo,
    output_path: Path,
    options: UpscaleOptions,
    model: ModelRef,
    slots: list[DeviceSlot],
    settings: EncodeSettings,
    work: _WorkDir,
    phase: PhaseFn,
    on_progress: ProgressFn | None,
    executor: Executor,
    early: _EarlyStart | None = None,
) -> UpscaleResult:
    slot_count = len(slots) or len(executor.live_slots())
    manifest = _load_or_plan(work, info, model, options, settings, slot_count)
    segments = segments_from_bounds(manifest.bounds, manifest.overlap_frames)
    batch_size = options.batch_size or DEFAULT_BATCH_SIZE
    plan = build_plan(
        info, segments, model, settings, work.path, batch_size, down_sample=options.down_sample
    )
    finished = _finished_units(plan, manifest)
    tracker = ProgressTracker(
        frames_total=info.video.frame_count,
        frames_resumed=sum(
            u.segment.frames
            for u in plan.units
            if isinstance(u, SegmentUnit) and u.unit_id in finished
        ),
    )
    merger = OrderedMerger(plan.pieces)
    for unit in plan.units:
        if unit.unit_id in finished:
            merger.add(plan.positions[unit.unit_id], _piece_path(unit))
    pending = [u for u in plan.units if u.unit_id not in finished]
    depends_on = {
        uid: tuple(d for d in deps if d not in finished) for uid, deps in plan.depends_on.items()
    }

    def on_event(event: Event) -> None:
        tracker.handle(event)
        if on_progress is not None and isinstance(event, UnitProgress):
            on_progress(tracker.snapshot())

    def on_result(unit: WorkUnit, _result: UnitResult) -> None:
        merger.add(plan.positions[unit.unit_id], _piece_path(unit))
        manifest.mark_finished(unit.unit_id, work.path)

    def on_retry(unit: WorkUnit, _exc: BaseException) -> None:
        tracker.restart_unit(unit.unit_id)

    stopping: threading.Thread | None = None
    if pending:
        try:
            phase(f"starting {slot_count} worker(s)")
            if early is not None:
                early.wait(on_event)  # started while the input was probed
            else:
                executor.start(slots, model, on_event)
            executor.check_storage([str(info.path)], [str(work.path)])
            resumed = f", {len(finished)} resumed" if finished else ""
            phase(f"upscaling x{model.spec.scale} in {plan.segments} segment(s){resumed}")
            run_units(
                executor, pending, depends_on=depends_on, on_result=on_result, on_retry=on_retry
            )
            phase("joining")  # workers still up: the moment "just before the join"
            # The workers exit while the join runs: it needs nothing from them.
            stopping = threading.Thread(target=executor.shutdown, name="stop-workers")
            stopping.start()
        finally:
            if stopping is None and early is not None:
                early.stop()  # a start interrupted under way is aborted first
            elif stopping is None:
                executor.shutdown()
    else:
        if early is not None:
            early.stop()  # every unit resumed: the workers started early stop now
        else:
            executor.shutdown()  # never started: nothing to stop, but a pool job is released
        phase("joining")
    out_wh = output_size_wh(info.video.size_wh, model.spec.scale, down_sample=options.down_sample)
    try:
        join_segments(
            merger.ordered(),
            info,
            output_path,
            expected_pts=info.video.pts,
            expected_size_wh=out_wh,
            decode=options.verify == "full",
        )
    finally:
        if stopping is not None:
            stopping.join()
    snapshot = tracker.snapshot()
    if on_progress is not None:
        on_progress(snapshot)
    return UpscaleResult(
        output=output_path,
        frames=info.video.frame_count,
        seconds=snapshot.elapsed_s,
        size_wh=out_wh,
        segments=plan.segments,
        slots=snapshot.slots,
        resumed_units=len(finished),
        quarantined=snapshot.quarantined,
    )
