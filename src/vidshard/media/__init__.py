"""Media I/O: probe, colour, frame-exact segment reader, segment writer, join and verification."""

from .colour import Colour, ColourTags, colour_rule, to_rgb, video_colour
from .join import check_output_container, join_segments, next_dts, read_display_matrix
from .probe import bit_depth, probe, probe_to_dict
from .reader import DecodedFrame, read_frames
from .types import MediaInfo, StreamInfo, VideoStreamInfo
from .verify import same_time, verify_output
from .writer import SEGMENT_SUFFIX, EncodeSettings, SegmentWriter, resolve_pix_fmt

__all__ = [
    "SEGMENT_SUFFIX",
    "Colour",
    "ColourTags",
    "DecodedFrame",
    "EncodeSettings",
    "MediaInfo",
    "SegmentWriter",
    "StreamInfo",
    "VideoStreamInfo",
    "bit_depth",
    "check_output_container",
    "colour_rule",
    "join_segments",
    "next_dts",
    "probe",
    "probe_to_dict",
    "read_display_matrix",
    "read_frames",
    "resolve_pix_fmt",
    "same_time",
    "to_rgb",
    "verify_output",
    "video_colour",
]
