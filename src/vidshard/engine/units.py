"""Work units and their results: the small messages between coordinator and workers.

A unit names its inputs and outputs by path; no frame pixels travel in it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vidshard.media.plan import Segment
from vidshard.media.source import FileIdentity
from vidshard.media.types import VideoStreamInfo
from vidshard.media.writer import EncodeSettings

if TYPE_CHECKING:  # a unit that holds one imports it as it is unpickled: an upscale
    # worker loads no detection or generation code
    from vidshard.detection.pipeline import DetectRecipe
    from vidshard.generation.types import GenerationModel, Layout


def output_size_wh(
    size_wh: tuple[int, int], scale: int, *, down_sample: bool = False
) -> tuple[int, int]:
    """The output's frame size: the input's times the scale, or the input's own size
    when it is shrunk by the scale before the model (``down_sample``)."""
    width, height = size_wh
    return (width, height) if down_sample else (width * scale, height * scale)


@dataclass(frozen=True)
class SegmentUnit:
    """Decode a segment (with context), run the model, encode its core, dump seam halves."""

    unit_id: str
    source: Path
    video: VideoStreamInfo
    segment: Segment
    core_path: Path
    seam_left_path: Path | None  # raw model outputs for the seam before this segment
    seam_right_path: Path | None  # ... and after it
    settings: EncodeSettings
    scale: int
    batch_size: int
    source_identity: FileIdentity | None = None  # the probe's: a swapped file is refused
    down_sample: bool = False  # frames shrunk by ``scale`` before the model: same-size output

    @property
    def frames(self) -> int:
        start, end = self.segment.read_range
        return end - start

    @property
    def out_size_wh(self) -> tuple[int, int]:
        return output_size_wh(self.video.size_wh, self.scale, down_sample=self.down_sample)

    @property
    def needs_model(self) -> bool:
        return True


@dataclass(frozen=True)
class SeamUnit:
    """Crossfade the two raw halves of a seam and encode the result."""

    unit_id: str
    video: VideoStreamInfo
    frame_range: tuple[int, int]
    left_path: Path  # from the segment before the seam
    right_path: Path  # from the segment after it
    out_path: Path
    settings: EncodeSettings
    size_wh: tuple[int, int]

    @property
    def frames(self) -> int:
        return self.frame_range[1] - self.frame_range[0]

    @property
    def needs_model(self) -> bool:
        return False


@dataclass(frozen=True)
class TrackUnit:
    """Detect (and track) objects on chosen frames of one video, in order; write the
    per-frame results to ``out_path`` (a pickle of :class:`TrackedFrame` s)."""

    unit_id: str
    source: Path
    video: VideoStreamInfo
    indices: tuple[int, ...]  # frame indices to process, increasing (a part, with overlap)
    out_path: Path
    masks: bool = False  # keep masks, as RLE
    source_identity: FileIdentity | None = None  # the probe's: a swapped file is refused

    @property
    def frames(self) -> int:
        return len(self.indices)

    @property
    def needs_model(self) -> bool:
        return True


@dataclass(frozen=True)
class AnnotateUnit:
    """Draw boxes, ids and masks on a segment of a video and encode it as a piece."""

    unit_id: str
    source: Path
    video: VideoStreamInfo
    frame_range: tuple[int, int]
    drawings: tuple[object, ...]  # per frame of the range: what to draw (see detect.annotate)
    out_path: Path
    settings: EncodeSettings
    source_identity: FileIdentity | None = None  # the probe's: a swapped file is refused

    @property
    def frames(self) -> int:
        return self.frame_range[1] - self.frame_range[0]

    @property
    def needs_model(self) -> bool:
        return False


@dataclass(frozen=True)
class StreamHostUnit:
    """Host live streams of one recipe on one slot until the last is removed: a
    long-lived unit, pinned to the slot that placement chose. Streams placed there later
    reach it as ``("stream_add", spec, token)`` / ``("stream_remove", id, token)``."""

    unit_id: str
    recipe: DetectRecipe  # every stream of a host shares its detector (and batches)
    specs: tuple[Any, ...]  # StreamSpec (vidshard.streams.types sits above the engine)

    @property
    def frames(self) -> int:
        return 0  # no expected length: it has no deadline

    @property
    def needs_model(self) -> bool:
        return False  # the host builds its detector from ``recipe`` itself


@dataclass(frozen=True)
class GroupRankUnit:
    """One rank of a generation group: a long-lived unit pinned to its slot. It joins the
    group's process group at ``init_method`` once told (``gen_join``), loads ``model``
    and serves ``gen_run`` / ``gen_cancel`` until ``gen_close``. ``timeout_s`` bounds
    every collective: a rank that dies or hangs ends the others' units failed."""

    unit_id: str
    model: GenerationModel
    layout: Layout
    rank: int
    init_method: str  # tcp://127.0.0.1:PORT, chosen by the coordinator
    timeout_s: float  # the collectives' timeout

    @property
    def frames(self) -> int:
        return 0  # no expected length: it has no deadline

    @property
    def needs_model(self) -> bool:
        return False  # the rank builds its runner from ``model`` itself


WorkUnit = SegmentUnit | SeamUnit | TrackUnit | AnnotateUnit  # short units, with a result
PinnedUnit = StreamHostUnit | GroupRankUnit  # long-lived units, placed on one slot


@dataclass(frozen=True)
class UnitResult:
    unit_id: str
    slot_label: str
    frames: int  # frames the model (or blender) processed, context included
    seconds: float  # wall time in the worker
    outputs: tuple[Path, ...] = field(default_factory=tuple)
