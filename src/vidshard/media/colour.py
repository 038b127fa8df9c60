"""What a video's samples mean: one rule for every decoder and encoder in vidshard.

YUV samples need a matrix (how Y, Cb, Cr make R, G, B) and a range (limited 16-235 or
full 0-255) to become RGB, and primaries and a transfer curve to be shown. Many files
declare none of them. :func:`colour_rule` reads them the way FFmpeg-based players do:
a stream's own tags where present; otherwise HD and larger (height >= 720 or width >=
1280) is BT.709, SD is BT.601 (625-line primaries at 25 or 50 fps, 525-line otherwise),
and the range is limited unless the stream says full (or is a ``yuvj*`` format).

Frames are decoded to RGB with that reading (:func:`to_rgb`), and the output is encoded
with the same one and tagged with it explicitly (:func:`from_rgb`, and the writer's
stream tags), so every player shows what the model produced. Transfer and primaries
(PQ, HLG, BT.2020 included) are carried as tags; pixels are never tone-mapped.
Any code that turns a video's frames into RGB calls :func:`colour_rule` (or
:func:`video_colour` for a probed stream) and :func:`to_rgb`.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import TYPE_CHECKING

import av
import numpy as np
from av.video.reformatter import ColorRange, Colorspace, Interpolation

from .colour_tags import (
    MATRIX_NAMES,
    PRI_BT470BG,
    PRI_BT709,
    PRI_SMPTE170M,
    PRIMARIES_NAMES,
    RANGE_FULL,
    RANGE_LIMITED,
    RANGE_UNSPECIFIED,
    SPC_BT470BG,
    SPC_BT709,
    SPC_BT2020_NCL,
    SPC_RGB,
    SPC_SMPTE170M,
    TRC_BT709,
    TRC_NAMES,
    TRC_SMPTE170M,
    UNSPECIFIED,
    ColourTags,
    describe_colour,
    range_name,
)

if TYPE_CHECKING:
    from .types import VideoStreamInfo

__all__ = [  # the tags' names too: they have always been importable from here
    "BT709_LIMITED",
    "DECODE_FLAGS",
    "MATRIX_NAMES",
    "PRIMARIES_NAMES",
    "PRI_BT470BG",
    "PRI_BT709",
    "PRI_SMPTE170M",
    "RANGE_FULL",
    "RANGE_LIMITED",
    "RANGE_UNSPECIFIED",
    "SPC_BT470BG",
    "SPC_BT709",
    "SPC_BT2020_NCL",
    "SPC_RGB",
    "SPC_SMPTE170M",
    "TRC_BT709",
    "TRC_NAMES",
    "TRC_SMPTE170M",
    "UNSPECIFIED",
    "Colour",
    "ColourTags",
    "colour_dict",
    "colour_notes",
    "colour_rule",
    "from_rgb",
    "guess_colour",
    "is_hd",
    "is_rgb_format",
    "output_colour",
    "to_rgb",
    "video_colour",
]

# The swscale matrix for each AVColorSpace swscale converts (PyAV takes SWS_CS_* values).
_SWS_MATRIX = {
    SPC_BT709: Colorspace.ITU709,
    4: Colorspace.FCC,
    SPC_BT470BG: Colorspace.ITU601,
    SPC_SMPTE170M: Colorspace.ITU601,
    7: Colorspace.SMPTE240M,
    SPC_BT2020_NCL: Colorspace.BT2020,
}
# Decoding to RGB: full chroma interpolation with accurate rounding is within half a
# level of the exact conversion (the default fast path is up to 3 levels off).
DECODE_FLAGS = Interpolation.BILINEAR | Interpolation.ACCURATE_RND | Interpolation.FULL_CHR_H_INT


@dataclass(frozen=True)
class Colour:
    """A complete reading of a video's samples: nothing left unspecified."""

    matrix: int
    primaries: int
    trc: int
    full_range: bool

    @property
    def range(self) -> int:
        return RANGE_FULL if self.full_range else RANGE_LIMITED

    @property
    def sws_matrix(self) -> Colorspace | None:
        """The matrix as swscale takes it; None for RGB or a matrix swscale lacks."""
        return _SWS_MATRIX.get(self.matrix)

    def describe(self) -> str:
        return describe_colour(self.matrix, self.primaries, self.trc, self.range)


BT709_LIMITED = Colour(SPC_BT709, PRI_BT709, TRC_BT709, full_range=False)


def is_hd(size_wh: tuple[int, int]) -> bool:
    """HD and larger, as players decide for untagged video."""
    width, height = size_wh
    return height >= 720 or width >= 1280


def _is_625_line(rate: Fraction | None, height: int) -> bool:
    """PAL-family SD (25 or 50 fps; 576 or 288 lines when the rate is unknown)."""
    if rate:
        return any(abs(float(rate) - fps) < 0.01 for fps in (25.0, 50.0))
    return height in (576, 288)


def guess_colour(size_wh: tuple[int, int], rate: Fraction | None) -> Colour:
    """The reading of an untagged video of this size and rate (limited range)."""
    if is_hd(size_wh):
        return BT709_LIMITED
    if _is_625_line(rate, size_wh[1]):
        return Colour(SPC_BT470BG, PRI_BT470BG, TRC_SMPTE170M, full_range=False)
    return Colour(SPC_SMPTE170M, PRI_SMPTE170M, TRC_SMPTE170M, full_range=False)


def is_rgb_format(pix_fmt: str | None) -> bool:
    if not pix_fmt:
        return False
    try:
        fmt = av.VideoFormat(pix_fmt)
    except (ValueError, av.FFmpegError):
        return False
    return bool(fmt.is_rgb or fmt.has_palette)


def colour_rule(
    tags: ColourTags,
    size_wh: tuple[int, int],
    rate: Fraction | None = None,
    pix_fmt: str | None = None,
) -> Colour:
    """How to read a stream's samples: its tags, each missing one guessed as players do.

    A matrix swscale cannot convert is replaced by the guess (:func:`colour_notes`
    says so); an RGB stream has the matrix ``rgb``.
    """
    guess = guess_colour(size_wh, rate)
    if is_rgb_format(pix_fmt):
        matrix = SPC_RGB
    elif tags.matrix in _SWS_MATRIX:
        matrix = tags.matrix
    else:
        matrix = guess.matrix
    unset = (UNSPECIFIED, 0, 3)  # unspecified, and the reserved values
    return Colour(
        matrix=matrix,
        primaries=guess.primaries if tags.primaries in unset else tags.primaries,
        trc=guess.trc if tags.trc in unset else tags.trc,
        full_range=tags.range == RANGE_FULL or bool(pix_fmt and pix_fmt.startswith("yuvj")),
    )


def video_colour(video: VideoStreamInfo) -> Colour:
    """:func:`colour_rule` for a probed video stream."""
    return colour_rule(video.colour_tags, video.size_wh, video.avg_rate, video.pix_fmt)


def colour_notes(video: VideoStreamInfo) -> list[str]:
    """What of the stream's declared colour cannot be honoured, one line each."""
    tags = video.colour_tags
    read = video_colour(video)
    if read.matrix == SPC_RGB or tags.matrix in (UNSPECIFIED, 0, 3, read.matrix):
        return []
    return [
        f"the {MATRIX_NAMES.get(tags.matrix, f'#{tags.matrix}')} matrix cannot be converted "
        f"to RGB here: frames are read as {MATRIX_NAMES[read.matrix]}"
    ]


def output_colour(source: Colour, size_wh: tuple[int, int], rate: Fraction | None) -> Colour:
    """The colour an output of ``source`` is encoded and tagged with: the source's own,
    with a YUV matrix (the size's guess) when the source is RGB."""
    if source.matrix != SPC_RGB:
        return source
    guess = guess_colour(size_wh, rate)
    return Colour(guess.matrix, source.primaries, source.trc, source.full_range)


def to_rgb(frame: av.VideoFrame, colour: Colour) -> np.ndarray:
    """``frame`` as (H, W, 3) uint8 RGB, its samples read as ``colour`` says."""
    if colour.sws_matrix is None:  # RGB (or palette) samples: no matrix to apply
        return frame.to_ndarray(format="rgb24", interpolation=DECODE_FLAGS)
    range_ = ColorRange.JPEG if colour.full_range else ColorRange.MPEG
    return frame.to_ndarray(
        format="rgb24",
        src_colorspace=colour.sws_matrix,
        src_color_range=range_,
        interpolation=DECODE_FLAGS,
    )


def from_rgb(image: np.ndarray, pix_fmt: str, colour: Colour = BT709_LIMITED) -> av.VideoFrame:
    """``image`` (H, W, 3 uint8 RGB) as a ``pix_fmt`` frame encoded as ``colour`` says.

    Only the matrix and range change samples; primaries and transfer are tags (the
    writer sets them on the stream), so nothing is tone-mapped.
    """
    frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
    if is_rgb_format(pix_fmt):
        return frame.reformat(format=pix_fmt)
    matrix = colour.sws_matrix or Colorspace.ITU709
    out = frame.reformat(
        format=pix_fmt,
        dst_colorspace=matrix,
        dst_color_range=ColorRange.JPEG if colour.full_range else ColorRange.MPEG,
    )
    out.colorspace = colour.matrix
    out.color_primaries = colour.primaries
    out.color_trc = colour.trc
    return out


def colour_dict(video: VideoStreamInfo) -> dict[str, dict[str, str]]:
    """The stream's declared colour and how it is read, for ``vidshard probe --json``."""
    tags, read = video.colour_tags, video_colour(video)
    return {
        "declared": _names(tags.matrix, tags.primaries, tags.trc, tags.range),
        "read_as": _names(read.matrix, read.primaries, read.trc, read.range),
    }


def _names(matrix: int, primaries: int, trc: int, range_: int) -> dict[str, str]:
    return {
        "matrix": MATRIX_NAMES.get(matrix, f"#{matrix}"),
        "primaries": PRIMARIES_NAMES.get(primaries, f"#{primaries}"),
        "transfer": TRC_NAMES.get(trc, f"#{trc}"),
        "range": range_name(range_),
    }
