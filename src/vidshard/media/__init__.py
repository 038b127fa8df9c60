"""Media I/O: probe, colour, frame-exact segment reader, segment writer, join and verification.

The names below are imported when first used, so a worker that only reads and writes
segments does not load the join (nor the colour charts and stream copying it needs).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .colour import Colour, ColourTags, colour_rule, to_rgb, video_colour
    from .join import check_output_container, join_segments, next_dts, read_display_matrix
    from .reader import DecodedFrame, read_frames
    from .types import MediaInfo, StreamInfo, VideoStreamInfo
    from .verify import same_time, verify_output
    from .writer import SEGMENT_SUFFIX, EncodeSettings, SegmentWriter, resolve_pix_fmt

_WHERE = {
    "Colour": "colour",
    "ColourTags": "colour",
    "colour_rule": "colour",
    "to_rgb": "colour",
    "video_colour": "colour",
    "check_output_container": "join",
    "join_segments": "join",
    "next_dts": "join",
    "read_display_matrix": "join",
    "DecodedFrame": "reader",
    "read_frames": "reader",
    "MediaInfo": "types",
    "StreamInfo": "types",
    "VideoStreamInfo": "types",
    "same_time": "verify",
    "verify_output": "verify",
    "SEGMENT_SUFFIX": "writer",
    "EncodeSettings": "writer",
    "SegmentWriter": "writer",
    "resolve_pix_fmt": "writer",
}

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


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value  # the next lookup is a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


# ``probe`` is both a submodule and its function: bound now, the function wins for good
# (the submodule's import would otherwise set the package's ``probe`` to the module).
from .probe import bit_depth, probe, probe_to_dict  # noqa: E402
