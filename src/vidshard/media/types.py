"""What a probe finds in a media file."""

from __future__ import annotations

import bisect
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from fractions import Fraction
from pathlib import Path
from typing import Any, overload

from .colour_tags import ColourTags
from .source import FileIdentity


class FrameWindow(Sequence[int]):
    """Part of a video's frame list (``pts``, ``durations``) or keyframe list, indexed
    as the whole list is: it holds positions ``[start, stop)`` and position 0 (the
    video's time origin, its first keyframe), and its length is the whole list's.

    A work unit carries the window of frames it reads, not the whole video's lists: a
    two-hour video's are megabytes, and a job sends thousands of units, so whole lists
    made every job's unit traffic grow with the square of its length. Reading outside
    the window raises :class:`IndexError` naming it; so does iterating over it.
    """

    __slots__ = ("_head", "_start", "_total", "_values")

    def __init__(self, values: Sequence[int], start: int, total: int, head: int) -> None:
        if not 0 <= start <= start + len(values) <= total:
            raise ValueError(f"a window [{start}, {start + len(values)}) of {total} positions")
        self._values = tuple(values)
        self._start = start
        self._total = total
        self._head = head

    @classmethod
    def of(cls, whole: Sequence[int], start: int, stop: int) -> FrameWindow:
        """Positions ``[start, stop)`` of ``whole`` (clamped to it)."""
        total = len(whole)
        start, stop = max(0, min(start, total)), max(0, min(stop, total))
        stop = max(start, stop)
        return cls(tuple(whole[start:stop]), start, total, whole[0] if total else 0)

    @property
    def span(self) -> tuple[int, int]:
        """The positions held, ``[start, stop)`` (and position 0)."""
        return (self._start, self._start + len(self._values))

    def __len__(self) -> int:
        return self._total

    @overload
    def __getitem__(self, index: int) -> int: ...
    @overload
    def __getitem__(self, index: slice) -> tuple[int, ...]: ...
    def __getitem__(self, index: int | slice) -> int | tuple[int, ...]:
        start, stop = self.span
        if isinstance(index, slice):
            first, last, step = index.indices(self._total)
            if step != 1 or (last > first and not (start <= first and last <= stop)):
                raise IndexError(self._outside(f"[{first}:{last}:{step}]"))
            return self._values[first - start : last - start] if last > first else ()
        position = index + self._total if index < 0 else index
        if position == 0 and self._total:
            return self._head
        if not start <= position < stop:
            raise IndexError(self._outside(str(index)))
        return self._values[position - start]

    def __iter__(self) -> Iterator[int]:
        raise IndexError(self._outside("every position"))

    def __reversed__(self) -> Iterator[int]:
        raise IndexError(self._outside("every position"))

    def __contains__(self, value: object) -> bool:
        raise IndexError(self._outside("every position"))

    def _outside(self, what: str) -> str:
        start, stop = self.span
        return f"position {what} is outside this frame window [{start}, {stop}) of {self._total}"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, FrameWindow):
            return NotImplemented
        return (self._values, self._start, self._total, self._head) == (
            other._values,
            other._start,
            other._total,
            other._head,
        )

    def __hash__(self) -> int:
        return hash((self._values, self._start, self._total, self._head))

    def __repr__(self) -> str:
        start, stop = self.span
        return f"FrameWindow([{start}, {stop}) of {self._total})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (FrameWindow, (self._values, self._start, self._total, self._head))


def span(frames: Sequence[int]) -> tuple[int, int]:
    """The positions of ``frames`` that can be read: all of a tuple, a window's span."""
    return frames.span if isinstance(frames, FrameWindow) else (0, len(frames))


@dataclass(frozen=True)
class VideoStreamInfo:
    """The video stream vidshard processes. Frame lists are in presentation order.

    In a work unit the three lists may be :class:`FrameWindow` s (:meth:`window`)."""

    index: int  # stream index in the container
    codec: str
    width: int
    height: int
    pix_fmt: str | None
    time_base: Fraction
    pts: Sequence[int]  # every frame's pts in ``time_base``, sorted (presentation order)
    keyframes: Sequence[int]  # frame indices (into ``pts``) of keyframes, sorted
    durations: Sequence[int]  # every frame's duration in ``time_base`` (0 where unknown)
    avg_rate: Fraction | None
    rotation: int = 0  # degrees, counter-clockwise, from the display matrix
    bit_depth: int = 8
    colour_tags: ColourTags = field(default_factory=ColourTags)  # read: colour.video_colour

    @property
    def frame_count(self) -> int:
        return len(self.pts)

    @property
    def size_wh(self) -> tuple[int, int]:
        return (self.width, self.height)

    def window(self, start: int, stop: int) -> VideoStreamInfo:
        """This stream with only frames ``[start, stop)`` listed (and frame 0), and the
        keyframes among them (and the first): what a unit reading those frames carries.
        Indices stay the whole video's."""
        lo = bisect.bisect_left(self.keyframes, start)
        hi = bisect.bisect_left(self.keyframes, stop)
        return replace(
            self,
            pts=FrameWindow.of(self.pts, start, stop),
            durations=FrameWindow.of(self.durations, start, stop),
            keyframes=FrameWindow.of(self.keyframes, lo, hi),
        )

    @property
    def duration_s(self) -> float:
        """From the first frame's pts to the end of the last frame."""
        if not self.pts:
            return 0.0
        end = self.pts[-1] + (self.durations[-1] if self.durations else 0)
        return float((end - self.pts[0]) * self.time_base)


@dataclass(frozen=True)
class StreamInfo:
    """Any other stream (audio, subtitle, data, attachment)."""

    index: int
    kind: str  # "audio" | "subtitle" | "data" | "attachment" | "video"
    codec: str | None
    language: str | None = None
    packets: int | None = None


@dataclass(frozen=True)
class MediaInfo:
    path: Path
    format_name: str
    size_bytes: int
    duration_s: float
    video: VideoStreamInfo
    streams: tuple[StreamInfo, ...] = ()  # all streams other than ``video``
    metadata: dict[str, str] = field(default_factory=dict)
    identity: FileIdentity | None = None  # of the file the probe read: later opens check it
