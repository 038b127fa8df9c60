"""Split a video into segments that idle workers pull.

Segments are a few seconds long and there are several per slot, so fast devices take
more, a failed segment costs little, and finished segments are checkpoints. Boundaries
snap to a keyframe when one is near (cheaper decode); otherwise a boundary falls between
keyframes and the worker decodes forward from the keyframe before it (DESIGN: "Segment
starts need not be keyframes"), so a file with few keyframes still spreads over every
device.

With ``overlap_frames = K`` each internal boundary ``B`` gets a *seam*: frames
``[B-K, B+K)`` are computed by both neighbouring segments (each sees K context frames
past its edge) and crossfaded. The output is assembled from pieces in this order:
``core 0, seam 0, core 1, seam 1, ..., core n-1``.
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

from vidshard.errors import ConfigError

from .types import VideoStreamInfo

DEFAULT_SEGMENT_SECONDS = 2.0
SEGMENTS_PER_SLOT = 4
MIN_SEGMENT_FRAMES = 8
# A keyframe within this fraction of a segment's length from the ideal boundary wins.
KEYFRAME_SNAP_FRACTION = 0.25
# Near the end, segments shrink down to this fraction of the others (see _tapered_bounds).
TAIL_FRACTION = 0.25


@dataclass(frozen=True)
class Segment:
    """Frames ``[start, end)`` of the video, with the pieces this segment produces."""

    index: int
    start: int
    end: int
    overlap_frames: int
    is_first: bool
    is_last: bool
    frame_count_total: int

    @property
    def frames(self) -> int:
        return self.end - self.start

    @property
    def read_range(self) -> tuple[int, int]:
        """Frames the worker decodes and feeds to the model (body plus context)."""
        k = self.overlap_frames
        return (max(0, self.start - k), min(self.frame_count_total, self.end + k))

    @property
    def core_range(self) -> tuple[int, int]:
        """Frames this segment alone encodes (body less the seam halves)."""
        k = self.overlap_frames
        start = self.start if self.is_first else self.start + k
        end = self.end if self.is_last else self.end - k
        return (start, end)

    @property
    def seam_left(self) -> tuple[int, int] | None:
        """Frames of the seam before this segment (shared with the previous one)."""
        if self.is_first or self.overlap_frames == 0:
            return None
        k = self.overlap_frames
        return (self.start - k, self.start + k)

    @property
    def seam_right(self) -> tuple[int, int] | None:
        """Frames of the seam after this segment (shared with the next one)."""
        if self.is_last or self.overlap_frames == 0:
            return None
        k = self.overlap_frames
        return (self.end - k, self.end + k)


def _frame_rate(video: VideoStreamInfo) -> float:
    duration_s = video.duration_s
    if duration_s > 0:
        return video.frame_count / duration_s
    if video.avg_rate:
        return float(video.avg_rate)
    return 25.0


def _segment_count(
    video: VideoStreamInfo, slots: int, segment_seconds: float | None, min_frames: int
) -> int:
    fps = _frame_rate(video)
    if segment_seconds is None:
        by_time = math.ceil(video.frame_count / max(1.0, DEFAULT_SEGMENT_SECONDS * fps))
        wanted = max(by_time, slots * SEGMENTS_PER_SLOT)
    else:
        by_time = math.ceil(video.frame_count / max(1.0, segment_seconds * fps))
        wanted = max(by_time, slots)
    return max(1, min(wanted, video.frame_count // min_frames))


def _snap(ideal: int, keyframes: Sequence[int], radius: int) -> int:
    pos = bisect.bisect_left(keyframes, ideal)
    candidates = [keyframes[i] for i in (pos - 1, pos) if 0 <= i < len(keyframes)]
    best = min(candidates, key=lambda k: abs(k - ideal), default=ideal)
    return best if abs(best - ideal) <= radius else ideal


def plan_segments(
    video: VideoStreamInfo,
    *,
    slots: int,
    segment_seconds: float | None = None,
    overlap_frames: int = 0,
) -> list[Segment]:
    """Plan segments covering every frame exactly once, in order."""
    if slots < 1:
        raise ConfigError(f"slots must be at least 1, got {slots}")
    if segment_seconds is not None and segment_seconds <= 0:
        raise ConfigError(f"--segment-seconds must be positive, got {segment_seconds}")
    if overlap_frames < 0:
        raise ConfigError(f"--overlap-frames must be 0 or more, got {overlap_frames}")
    total = video.frame_count
    # Each segment keeps at least one frame of its own beside its two seam halves.
    min_frames = max(MIN_SEGMENT_FRAMES, 2 * overlap_frames + 1)
    count = _segment_count(video, slots, segment_seconds, min_frames)
    gap = _keyframe_interval(video.keyframes)
    if segment_seconds is None and gap is not None:
        # A segment starting between keyframes decodes from the one before it: the
        # default length is never cut finer than the keyframe interval, unless the
        # slots need more segments than that to share the work.
        count = max(1, min(count, max(slots * SEGMENTS_PER_SLOT, total // gap)))
    length = total / count
    if segment_seconds is None and count > 1:  # an explicit length is kept as given
        bounds = _tapered_bounds(total, length, slots, video.keyframes, min_frames)
        return segments_from_bounds(bounds, overlap_frames)
    radius = int(length * KEYFRAME_SNAP_FRACTION)
    bounds = [0]
    for i in range(1, count):
        b = _snap(round(i * length), video.keyframes, radius)
        if b - bounds[-1] >= min_frames and total - b >= min_frames:
            bounds.append(b)
    bounds.append(total)
    return segments_from_bounds(bounds, overlap_frames)


def _tapered_bounds(
    total: int, length: float, slots: int, keyframes: Sequence[int], min_frames: int
) -> list[int]:
    """Boundaries of segments of ``length`` frames that shrink as the video nears its
    end, so the slots finish together instead of some idling through the last segments.

    Each segment is ``remaining / (2 x slots)`` frames, at most ``length`` and at least
    a quarter of it: the last round hands every slot a short piece. Boundaries snap to
    a keyframe within a quarter of a full segment (half of a shorter one); where keyframes
    come regularly, at most ``length`` apart, no segment is shorter than their interval,
    so every boundary still lands on one.
    """
    floor = max(min_frames, round(length * TAIL_FRACTION))
    gap = _keyframe_interval(keyframes)
    if gap is not None and gap <= length:
        floor = max(floor, gap)
    bounds = [0]
    while (remaining := total - bounds[-1]) > 0:
        size = min(length, max(floor, remaining / (2 * slots)))
        if remaining - size < floor:  # what is left is one segment: the last
            bounds.append(total)
            break
        fraction = KEYFRAME_SNAP_FRACTION if size >= length else 2 * KEYFRAME_SNAP_FRACTION
        b = _snap(round(bounds[-1] + size), keyframes, int(size * fraction))
        if b - bounds[-1] < min_frames or total - b < min_frames:
            b = round(bounds[-1] + size)
        bounds.append(b)
    return bounds


def _keyframe_interval(keyframes: Sequence[int]) -> int | None:
    """The usual distance between keyframes (the median), or None with fewer than 3."""
    if len(keyframes) < 3:
        return None
    gaps = sorted(b - a for a, b in itertools.pairwise(keyframes))
    return gaps[len(gaps) // 2]


def segments_from_bounds(bounds: list[int], overlap_frames: int) -> list[Segment]:
    """Segments between consecutive boundaries (``[0, b1, ..., total]``)."""
    total = bounds[-1]
    n = len(bounds) - 1
    k = overlap_frames if n > 1 else 0
    return [
        Segment(
            index=i,
            start=bounds[i],
            end=bounds[i + 1],
            overlap_frames=k,
            is_first=i == 0,
            is_last=i == n - 1,
            frame_count_total=total,
        )
        for i in range(n)
    ]
