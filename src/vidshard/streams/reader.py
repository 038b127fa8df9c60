"""One stream's reader thread: open the source, decode RGB frames into a small buffer,
reconnect when the source ends, errs or stalls.

**Buffer.** A stream keeps at most ``buffer_frames`` decoded frames; a frame arriving
at a full buffer pushes the oldest out (counted as dropped): the newest always wins.
The host takes the newest frame of each stream for a batch and drops the older ones
(counted too), so a detector that keeps up sees every frame and one that falls behind
sees the latest, never a backlog. ``max_fps`` skips frames that come sooner than
``1 / max_fps`` after the last one kept (by the frame's timestamp; also counted as
dropped), before their RGB conversion.

**Colour.** Frames become RGB by the one rule of :mod:`vidshard.media.colour`: the first
frame's tags (else the guess for its size and rate), as ``read_frames`` reads a file,
read again whenever the frame size or pixel format changes.

**States.** ``connecting`` (the first open), ``live`` (a frame came), ``reconnecting``
(the source ended, failed, or gave no frame within ``stall_timeout_s``), ``failed`` and
``stopped``, each change with its reason and time. A reconnect waits
``reconnect_delay_s``, doubling after each failed attempt up to
``reconnect_max_delay_s``. ``max_reconnects`` reconnects in a row that give no frame
fail the stream (an attempt that yields a frame starts the count over; with 0 the first
disconnect, or a first open that fails, is final), and so does a source
that can never work (:func:`~vidshard.streams.sources.never_works`) before it was ever
live. A local file that ends without ``loop`` is over: ``stopped``, "the file ended".

**Stopping.** :meth:`StreamReader.stop` returns at once. A thread blocked inside PyAV
(an open or a read; PyAV has no way to interrupt one from outside) notices when that
call returns, within ``open_timeout_s`` or ``stall_timeout_s``, and ends by itself: it is
a daemon thread and reports nothing after the stop.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import av
import av.container
import av.video.stream
import numpy as np

from vidshard.media.colour import Colour, ColourTags, colour_rule, to_rgb

from .sources import (
    Source,
    describe_error,
    never_works,
    open_container,
    open_failure,
    parse_source,
)
from .stats import StreamStats
from .types import StreamSpec, StreamState

logger = logging.getLogger(__name__)

DECODE_THREADS = 2  # a worker decodes many streams: keep each decoder small
_RESYNC_S = 1.0  # a paced file this far behind its clock starts its clock again


@dataclass(frozen=True)
class CapturedFrame:
    """A decoded frame waiting for the detector."""

    image: np.ndarray  # (H, W, 3) uint8 RGB
    index: int  # its number among the frames decoded since the source was (re)opened
    pts_s: float | None  # its presentation time in the source
    captured_at: float  # epoch seconds (the host's clock) it was decoded
    connection: int  # 1 for the first connection, one more at each reconnect


class FrameBuffer:
    """The newest ``capacity`` frames of a stream (thread-safe)."""

    def __init__(self, capacity: int) -> None:
        self._frames: deque[CapturedFrame] = deque(maxlen=capacity)
        self._lock = threading.Lock()

    def push(self, frame: CapturedFrame) -> bool:
        """Add ``frame``; True when the oldest frame had to go to make room."""
        with self._lock:
            full = len(self._frames) == self._frames.maxlen
            self._frames.append(frame)
            return full

    def pop(self) -> CapturedFrame | None:
        """The oldest frame."""
        with self._lock:
            return self._frames.popleft() if self._frames else None

    def take_newest(self) -> tuple[CapturedFrame | None, int]:
        """The newest frame, and how many older ones were let go with it."""
        with self._lock:
            if not self._frames:
                return None, 0
            newest = self._frames.pop()
            older = len(self._frames)
            self._frames.clear()
            return newest, older

    def clear(self) -> int:
        """Forget every frame; how many there were."""
        with self._lock:
            count = len(self._frames)
            self._frames.clear()
            return count

    def __len__(self) -> int:
        return len(self._frames)


class _Sampler:
    """``max_fps``: keeps a frame when its time reaches the next due time."""

    def __init__(self, max_fps: float | None) -> None:
        self._interval_s = 1.0 / max_fps if max_fps else 0.0
        self._due: float | None = None
        self._last = 0.0  # the time of the last frame kept

    def keep(self, t: float) -> bool:
        interval = self._interval_s
        if not interval:
            return True
        due = self._due
        if due is not None and self._last <= t < due - interval * 1e-3:
            return False  # too soon after the last one kept
        # On time: the next is due one interval later (no drift). Late by more than an
        # interval, or back in time (a loop, a new connection): count again from here.
        on_time = due is not None and self._last <= t < due + interval
        self._due = due + interval if on_time and due is not None else t + interval
        self._last = t
        return True


class _Pacer:
    """A file played at its frame rate: waits until each frame's time comes."""

    def __init__(self, enabled: bool, stop: threading.Event) -> None:
        self._enabled = enabled
        self._stop = stop
        self._anchor: tuple[float, float] | None = None  # (monotonic s, pts s)
        self._last_due = 0.0
        self._restart_at: float | None = None

    def restart(self, gap_s: float) -> None:
        """The file starts again: its first frame comes ``gap_s`` after the last one."""
        self._anchor = None
        self._restart_at = self._last_due + gap_s

    def wait(self, pts_s: float | None) -> bool:
        """False when stopped while waiting."""
        if not self._enabled or pts_s is None:
            return True
        now = time.monotonic()
        anchor = self._anchor
        if anchor is None or pts_s < anchor[1]:
            start = self._restart_at if self._restart_at is not None else now
            anchor = self._anchor = (max(start, now - _RESYNC_S), pts_s)
            self._restart_at = None
        due = anchor[0] + (pts_s - anchor[1])
        if due < now - _RESYNC_S:  # far behind (a slow decode): start the clock again
            self._anchor, due = (now, pts_s), now
        self._last_due = due
        return due <= now or not self._stop.wait(due - now)


@dataclass
class _Attempt:
    """How one connection ended."""

    reason: str
    frames: int = 0  # frames it decoded
    permanent: bool = False  # nothing will make another try work
    file_ended: bool = False


class _Stalled(Exception):
    pass


def _gave_up(reconnects: int, reason: str) -> str:
    if reconnects == 0:
        return f"{reason} (reconnects are off: max_reconnects is 0)"
    tries = "1 reconnect" if reconnects == 1 else f"{reconnects} reconnects in a row"
    return f"gave up after {tries}: {reason}"


class StreamReader:
    """Reads one stream on its own thread into :attr:`buffer`.

    ``on_frame()`` is called after each frame is buffered, ``on_state(reader)`` after each
    state change (from the reader's thread; never after :meth:`stop`).
    """

    def __init__(
        self,
        spec: StreamSpec,
        stats: StreamStats,
        *,
        on_frame: Callable[[], None],
        on_state: Callable[[StreamReader], None],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.spec = spec
        self.stats = stats
        self.buffer = FrameBuffer(spec.options.buffer_frames)
        self._on_frame = on_frame
        self._on_state = on_state
        self._clock = clock
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._state = StreamState.CONNECTING
        self._reason = "opening the source"
        self._since = clock()
        self._connection = 0
        self._ever_live = False
        self.rate_fps: float | None = None  # the source's frame rate, once opened
        self._thread = threading.Thread(
            target=self._run, name=f"stream-{spec.stream_id}", daemon=True
        )

    # -- what the host reads and calls ---------------------------------------------------

    @property
    def state(self) -> StreamState:
        return self._state

    def state_info(self) -> tuple[StreamState, str, float]:
        """(state, reason, epoch seconds of the change), read together."""
        with self._lock:
            return self._state, self._reason, self._since

    def start(self) -> None:
        self._thread.start()

    def stop(self, reason: str = "removed") -> None:
        """Final state ``stopped``; returns at once (the thread ends by itself)."""
        self._finish(StreamState.STOPPED, reason, notify=False)

    def fail(self, reason: str) -> None:
        """Final state ``failed`` (the host gave up on it); returns at once."""
        self._finish(StreamState.FAILED, reason, notify=False)

    def join(self, timeout_s: float | None = None) -> bool:
        """Wait for the thread to end; whether it did."""
        if self._thread.is_alive():
            self._thread.join(timeout_s)
        return not self._thread.is_alive()

    # -- states --------------------------------------------------------------------------

    def _set_state(self, state: StreamState, reason: str) -> bool:
        with self._lock:
            if self._state.is_final or (state is self._state and reason == self._reason):
                return False
            self._state, self._reason, self._since = state, reason, self._clock()
        if state is StreamState.LIVE:
            logger.info("stream %s: live", self.spec.stream_id)
        else:
            logger.info("stream %s: %s (%s)", self.spec.stream_id, state.value, reason)
        self._on_state(self)
        return True

    def _finish(
        self, state: StreamState, reason: str, *, notify: bool, keep_frames: bool = False
    ) -> None:
        """A final state; the frames still buffered are dropped, or with ``keep_frames``
        (a file that ended) left for the host to process."""
        with self._lock:
            if self._state.is_final:
                return
            self._state, self._reason, self._since = state, reason, self._clock()
            self._stop.set()
        if not keep_frames:
            self.stats.dropped(self.buffer.clear())
        logger.info("stream %s: %s (%s)", self.spec.stream_id, state.value, reason)
        if notify:
            self._on_state(self)

    # -- the thread ----------------------------------------------------------------------

    def _run(self) -> None:
        try:
            self._connect_loop()
        except Exception as exc:  # a bug must end the stream, not the worker
            logger.exception("stream %s: the reader crashed", self.spec.stream_id)
            self._finish(StreamState.FAILED, f"the reader crashed: {exc}", notify=True)

    def _connect_loop(self) -> None:
        options = self.spec.options
        try:
            source = parse_source(self.spec.url)
        except Exception as exc:  # InputError: a URL that can never work
            self._finish(StreamState.FAILED, str(exc), notify=True)
            return
        tried = 0  # reconnects since the last attempt that gave a frame
        delay_s = options.reconnect_delay_s
        while not self._stop.is_set():
            attempt = self._attempt(source)
            if self._stop.is_set():
                return
            if attempt.file_ended:
                self._finish(StreamState.STOPPED, attempt.reason, notify=True, keep_frames=True)
                return
            if attempt.permanent and not self._ever_live:
                self._finish(StreamState.FAILED, attempt.reason, notify=True)
                return
            if attempt.frames:
                tried, delay_s = 0, options.reconnect_delay_s
            if tried >= options.max_reconnects:
                self._finish(StreamState.FAILED, _gave_up(tried, attempt.reason), notify=True)
                return
            self._set_state(StreamState.RECONNECTING, attempt.reason)
            if self._stop.wait(delay_s):
                return
            delay_s = min(options.reconnect_max_delay_s, max(delay_s, 0.01) * 2)
            tried += 1
            self.stats.reconnected()

    def _attempt(self, source: Source) -> _Attempt:
        """Open the source and read it until it ends, fails or stalls (a looped file
        goes round until then)."""
        options = self.spec.options
        self._connection += 1
        frames = 0
        sampler = _Sampler(options.max_fps)
        pacer = _Pacer(source.is_file and options.realtime, self._stop)
        while True:
            try:
                container = open_container(
                    source,
                    transport=options.transport,
                    open_timeout_s=options.open_timeout_s,
                    read_timeout_s=options.stall_timeout_s,
                )
            except Exception as exc:  # PyAV's errors, and OSError
                reason = open_failure(exc, source, options.open_timeout_s)
                return _Attempt(reason, frames, permanent=never_works(exc, source))
            with container:
                if self._stop.is_set():
                    return _Attempt("stopped", frames)
                try:
                    frames += self._play(container, sampler, pacer, frames)
                except _Stalled as exc:
                    return _Attempt(str(exc), frames)
                except (av.FFmpegError, OSError, IndexError) as exc:
                    return self._read_failure(exc, source, frames)
            if self._stop.is_set():
                return _Attempt("stopped", frames)
            if not source.is_file:
                return _Attempt("the source ended", frames)
            if not options.loop:
                return _Attempt("the file ended", frames, file_ended=True)
            if not frames:
                return _Attempt("the file has no frames", frames, permanent=True)
            pacer.restart(1.0 / self.rate_fps if self.rate_fps else 0.04)

    def _read_failure(self, exc: BaseException, source: Source, frames: int) -> _Attempt:
        if isinstance(exc, IndexError):
            return _Attempt(f"{source.shown}: no video stream", frames, permanent=True)
        if isinstance(exc, av.ExitError):
            return _Attempt(f"stalled: no data for {self.spec.options.stall_timeout_s:g} s", frames)
        return _Attempt(f"read failed: {describe_error(exc)}", frames, never_works(exc, source))

    def _play(
        self,
        container: av.container.InputContainer,
        sampler: _Sampler,
        pacer: _Pacer,
        first_index: int,
    ) -> int:
        """Decode ``container`` into the buffer until it ends (its first frame numbered
        ``first_index``); the frames decoded."""
        stream = container.streams.video[0]
        ctx = stream.codec_context
        ctx.thread_type = "AUTO"
        ctx.thread_count = DECODE_THREADS
        self.rate_fps = float(stream.average_rate) if stream.average_rate else None
        colour: tuple[tuple[int, int, str], Colour] | None = None
        decoded = 0
        for frame in self._frames(container, stream):
            index = first_index + decoded
            decoded += 1
            self.stats.received()
            pts_s = frame.time
            if not pacer.wait(pts_s):
                break
            if not sampler.keep(pts_s if pts_s is not None else time.monotonic()):
                self.stats.dropped()
                continue
            key = (frame.width, frame.height, frame.format.name)
            if colour is None or colour[0] != key:
                colour = (key, self._colour(frame, stream))
            image = to_rgb(frame, colour[1])
            self._deliver(CapturedFrame(image, index, pts_s, self._clock(), self._connection))
        return decoded

    def _colour(self, frame: av.VideoFrame, stream: av.video.stream.VideoStream) -> Colour:
        """How this frame's samples read as RGB: :func:`colour_rule`, as for a file."""
        size_wh = (frame.width, frame.height)
        return colour_rule(ColourTags.of(frame), size_wh, stream.average_rate, frame.format.name)

    def _deliver(self, frame: CapturedFrame) -> None:
        if self._stop.is_set():
            return
        if self.buffer.push(frame):
            self.stats.dropped()
        self._ever_live = True
        self._set_state(StreamState.LIVE, "")
        self._on_frame()

    def _frames(
        self, container: av.container.InputContainer, stream: av.video.stream.VideoStream
    ) -> Iterator[av.VideoFrame]:
        """The decoded frames; packets the decoder refuses are skipped, and no frame
        within ``stall_timeout_s`` is a stall (:class:`_Stalled`)."""
        stall_s = self.spec.options.stall_timeout_s
        last = time.monotonic()
        for packet in container.demux():  # every stream's: a stall shows behind audio too
            if self._stop.is_set():
                return
            frames = self._decode(packet) if packet.stream_index == stream.index else []
            for frame in frames:
                yield frame
                last = time.monotonic()
            if time.monotonic() - last > stall_s:
                raise _Stalled(f"stalled: no frame for {stall_s:g} s")

    def _decode(self, packet: av.Packet[Any]) -> list[av.VideoFrame]:
        try:
            return [f for f in packet.decode() if isinstance(f, av.VideoFrame)]
        except av.FFmpegError as exc:
            logger.debug("stream %s: skipped a packet: %s", self.spec.stream_id, exc)
            return []
