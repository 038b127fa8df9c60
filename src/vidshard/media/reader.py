"""Frame-exact reading of frames ``[start, end)`` of a probed video.

The reader seeks to the keyframe at or before ``start`` (positions from the probe),
decodes forward, drops frames before ``start`` and names every decoded frame by its pts,
so a segment may start anywhere, mid-GOP included, at the cost of at most one GOP of
extra decoding. Decoding stops once ``end`` is reached. Frames become RGB as
:func:`vidshard.media.colour.video_colour` reads the stream (its tags, else the size's
guess), the way players show it.
"""

from __future__ import annotations

import bisect
import itertools
import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import av.container
import av.video.stream
import numpy as np

from vidshard.errors import InputError, MediaError, VidshardError

from .colour import to_rgb, video_colour
from .source import FileIdentity, opened_source
from .types import VideoStreamInfo, span

logger = logging.getLogger(__name__)

MAX_AUTO_THREADS = 4  # several workers share a machine: keep each decoder modest
MAX_SEEK_RETRIES = 2  # earlier keyframes to try when a seek lands past ``start``


@dataclass(frozen=True)
class DecodedFrame:
    index: int  # frame index into the probe's ``pts``
    pts: int  # in the video stream's time base
    image: np.ndarray  # (H, W, 3) uint8 RGB


class _Overshot(Exception):
    """The seek landed after the first wanted frame."""


def read_frames(
    path: str | Path,
    video: VideoStreamInfo,
    start: int,
    end: int,
    *,
    threads: int = 0,
    identity: FileIdentity | None = None,
) -> Iterator[DecodedFrame]:
    """Yield frames ``start .. end - 1`` in order, each exactly once.

    With ``identity`` (the probe's), a file that is no longer the one probed is refused
    (:class:`~vidshard.errors.InputChanged`) instead of read.

    ``threads = 0`` means automatic, capped at :data:`MAX_AUTO_THREADS`.
    Raises :class:`InputError` when a frame of the range is never decoded because the
    input is corrupt there (the decoder refused packets) or comes before the stream's
    first keyframe (a stream cut mid-GOP), :class:`MediaError` when it is never decoded
    for another reason.
    """
    file = Path(path)
    count = video.frame_count
    if not 0 <= start <= end <= count:
        raise MediaError(
            f"{file.name}: expected 0 <= start <= end <= {count}, got [{start}, {end})"
        )
    if start == end:
        return
    if not _covers(video, start, end):
        raise MediaError(
            f"{file.name}: frames [{start}, {end}) are outside the frame window read with "
            f"them ({reading_window.__name__} makes the one needed)"
        )
    index_of = _index_lookup(video)
    key = _key_position(video, start)
    for attempt in range(MAX_SEEK_RETRIES + 2):
        seek_frame = _seek_target(video, key - attempt, last=attempt > MAX_SEEK_RETRIES)
        try:
            with opened_source(file, identity) as name:
                yield from _decode_range(
                    file,
                    name,
                    video,
                    index_of,
                    start=start,
                    end=end,
                    seek_frame=seek_frame,
                    threads=threads,
                )
            return
        except _Overshot:
            logger.debug("%s: seek to frame %s overshot %d, retrying", file.name, seek_frame, start)
    raise MediaError(f"{file.name}: cannot reach frame {start}: every seek lands after it")


def reading_window(video: VideoStreamInfo, start: int, end: int) -> VideoStreamInfo:
    """``video`` listing only what reading frames ``[start, end)`` looks at: from the
    keyframe a seek (and its retries) lands on to one frame past ``end``. A work unit
    carries this, not the whole video's frame lists (see :class:`FrameWindow`)."""
    key = _key_position(video, start)
    first = video.keyframes[max(0, key - MAX_SEEK_RETRIES)] if key >= 0 else 0
    return video.window(min(first, start), min(video.frame_count, end + 1))


def _key_position(video: VideoStreamInfo, start: int) -> int:
    """The position in ``video.keyframes`` of the last keyframe at or before ``start``
    (-1: none), looked up within what the list holds."""
    return bisect.bisect_right(video.keyframes, start, *span(video.keyframes)) - 1


def _covers(video: VideoStreamInfo, start: int, end: int) -> bool:
    """Whether ``video``'s lists hold what reading ``[start, end)`` needs."""
    lo, hi = span(video.pts)
    if (lo, hi) == (0, video.frame_count):
        return True
    key = _key_position(video, start)
    needed = max(0, key - MAX_SEEK_RETRIES)
    return lo <= start and end <= hi and (key < 0 or span(video.keyframes)[0] <= needed)


def _index_lookup(video: VideoStreamInfo) -> Callable[[int], int | None]:
    """A decoded frame's pts -> its frame index (None: a pts the probe did not list).
    In a window, a pts past its last frame reads as the frame after it, and one before
    its first as the frame before it, so decoding stops and skips as with the whole list."""
    lo, hi = span(video.pts)
    index_of = {video.pts[i]: i for i in range(lo, hi)}
    total = video.frame_count
    if (lo, hi) == (0, total) or hi == lo:
        return index_of.get
    first, last = video.pts[lo], video.pts[hi - 1]

    def find(pts: int) -> int | None:
        index = index_of.get(pts)
        if index is None:
            if pts > last and hi < total:
                return hi
            if pts < first and lo > 0:
                return lo - 1
        return index

    return find


def _seek_target(video: VideoStreamInfo, key: int, *, last: bool) -> int | None:
    """The frame index to seek to, or None to decode from the file's start."""
    if last or key <= 0 or not video.keyframes:
        return None
    return video.keyframes[key]


def _decode_range(
    file: Path,
    name: str,
    video: VideoStreamInfo,
    index_of: Callable[[int], int | None],
    *,
    start: int,
    end: int,
    seek_frame: int | None,
    threads: int,
) -> Iterator[DecodedFrame]:
    try:
        container = av.open(name, mode="r")
    except (av.FFmpegError, OSError) as exc:
        raise MediaError(f"{file}: cannot open for decoding ({exc})") from exc
    with container:
        stream = container.streams.video[_stream_position(container, video, file)]
        ctx = stream.codec_context
        ctx.thread_type = "AUTO"
        ctx.thread_count = threads or min(MAX_AUTO_THREADS, os.cpu_count() or 1)
        if seek_frame is not None:
            container.seek(video.pts[seek_frame], stream=stream, backward=True, any_frame=False)
        expected = start
        colour = video_colour(video)  # the stream's reading, the same in every worker
        refused: list[av.FFmpegError] = []  # packets the decoder refused
        for index, pts, frame in _decoded(container, stream, index_of, file, refused):
            if index < start:
                continue
            if expected == start and index > start and seek_frame is not None:
                raise _Overshot
            if index < expected:
                continue  # repeated after a decoder hiccup; already yielded
            if index > expected:
                raise _not_decoded(file, video, range(expected, min(index, end)), refused)
            if index >= end:
                return
            image = to_rgb(frame, colour)
            yield DecodedFrame(index=index, pts=pts, image=image)
            expected = index + 1
            if expected == end:
                return
    raise _not_decoded(file, video, range(expected, end), refused, ended=True)


def _not_decoded(
    file: Path,
    video: VideoStreamInfo,
    missing: range,
    refused: list[av.FFmpegError],
    *,
    ended: bool = False,
) -> VidshardError:
    """The error for frames the probe lists but decoding never produced."""
    frames = f"{file.name}: frames {_ranges(list(missing))}"
    if refused:
        reason = refused[0].strerror or str(refused[0])
        return InputError(f"{frames} do not decode: the input is corrupt there ({reason})")
    if video.keyframes and missing[-1] < video.keyframes[0]:
        return InputError(
            f"{frames} come before the video's first keyframe and cannot be decoded "
            "(a stream cut mid-GOP); cut or remux the input to start at a keyframe"
        )
    suffix = " (the stream ended early or is corrupt)" if ended else ""
    return MediaError(f"{frames} were not decoded{suffix}")


def _stream_position(
    container: av.container.InputContainer, video: VideoStreamInfo, file: Path
) -> int:
    for position, stream in enumerate(container.streams.video):
        if stream.index == video.index:
            return position
    raise MediaError(f"{file.name}: expected a video stream #{video.index}, found none")


def _decoded(
    container: av.container.InputContainer,
    stream: av.video.stream.VideoStream,
    index_of: Callable[[int], int | None],
    file: Path,
    refused: list[av.FFmpegError],
) -> Iterator[tuple[int, int, av.VideoFrame]]:
    """Decoded frames with their probe index; unknown timestamps are skipped, and so are
    packets the decoder refuses (appended to ``refused``)."""
    for packet in container.demux(stream):
        try:
            frames = packet.decode()
        except av.FFmpegError as exc:
            logger.info("%s: skipping a packet that does not decode: %s", file.name, exc)
            refused.append(exc)
            continue
        for frame in frames:
            pts = frame.pts if frame.pts is not None else frame.dts
            index = index_of(pts) if pts is not None else None
            if index is None or pts is None:
                logger.debug("%s: decoded a frame with unknown pts %s", file.name, pts)
                continue
            yield index, pts, frame


def _ranges(indices: list[int]) -> str:
    """``[1, 2, 3, 7]`` → ``"1-3, 7"``, for one-line messages."""
    runs = [
        [i for _, i in group]
        for _, group in itertools.groupby(enumerate(indices), key=lambda item: item[1] - item[0])
    ]
    return ", ".join(str(r[0]) if len(r) == 1 else f"{r[0]}-{r[-1]}" for r in runs)
