"""Videos → JSONL (and annotated videos): detection and tracking over many devices.

Every input's frames to process (all, or sampled with ``sample_fps`` / ``max_frames``)
are counted; a video with more than its share of the total (total / slots) is cut into
parts that overlap by a few frames, so one long video still uses every slot. Parts are
queued longest first and pulled by idle workers, so no slot waits while another has
several videos left. When every part of a video is done its results are stitched (track
ids matched over the overlaps) and written as one JSONL line, at once; a video that
fails is written with its error and the others go on. With ``annotate_dir``, each
video is then drawn segment by segment on every slot and joined with its audio.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from vidshard.detection.annotate import EMPTY, FrameDrawing
from vidshard.detection.jsonl import JsonlSink, done_paths, frame_record, video_record
from vidshard.detection.pipeline import DetectRecipe
from vidshard.detection.stitch import SegmentTracks, frame_owners, stitch_segments
from vidshard.errors import ConfigError, InputError, OutputError, VidshardError
from vidshard.executors.base import Executor
from vidshard.executors.registry import executor_with_slots
from vidshard.media import EncodeSettings, MediaInfo, join_segments, probe
from vidshard.media.plan import plan_segments
from vidshard.media.reader import reading_window
from vidshard.media.source import FileIdentity
from vidshard.media.types import VideoStreamInfo
from vidshard.media.writer import output_notes
from vidshard.models.detect_files import uses_random_weights
from vidshard.pathnames import expand_user, path_name_problem, shown

from .events import Event, UnitProgress
from .output_dirs import check_creatable_dir, ensure_dir, removed_if_left_empty
from .progress import ProgressSnapshot, ProgressTracker, SlotStats
from .scheduler import run_units
from .track import TrackedFrame, load_tracked
from .units import AnnotateUnit, TrackUnit, UnitResult, WorkUnit
from .upscale import _WorkDir

logger = logging.getLogger(__name__)

ProgressFn = Callable[[ProgressSnapshot], None]
PhaseFn = Callable[[str], None]
SPLIT_SLACK = 1.25  # a video up to 1.25 x a part's size stays whole
PARTS_PER_SHARE = 2
MIN_PART_FRAMES = 16  # parts shorter than this cost more than they spread
ANNOTATED_SUFFIXES = (".mp4", ".mkv", ".mov")


@dataclass(frozen=True)
class DetectOptions:
    """Every option of ``vidshard detect`` / ``vidshard track`` but the model recipe."""

    devices: str = "all"
    workers_per_device: int = 1
    sample_fps: float | None = None  # process this many frames per second of video
    max_frames: int | None = None  # at most this many frames per video
    overlap_frames: int = 8  # frames two parts of a tracked video share
    annotate_dir: Path | None = None
    skip_existing: bool = False  # leave out videos the JSONL already has a line for
    codec: str = "libx264"
    crf: int | None = 20
    preset: str | None = "veryfast"
    executor: str = "local"

    def validate(self) -> None:
        if self.workers_per_device < 1:
            raise ConfigError(
                f"--workers-per-device must be 1 or more, got {self.workers_per_device}"
            )
        if self.sample_fps is not None and not self.sample_fps > 0:
            raise ConfigError(f"--fps must be positive, got {self.sample_fps}")
        if self.max_frames is not None and self.max_frames < 1:
            raise ConfigError(f"--max-frames must be 1 or more, got {self.max_frames}")
        if self.overlap_frames < 0:
            raise ConfigError(f"--overlap-frames must be 0 or more, got {self.overlap_frames}")


@dataclass(frozen=True)
class VideoOutcome:
    path: str
    frames: int  # frames processed: the video's frame records in the JSONL
    error: str | None = None
    annotated: Path | None = None
    video_frames: int | None = None  # frames in the video (its JSONL video_info.frames)


@dataclass(frozen=True)
class DetectResult:
    output: Path
    videos: tuple[VideoOutcome, ...]
    skipped: tuple[str, ...]  # already in the JSONL (--skip-existing)
    frames: int
    seconds: float
    slots: tuple[SlotStats, ...] = ()

    @property
    def failed(self) -> tuple[VideoOutcome, ...]:
        return tuple(v for v in self.videos if v.error is not None)

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0


def read_list(path: Path) -> list[str]:
    """Video paths from a list file: one a line; blank lines and ``#`` comments skipped.
    Relative paths are taken from the list file's folder."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"list file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read list file {path}: {exc}") from None
    videos = []
    for line in text.splitlines():
        entry = line.split("#", 1)[0].strip() if not line.lstrip().startswith("#") else ""
        if entry:
            given = expand_user(entry)
            videos.append(str(given if given.is_absolute() else path.parent / given))
    if not videos:
        raise InputError(f"list file {path} names no videos")
    return videos


def sample_indices(
    video: VideoStreamInfo, fps: float | None = None, max_frames: int | None = None
) -> list[int]:
    """The frames to process: every frame, or the first frame at or after each 1/fps
    step of presentation time; at most ``max_frames``."""
    count = video.frame_count
    if fps is None:
        chosen = list(range(count))
    else:
        step = 1.0 / fps
        base = video.pts[0] if count else 0
        chosen, next_s = [], 0.0
        for i, pts in enumerate(video.pts):
            t = float((pts - base) * video.time_base)
            if t + 1e-9 >= next_s:
                chosen.append(i)
                next_s += step * max(1, math.floor((t - next_s) / step) + 1)
    return chosen[:max_frames] if max_frames is not None else chosen


def split_parts(positions: int, share: float, overlap: int) -> list[tuple[int, int]]:
    """[start, end) ranges over a video's ``positions`` processed frames: one part when
    it fits its share, else equal parts that overlap by ``overlap``."""
    if positions <= max(share * SPLIT_SLACK, MIN_PART_FRAMES):
        return [(0, positions)]
    parts = min(math.ceil(positions / share), max(1, positions // MIN_PART_FRAMES))
    size = math.ceil(positions / parts)
    return [
        (max(0, k * size - (overlap if k else 0)), min(positions, (k + 1) * size))
        for k in range(parts)
        if k * size < positions
    ]


@dataclass
class _Video:
    path: str
    info: MediaInfo | None
    indices: list[int] = field(default_factory=list)
    parts: list[TrackUnit] = field(default_factory=list)
    results: dict[str, list[TrackedFrame]] = field(default_factory=dict)
    error: str | None = None
    written: bool = False
    frames: list[tuple[int, Any, tuple[dict[str, Any], ...] | None]] = field(default_factory=list)
    annotated: Path | None = None

    @property
    def processed(self) -> int:
        """Frames processed: its frame records in the JSONL, each frame once (the
        overlap two parts share too); 0 for a video that failed."""
        return len(self.frames) if self.error is None else 0

    def outcome(self) -> VideoOutcome:
        total = self.info.video.frame_count if self.info is not None else None
        return VideoOutcome(self.path, self.processed, self.error, self.annotated, total)


def run_detect(
    inputs: Sequence[str | os.PathLike[str]],
    output: str | os.PathLike[str],
    recipe: DetectRecipe,
    options: DetectOptions,
    *,
    on_progress: ProgressFn | None = None,
    on_phase: PhaseFn | None = None,
    on_video: Callable[[VideoOutcome], None] | None = None,
    executor: Callable[[DetectRecipe], Executor] | None = None,
    source_identities: Mapping[str, FileIdentity] | None = None,
) -> DetectResult:
    """Detect (and track) objects in every video of ``inputs``; one JSONL line each.

    ``source_identities`` maps inputs (as given) to their identity when an earlier check
    saw them: any other file at such a path is refused."""
    started = time.monotonic()
    phase = on_phase or (lambda _name: None)
    recipe.validate()
    options.validate()
    if uses_random_weights(recipe.detector, recipe.weights):
        logger.warning(
            "%s is a model config, not trained weights: random weights, random boxes "
            "(for trying vidshard out)",
            recipe.weights,
        )
    out = Path(output)
    _check_output(out, options.annotate_dir)
    phase("checking inputs")
    skipped: list[str] = []
    done_before = done_paths(out) if options.skip_existing and out.exists() else set()
    videos: list[_Video] = []
    for raw in dict.fromkeys(str(p) for p in inputs):  # a video listed twice runs once
        if raw in done_before:
            skipped.append(raw)
            continue
        try:
            info = probe(Path(raw), (source_identities or {}).get(raw))
            videos.append(_Video(raw, info))
        except VidshardError as exc:
            videos.append(_Video(raw, None, error=str(exc)))
    pool = executor(recipe) if executor is not None else None
    if pool is None:
        runner, slots = executor_with_slots(
            options.executor, options.devices, options.workers_per_device
        )
        slot_count = len(slots)
    else:
        runner, slots, slot_count = pool, [], len(pool.live_slots())
    with _WorkDir(out) as work, removed_if_left_empty(out), JsonlSink(out) as sink:
        units = _plan(videos, recipe, options, slot_count, work.path)
        tracker = ProgressTracker(frames_total=sum(len(v.indices) for v in videos))
        by_unit = {u.unit_id: v for v in videos for u in v.parts}
        lock = threading.Lock()

        def finish(video: _Video) -> None:
            with lock:
                if video.written:
                    return
                video.written = True
                finished = sum(v.written for v in videos)
            record = _record(video, recipe)
            sink.write(record)
            phase(f"{finished}/{len(videos)} videos")
            if on_video is not None:
                on_video(video.outcome())

        for video in videos:
            if video.error is not None:
                finish(video)

        def on_event(event: Event) -> None:
            tracker.handle(event)
            if on_progress is not None and isinstance(event, UnitProgress):
                on_progress(tracker.snapshot())

        def on_result(unit: WorkUnit, _result: UnitResult) -> None:
            video = by_unit[unit.unit_id]
            assert isinstance(unit, TrackUnit)
            video.results[unit.unit_id] = load_tracked(unit.out_path)
            if len(video.results) == len(video.parts) and video.error is None:
                try:
                    _stitch(video, recipe)
                except ValueError as exc:
                    video.error = f"stitching failed: {exc}"
                finish(video)

        def on_error(unit: WorkUnit, exc: BaseException) -> bool:
            video = by_unit.get(unit.unit_id)
            if video is None or not isinstance(exc, VidshardError | RuntimeError | OSError):
                return False
            logger.warning("%s failed: %s", video.path, exc)
            typed = isinstance(exc, VidshardError)
            video.error = str(exc) if typed else f"{type(exc).__name__}: {exc}"
            finish(video)
            return True

        def on_retry(unit: WorkUnit, _exc: BaseException) -> None:
            tracker.restart_unit(unit.unit_id)

        try:
            if units:  # none when every video failed its probe: no workers to start
                phase(f"starting {slot_count} worker(s)")
                runner.start(slots, recipe, on_event)
                runner.check_storage([v.path for v in videos if v.error is None], [str(work.path)])
                ok = [v for v in videos if v.error is None]
                phase(f"{len(ok)} video(s) in {len(units)} part(s) on {slot_count} slot(s)")
                run_units(runner, units, on_result=on_result, on_retry=on_retry, on_error=on_error)
                drawable = [v for v in videos if v.error is None]
                if options.annotate_dir is not None and drawable:
                    _annotate(runner, drawable, options, work.path, phase)
        finally:
            runner.shutdown()
            work.remove()  # a rerun resumes from the JSONL (--skip-existing), not from parts
    snapshot = tracker.snapshot()
    return DetectResult(
        output=out,
        videos=tuple(v.outcome() for v in videos),
        skipped=tuple(skipped),
        frames=sum(v.processed for v in videos),
        seconds=time.monotonic() - started,
        slots=snapshot.slots,
    )


def _check_output(out: Path, annotate_dir: Path | None) -> None:
    for given, what in ((out, "output"), (annotate_dir, "--annotate-dir")):
        problem = path_name_problem(str(given)) if given is not None else None
        if problem is not None:
            raise OutputError(f"{what} {shown(str(given))} cannot name a file: {problem}")
    if out.exists() and out.is_dir():
        raise OutputError(f"output is a directory; give a .jsonl file name: {out}")
    if not out.parent.is_dir():
        raise OutputError(f"output directory does not exist: {out.parent}")
    if not os.access(out.parent, os.W_OK):
        raise OutputError(f"no permission to write in {out.parent}")
    if annotate_dir is not None:
        check_creatable_dir(annotate_dir, "--annotate-dir")  # created when first written


def _plan(
    videos: list[_Video],
    recipe: DetectRecipe,
    options: DetectOptions,
    slots: int,
    work_dir: Path,
) -> list[TrackUnit]:
    for video in videos:
        if video.info is not None:
            video.indices = sample_indices(video.info.video, options.sample_fps, options.max_frames)
    total = sum(len(v.indices) for v in videos)
    # Parts of at most half a slot's share: the longest-first queue then evens the
    # slots out to within half a share, so the last slot to finish waits little.
    share = max(1.0, total / max(1, slots) / PARTS_PER_SHARE)
    overlap = options.overlap_frames if recipe.tracker != "none" else 0
    units: list[TrackUnit] = []
    for n, video in enumerate(videos):
        if video.info is None or not video.indices:
            if video.info is not None and video.error is None:
                video.error = "no frames to process"
            continue
        for k, (start, end) in enumerate(split_parts(len(video.indices), share, overlap)):
            unit_id = f"video-{n:05d}-part-{k:03d}"
            indices = tuple(video.indices[start:end])
            unit = TrackUnit(
                unit_id=unit_id,
                source=video.info.path,
                video=reading_window(video.info.video, indices[0], indices[-1] + 1),
                indices=indices,
                out_path=work_dir / f"{unit_id}.pkl",
                masks=recipe.masks,
                source_identity=video.info.identity,
            )
            video.parts.append(unit)
            units.append(unit)
    units.sort(key=lambda u: -u.frames)  # longest first: the last to start are short
    return units


def _stitch(video: _Video, recipe: DetectRecipe) -> None:
    """The video's frames in order, one each, with track ids unique over the video."""
    parts = [video.results[u.unit_id] for u in video.parts]
    position = {index: p for p, index in enumerate(video.indices)}
    if recipe.tracker == "none" or len(parts) == 1:
        merged = [f for part in parts for f in part]
        video.frames = [(f.index, f, f.masks) for f in merged]
        return
    segments = [
        SegmentTracks(position[part[0].index], [f.detections for f in part]) for part in parts
    ]
    owner = frame_owners(segments)
    stitched = stitch_segments(segments)
    frames = []
    for p, dets in stitched:
        source = parts[owner[p]][p - segments[owner[p]].start_frame]
        frames.append((source.index, replace(source, detections=dets), source.masks))
    video.frames = frames


def _record(video: _Video, recipe: DetectRecipe) -> dict[str, Any]:
    info = video.info
    video_info: dict[str, Any] = {}
    if info is not None:
        rate = info.video.avg_rate
        video_info = {
            "width": info.video.width,
            "height": info.video.height,
            "fps": round(float(rate), 6) if rate else None,
            "frames": info.video.frame_count,
            "duration": round(info.video.duration_s, 6),
        }
    if video.error is not None:
        return video_record(video.path, recipe.options.prompt, video_info, [], error=video.error)
    frames = []
    for _index, tracked, masks in video.frames:
        record = frame_record(tracked.index, tracked.pts_time, tracked.detections, False)
        if masks is not None:
            for obj, rle in zip(record["objects"], masks, strict=True):
                obj["mask"] = rle
        frames.append(record)
    return video_record(video.path, recipe.options.prompt, video_info, frames)


def _annotate(
    runner: Executor,
    videos: list[_Video],
    options: DetectOptions,
    work_dir: Path,
    phase: PhaseFn,
) -> None:
    """Draw every video's results on all its frames (held between sampled frames) on
    every slot, segment by segment, and join each with its audio."""
    assert options.annotate_dir is not None
    settings = EncodeSettings(codec=options.codec, crf=options.crf, preset=options.preset)
    settings.validate()
    slots = max(1, len(runner.live_slots()))
    units: list[AnnotateUnit] = []
    pieces: dict[str, list[Path]] = {}
    for n, video in enumerate(videos):
        assert video.info is not None
        stream = video.info.video
        for note in output_notes(settings, stream, stream.size_wh):  # once, not per segment
            logger.warning("%s: %s", video.path, note)
        drawings: list[object] = [EMPTY] * stream.frame_count
        last: object = EMPTY
        at = {index: (tracked, masks) for index, tracked, masks in video.frames}
        for i in range(stream.frame_count):
            if i in at:
                tracked, masks = at[i]
                last = FrameDrawing.of(tracked.detections, masks)
            drawings[i] = last
        for k, seg in enumerate(plan_segments(stream, slots=slots, overlap_frames=0)):
            path = work_dir / f"annotated-{n:05d}-{k:05d}.mp4"
            units.append(
                AnnotateUnit(
                    unit_id=f"annotate-{n:05d}-{k:05d}",
                    source=video.info.path,
                    video=reading_window(stream, seg.start, seg.end),
                    frame_range=(seg.start, seg.end),
                    drawings=tuple(drawings[seg.start : seg.end]),
                    out_path=path,
                    settings=settings,
                    source_identity=video.info.identity,
                )
            )
            pieces.setdefault(video.path, []).append(path)
    phase(f"drawing {len(videos)} video(s)")
    run_units(runner, units)
    ensure_dir(options.annotate_dir, "--annotate-dir")
    for video in videos:
        assert video.info is not None
        source = Path(video.path)
        suffix = source.suffix.lower() if source.suffix.lower() in ANNOTATED_SUFFIXES else ".mp4"
        target = options.annotate_dir / f"{source.stem}.annotated{suffix}"
        join_segments(
            pieces[video.path],
            video.info,
            target,
            expected_pts=video.info.video.pts,
            expected_size_wh=video.info.video.size_wh,
        )
        video.annotated = target
