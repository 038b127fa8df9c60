"""Which pixel format an output is encoded in: the source's bit depth and chroma.

The writer keeps the source's layout (yuv420p10le stays yuv420p10le, yuv422p stays
yuv422p) when the encoder has it; otherwise it takes the encoder's nearest YUV format,
preferring one that loses nothing (more chroma or more bits) over one that loses
chroma or bits, and says in one line what was reduced. An RGB source counts as 4:4:4,
a grey one as 4:2:0 (a model may add colour), each at its own depth.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import av

from vidshard.errors import ConfigError

from .colour import is_rgb_format
from .probe import bit_depth

logger = logging.getLogger(__name__)

CHROMA_NAMES = {(1, 1): "4:4:4", (2, 1): "4:2:2", (2, 2): "4:2:0", (1, 2): "4:4:0"}
# Asked for when an encoder does not list its formats.
_GENERIC_YUV = (
    "yuv420p",
    "yuv422p",
    "yuv444p",
    "yuv420p10le",
    "yuv422p10le",
    "yuv444p10le",
)


def subsampling(pix_fmt: str) -> tuple[int, int]:
    """How many luma pixels share one chroma sample, horizontally and vertically."""
    fmt = av.VideoFormat(pix_fmt)
    probe_px = 1 << 10
    return probe_px // fmt.chroma_width(probe_px), probe_px // fmt.chroma_height(probe_px)


@dataclass(frozen=True)
class Layout:
    """What a pixel format keeps: chroma subsampling and bits per sample."""

    sub_wh: tuple[int, int]
    bits: int

    def describe(self) -> str:
        chroma = CHROMA_NAMES.get(self.sub_wh, "{}x{} chroma".format(*self.sub_wh))
        return f"{self.bits}-bit {chroma}"

    def fits(self, size_wh: tuple[int, int]) -> bool:
        return size_wh[0] % self.sub_wh[0] == 0 and size_wh[1] % self.sub_wh[1] == 0


def yuv_layout(pix_fmt: str) -> Layout | None:
    """The layout of a YUV format (two chroma planes); None for RGB, grey or unknown."""
    try:
        fmt = av.VideoFormat(pix_fmt)
    except (ValueError, av.FFmpegError):
        return None
    colours = [c for c in fmt.components if not c.is_alpha]
    if fmt.is_rgb or fmt.has_palette or len(colours) != 3 or pix_fmt.startswith("xyz"):
        return None  # RGB, palette, grey (one component), CIE XYZ
    return Layout(subsampling(pix_fmt), max(c.bits for c in colours))


def source_layout(pix_fmt: str | None) -> Layout:
    """What an output of a ``pix_fmt`` source should keep (8-bit 4:2:0 when unknown)."""
    layout = yuv_layout(pix_fmt) if pix_fmt else None
    if layout is not None:
        return layout
    return Layout((1, 1) if is_rgb_format(pix_fmt) else (2, 2), bit_depth(pix_fmt))


def _rank(candidate: Layout, want: Layout) -> tuple[bool, int, int, int]:
    """Sort key: first what keeps the source's chroma and depth, then the closest."""
    (cw, ch), (sw, sh) = candidate.sub_wh, want.sub_wh
    return (
        cw > sw or ch > sh,  # loses chroma resolution
        max(0, want.bits - candidate.bits),  # loses bits
        abs(cw * ch - sw * sh),  # more chroma than needed
        max(0, candidate.bits - want.bits),  # more bits than needed
    )


def ranked_formats(supported: tuple[str, ...], want: Layout) -> list[tuple[str, Layout]]:
    """The encoder's YUV formats, best for ``want`` first: planar before semi-planar, in
    the encoder's order; full-range ``yuvj*`` (range is a tag), alpha and big-endian
    formats left out."""
    found = []
    for position, name in enumerate(supported):
        layout = yuv_layout(name)
        if layout is None or name.startswith(("yuvj", "yuva")) or name.endswith("be"):
            continue
        found.append((_rank(layout, want), not name.startswith("yuv"), position, name, layout))
    found.sort()
    return [(name, layout) for *_, name, layout in found]


def choose_format(
    codec: str, supported: tuple[str, ...], size_wh: tuple[int, int], source_pix_fmt: str | None
) -> tuple[str, str | None]:
    """(the format ``codec`` encodes a ``size_wh`` output of the source in, a note of what
    it cannot keep or None). Odd sizes take a format without chroma subsampling."""
    want = source_layout(source_pix_fmt)
    ranked = ranked_formats(supported or _GENERIC_YUV, want)
    if not ranked:  # an RGB-only encoder (libx264rgb, png): its first format
        first = supported[0]
        ranked = [(first, Layout(subsampling(first), bit_depth(first)))]
    name, layout = ranked[0]
    if not layout.fits(size_wh):
        full = [(f, lay) for f, lay in ranked if lay.sub_wh == (1, 1)]
        if not full:
            raise ConfigError(
                f"{codec} has no pixel format without chroma subsampling, "
                f"needed for the odd size {size_wh[0]}x{size_wh[1]}"
            )
        logger.info("%dx%d is odd: encoding %s instead of %s", *size_wh, full[0][0], name)
        name, layout = full[0]
    return name, _reduction_note(codec, source_pix_fmt, want, layout, name)


def _reduction_note(
    codec: str, source_pix_fmt: str | None, want: Layout, got: Layout, name: str
) -> str | None:
    (gw, gh), (sw, sh) = got.sub_wh, want.sub_wh
    if source_pix_fmt is None or (got.bits >= want.bits and gw <= sw and gh <= sh):
        return None
    return (
        f"{codec} cannot encode {want.describe()} ({source_pix_fmt}): "
        f"writing {name} ({got.describe()})"
    )
