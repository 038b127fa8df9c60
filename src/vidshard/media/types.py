"""What a probe finds in a media file."""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

from .colour_tags import ColourTags
from .source import FileIdentity


@dataclass(frozen=True)
class VideoStreamInfo:
    """The video stream vidshard processes. Frame lists are in presentation order."""

    index: int  # stream index in the container
    codec: str
    width: int
    height: int
    pix_fmt: str | None
    time_base: Fraction
    pts: tuple[int, ...]  # every frame's pts in ``time_base``, sorted (presentation order)
    keyframes: tuple[int, ...]  # frame indices (into ``pts``) of keyframes, sorted
    durations: tuple[int, ...]  # every frame's duration in ``time_base`` (0 where unknown)
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
