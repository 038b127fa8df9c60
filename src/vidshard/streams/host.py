"""A worker's live streams: a reader thread each, one detector for all of them.

:class:`StreamHost` runs inside a worker process (it is what a ``StreamHostUnit`` runs):
the coordinator adds and removes streams on it, and it sends back each stream's status
and results through ``emit``; no frame leaves the process.

**Batching.** :meth:`StreamHost.run` waits until a stream has a frame, then up to
``batch_wait_ms`` (the smallest of the streams') for the others, or until every live
stream has one or the batch is full; it takes the newest buffered frame of each (at
most ``batch_size`` frames; with more streams ready than that, the next batch starts
after the last stream served, round-robin), and calls the detector once per frame size.
Then, per stream and in order: its own tracker (ByteTrack ids, reset at each new
connection, ``tracker_started`` on the first record after), its :class:`StreamRecord`,
its JSONL line and, when due, its snapshot. Each batch's records go out as one
``("stream_records", [...])`` message; a stream's status goes out as
``("stream_status", status)`` at each state change and every
:data:`STATUS_INTERVAL_S` seconds.

**Failures.** A detector call that raises (or returns a wrong number of results) costs
its frames (counted as dropped, the streams' reason says why) and the host goes on;
:data:`DETECTOR_FAILURE_LIMIT` failed calls in a row fail every stream hosted ("the
detector failed N batches in a row: ..."), since a model that fails that often is broken,
not unlucky. A file that cannot be written is logged and shown as the stream's reason;
its results still reach the coordinator.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from vidshard.detection.jsonl import encode_record, frame_record
from vidshard.detection.pipeline import Detector, DetectPipeline, DetectRecipe, Tracker
from vidshard.detection.types import Detections
from vidshard.errors import ConfigError, ModelError, OutputError, VidshardError
from vidshard.models.trackers import build_tracker

from .reader import CapturedFrame, StreamReader
from .sinks import JsonlRotator, SnapshotWriter
from .stats import StreamStats
from .types import StreamRecord, StreamSpec, StreamState, StreamStatus

logger = logging.getLogger(__name__)

STATUS_INTERVAL_S = 0.5  # a running stream's status is sent this often
STUCK_AFTER_S = 60.0  # a detector call running this long: the host is stuck
DETECTOR_FAILURE_LIMIT = 5  # failed detector calls in a row that fail every stream
IDLE_WAIT_S = 0.2  # the batching loop looks at ``stop`` at least this often
_MAX_REASON = 300  # characters of an error kept in a reason

Item = tuple["_Hosted", CapturedFrame]


@dataclass(eq=False)
class _Hosted:
    """One stream on this host."""

    spec: StreamSpec
    stats: StreamStats
    reader: StreamReader
    tracker: Tracker | None = None
    jsonl: JsonlRotator | None = None
    snapshot: SnapshotWriter | None = None
    connection: int = 0  # the reader connection its tracker (and records) follow
    note: str = ""  # the host's trouble with it while live (detector, files)
    closed: bool = False  # its files are closed: nothing more is written
    write_error: str = ""  # the last write failure (logged once until a write works)
    lock: threading.Lock = field(default_factory=threading.Lock)  # its files


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    if not isinstance(exc, VidshardError):
        text = f"{type(exc).__name__}: {text}"
    return text[:_MAX_REASON]


class StreamHost:
    """The streams of one worker slot, batched through one detector (see the module)."""

    def __init__(
        self,
        recipe: DetectRecipe,
        device: str,
        slot_label: str,
        emit: Callable[[tuple[Any, ...]], None],
        *,
        clock: Callable[[], float] = time.time,
        detector_failure_limit: int = DETECTOR_FAILURE_LIMIT,
        on_stuck: Callable[[str], None] | None = None,
        stuck_after_s: float = STUCK_AFTER_S,
    ) -> None:
        self.recipe = recipe
        self.device = device
        self.slot_label = slot_label
        self._slot = slot_label or None  # what statuses and records name ("": unknown)
        self._emit = emit
        self._clock = clock
        self._failure_limit = max(1, detector_failure_limit)
        self._lock = threading.Lock()
        self._ready = threading.Condition(self._lock)  # a frame arrived, a state changed
        self._emit_lock = threading.Lock()
        self._closing = threading.Event()
        self._streams: dict[str, _Hosted] = {}
        self._pipeline: DetectPipeline | None = None
        self._rotation = 0  # where the next batch starts looking (round-robin)
        self._failures = 0  # failed detector calls in a row
        self.detector_calls = 0  # calls made (benchmarks and tests read it)
        self._on_stuck = on_stuck
        self._stuck_after_s = stuck_after_s
        self._batch_started: float | None = None  # monotonic time of the batch in hand

    @property
    def detector(self) -> Detector | None:
        """The loaded detector (None before :meth:`load`)."""
        return self._pipeline.detector if self._pipeline is not None else None

    # -- the coordinator's commands ------------------------------------------------------

    def load(self) -> None:
        """Build and load the detector on the device (once)."""
        if self._pipeline is None:
            pipeline = self.recipe.build()
            pipeline.detector.load(self.device)
            self._pipeline = pipeline

    def add(self, spec: StreamSpec) -> None:
        """Host ``spec``: its reader starts at once. A stream that cannot be hosted (its
        model is not this host's, its files cannot be made) is ``failed`` with the reason;
        :class:`ConfigError` only for an id already hosted here."""
        stats = StreamStats(clock=self._clock)
        reader = StreamReader(
            spec,
            stats,
            on_frame=self._frame_arrived,
            on_state=self._state_changed,
            clock=self._clock,
        )
        hosted = _Hosted(spec, stats, reader)
        with self._lock:
            if spec.stream_id in self._streams:
                raise ConfigError(
                    f"stream {spec.stream_id!r} is already hosted on {self.slot_label}"
                )
            self._streams[spec.stream_id] = hosted
        try:
            self._check_recipe(spec)
            hosted.tracker = self._tracker_for(spec)
            self._open_files(hosted)
        except Exception as exc:  # a tracker's load may raise anything: fail the stream only
            logger.warning("stream %s cannot be hosted: %s", spec.stream_id, _one_line(exc))
            reader.fail(_one_line(exc))
            self._close_files(hosted)
            self._emit_status(hosted)
            return
        self._emit_status(hosted)
        reader.start()

    def remove(self, stream_id: str) -> None:
        """Stop ``stream_id`` (final status ``stopped``, "removed"); returns at once, even
        with its reader blocked in the source. An id not hosted here is ignored."""
        with self._lock:
            hosted = self._streams.pop(stream_id, None)
        if hosted is None:
            logger.debug("remove %s: not hosted on %s", stream_id, self.slot_label)
            return
        hosted.reader.stop("removed")
        self._close_files(hosted)
        self._emit_status(hosted)

    def statuses(self) -> list[StreamStatus]:
        return [self._status(hosted) for hosted in self._hosted()]

    def close(self, reason: str = "the host stopped") -> None:
        """Stop every stream (final status ``stopped`` with ``reason``)."""
        self._closing.set()
        for hosted in self._hosted():
            final = hosted.reader.state.is_final
            hosted.reader.stop(reason)
            self._close_files(hosted)
            if not final:
                self._emit_status(hosted)

    def run(self, stop: threading.Event) -> None:
        """The batching loop, until ``stop`` is set; then every stream is stopped."""
        self.load()
        ticker = threading.Thread(target=self._status_loop, name="stream-status", daemon=True)
        ticker.start()
        try:
            while not stop.is_set():
                batch = self._gather(stop)
                if batch:
                    self._batch_started = time.monotonic()
                    try:
                        self._process(batch)
                    finally:
                        self._batch_started = None
        finally:
            self.close()

    # -- setting a stream up -------------------------------------------------------------

    def _check_recipe(self, spec: StreamSpec) -> None:
        mine, theirs = self.recipe, spec.recipe
        if (theirs.detector, theirs.weights, theirs.options) != (
            mine.detector,
            mine.weights,
            mine.options,
        ):
            raise ConfigError(
                f"stream {spec.stream_id}: its model {theirs.name!r} is not this host's "
                f"({mine.name!r})"
            )

    def _tracker_for(self, spec: StreamSpec) -> Tracker | None:
        recipe = spec.recipe
        if recipe.tracker == "none":
            return None
        tracker = build_tracker(
            recipe.tracker, recipe.sam2, half=recipe.options.half, masks=recipe.masks
        )
        tracker.load(self.device)
        return tracker

    def _open_files(self, hosted: _Hosted) -> None:
        spec = hosted.spec
        if spec.output_dir is None:
            return
        options = spec.options
        hosted.jsonl = JsonlRotator(
            spec.output_dir,
            spec.stream_id,
            rotate_bytes=int(options.rotate_mb * 1024 * 1024),
            rotate_s=options.rotate_minutes * 60.0,
            clock=self._clock,
        )
        if options.snapshot_interval_s > 0:
            hosted.snapshot = SnapshotWriter(
                spec.output_dir,
                spec.stream_id,
                interval_s=options.snapshot_interval_s,
                clock=self._clock,
            )

    def _close_files(self, hosted: _Hosted) -> None:
        with hosted.lock:
            hosted.closed = True
            if hosted.jsonl is not None:
                hosted.jsonl.close()

    # -- statuses ------------------------------------------------------------------------

    def _hosted(self) -> list[_Hosted]:
        with self._lock:
            return list(self._streams.values())

    def _status(self, hosted: _Hosted) -> StreamStatus:
        state, reason, since = hosted.reader.state_info()
        if state is StreamState.LIVE and not reason:
            reason = hosted.note
        return hosted.stats.status(hosted.spec.stream_id, state, reason, since, self._slot)

    def _emit_status(self, hosted: _Hosted) -> None:
        self._send(("stream_status", self._status(hosted)))

    def _send(self, message: tuple[Any, ...]) -> None:
        with self._emit_lock:
            try:
                self._emit(message)
            except Exception:  # the coordinator went away: the worker ends soon anyway
                logger.warning("could not send %s", message[0], exc_info=True)

    def _status_loop(self) -> None:
        while not self._closing.wait(STATUS_INTERVAL_S):
            for hosted in self._hosted():
                if not hosted.reader.state.is_final:
                    self._emit_status(hosted)
            started = self._batch_started
            if started is not None and time.monotonic() - started > self._stuck_after_s:
                reason = f"a detector call has not returned in {self._stuck_after_s:.0f} s"
                logger.error("stream host on %s is stuck: %s", self.slot_label, reason)
                if self._on_stuck is not None:
                    self._on_stuck(reason)  # the worker ends: its streams move elsewhere
                    return

    def _frame_arrived(self) -> None:
        with self._ready:
            self._ready.notify_all()

    def _state_changed(self, reader: StreamReader) -> None:
        with self._ready:
            hosted = self._streams.get(reader.spec.stream_id)
            self._ready.notify_all()
        if hosted is None or hosted.reader is not reader:
            return  # removed meanwhile: its final status is out already
        if reader.state.is_final and not len(reader.buffer):
            self._close_files(hosted)  # else the host closes them once the file's last
        self._emit_status(hosted)  # frames are processed (see _finish_frame)

    # -- batching ------------------------------------------------------------------------

    def _gather(self, stop: threading.Event) -> list[Item]:
        """The next batch: at least one frame, unless ``stop`` is set first."""
        batch_size = self.recipe.options.batch_size
        first_at: float | None = None
        with self._ready:
            while not stop.is_set():
                streams = list(self._streams.values())
                ready = [h for h in streams if len(h.reader.buffer)]
                wait_s = IDLE_WAIT_S
                if ready:
                    now = time.monotonic()
                    first_at = now if first_at is None else first_at
                    wait_ms = min(h.spec.options.batch_wait_ms for h in streams)
                    wait_s = min(IDLE_WAIT_S, first_at + wait_ms / 1000.0 - now)
                    missing = any(
                        h.reader.state is StreamState.LIVE and not len(h.reader.buffer)
                        for h in streams
                    )
                    if not missing or len(ready) >= batch_size or wait_s <= 0:
                        return self._take(streams, batch_size)
                self._ready.wait(wait_s)
        return []

    def _take(self, streams: list[_Hosted], batch_size: int) -> list[Item]:
        """The newest frame of up to ``batch_size`` streams, round-robin; the older
        frames of those streams are dropped (the newest always wins)."""
        start = self._rotation % len(streams)
        order = streams[start:] + streams[:start]
        chosen = [h for h in order if len(h.reader.buffer)][:batch_size]
        if not chosen:
            return []
        self._rotation = streams.index(chosen[-1]) + 1
        items: list[Item] = []
        for hosted in chosen:
            frame, older = hosted.reader.buffer.take_newest()
            if older:
                hosted.stats.dropped(older)
            if frame is not None:
                items.append((hosted, frame))
        return items

    def _process(self, batch: list[Item]) -> None:
        """Detect (one call per frame size), track, record, write; send the records."""
        groups: dict[tuple[int, ...], list[Item]] = {}
        for item in batch:
            groups.setdefault(item[1].image.shape, []).append(item)
        records: list[StreamRecord] = []
        for group in groups.values():
            found = self._detect(group)
            if found is None:
                continue
            for (hosted, frame), detections in zip(group, found, strict=True):
                record = self._finish_frame(hosted, frame, detections)
                if record is not None:
                    records.append(record)
        if records:
            self._send(("stream_records", records))

    def _detect(self, group: list[Item]) -> list[Detections] | None:
        if self._pipeline is None:
            raise ModelError("StreamHost.load() must be called before frames are processed")
        detector = self._pipeline.detector
        self.detector_calls += 1
        try:
            found = detector.detect(np.stack([frame.image for _, frame in group]))
            if len(found) != len(group):
                raise ModelError(
                    f"detector {detector.name!r} returned {len(found)} results "
                    f"for {len(group)} frames"
                )
        except Exception as exc:  # the user's model may raise anything
            self._detector_failed(group, exc)
            return None
        self._failures = 0
        return found

    def _detector_failed(self, group: list[Item], exc: BaseException) -> None:
        self._failures += 1
        why = _one_line(exc)
        logger.warning(
            "detector failed on %d frame(s) (%d call(s) in a row): %s",
            len(group),
            self._failures,
            why,
            exc_info=self._failures == 1,
        )
        for hosted, _ in group:
            hosted.stats.dropped()
            hosted.note = f"detector error: {why}"
        if self._failures < self._failure_limit:
            return
        reason = f"the detector failed {self._failures} calls in a row: {why}"
        self._failures = 0
        for hosted in self._hosted():
            if not hosted.reader.state.is_final:
                hosted.reader.fail(reason)
                self._close_files(hosted)
                self._emit_status(hosted)

    # -- per stream ----------------------------------------------------------------------

    def _finish_frame(
        self, hosted: _Hosted, frame: CapturedFrame, detections: Detections
    ) -> StreamRecord | None:
        """Track, count, write: the frame's record (None: the stream is gone, or its
        tracker failed)."""
        if hosted.closed:
            return None
        started = False
        if hosted.tracker is not None:
            try:
                if frame.connection != hosted.connection:
                    self._reset_tracker(hosted)
                    started = True
                detections = hosted.tracker.update(frame.image, detections)
            except Exception as exc:  # a tracker's failure costs this frame, not the host
                logger.warning("stream %s: tracker failed: %s", hosted.spec.stream_id, exc)
                hosted.note = f"tracker error: {_one_line(exc)}"
                hosted.connection = 0  # start it over on the next frame
                hosted.stats.dropped()
                return None
        hosted.connection = frame.connection
        objects = frame_record(
            frame.index, frame.pts_s or 0.0, detections, hosted.spec.recipe.masks
        )
        processed_at = self._clock()
        record = StreamRecord(
            stream_id=hosted.spec.stream_id,
            frame=frame.index,
            pts_s=frame.pts_s,
            captured_at=frame.captured_at,
            processed_at=processed_at,
            objects=tuple(objects["objects"]),
            tracker_started=started,
            slot=self._slot,
        )
        hosted.stats.processed(frame.captured_at, processed_at)
        hosted.note = ""
        self._write(hosted, record, frame.image, detections)
        if hosted.reader.state.is_final and not len(hosted.reader.buffer):
            self._close_files(hosted)  # a file that ended: its last frame is done
            self._emit_status(hosted)
        return record

    def _reset_tracker(self, hosted: _Hosted) -> None:
        tracker = hosted.tracker
        if tracker is None:
            return
        rate = hosted.reader.rate_fps
        max_fps = hosted.spec.options.max_fps
        fps = min(rate, max_fps) if rate and max_fps else rate or max_fps
        set_fps = getattr(tracker, "set_fps", None)
        if fps and set_fps is not None:
            set_fps(fps)
        tracker.reset()

    def _write(
        self, hosted: _Hosted, record: StreamRecord, image: np.ndarray, detections: Detections
    ) -> None:
        with hosted.lock:
            if hosted.closed:
                return
            try:
                if hosted.jsonl is not None:
                    hosted.jsonl.write(encode_record(record.to_json()))
                if hosted.snapshot is not None and hosted.snapshot.due():
                    hosted.snapshot.write(image, detections)
            except OutputError as exc:
                if hosted.write_error != str(exc):
                    logger.warning("stream %s: %s", hosted.spec.stream_id, exc)
                hosted.note = hosted.write_error = str(exc)
            else:
                hosted.write_error = ""
