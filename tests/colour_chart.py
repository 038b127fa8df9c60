"""A colour chart video, and reading a video's colours the way a player does.

Everything here is independent of vidshard's own colour code: the chart's YUV samples
are computed with numpy from the standard matrix coefficients (ITU-R BT.601, BT.709,
BT.2020) and written to the encoder plane by plane, and :func:`player_patches` reads
a file's raw planes back and converts them with numpy, using the file's tags or, where
a tag is missing, the guess players make (HD: BT.709, SD: BT.601; limited range).
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

# FFmpeg's numbers (AVCOL_SPC_*, AVCOL_PRI_*, AVCOL_TRC_*, AVCOL_RANGE_*).
UNSPECIFIED = 2
SPC_BT709, SPC_BT470BG, SPC_SMPTE170M, SPC_BT2020_NCL = 1, 5, 6, 9
PRI_BT709, PRI_BT470BG, PRI_SMPTE170M, PRI_BT2020 = 1, 5, 6, 9
TRC_BT709, TRC_SMPTE170M, TRC_PQ, TRC_HLG = 1, 6, 16, 18
RANGE_UNSPECIFIED, RANGE_LIMITED, RANGE_FULL = 0, 1, 2

# (Kr, Kb) of each matrix: Y = Kr R + (1 - Kr - Kb) G + Kb B.
KR_KB = {
    SPC_BT709: (0.2126, 0.0722),
    SPC_BT470BG: (0.299, 0.114),
    SPC_SMPTE170M: (0.299, 0.114),
    SPC_BT2020_NCL: (0.2627, 0.0593),
}

# Saturated primaries and secondaries, greys, and two mid colours.
CHART_RGB: tuple[tuple[int, int, int], ...] = (
    (255, 0, 0),
    (0, 255, 0),
    (0, 0, 255),
    (0, 255, 255),
    (255, 0, 255),
    (255, 255, 0),
    (255, 255, 255),
    (0, 0, 0),
    (64, 64, 64),
    (128, 128, 128),
    (192, 192, 192),
    (246, 38, 16),  # the saturated red
    (200, 120, 80),  # a skin tone
    (40, 90, 160),  # a sky blue
    (16, 16, 16),
    (235, 235, 235),
)
CHART_COLUMNS = 4


@dataclass(frozen=True)
class ChartSpec:
    size_wh: tuple[int, int]
    pix_fmt: str = "yuv420p"
    matrix: int = UNSPECIFIED  # tags written into the file
    primaries: int = UNSPECIFIED
    trc: int = UNSPECIFIED
    color_range: int = RANGE_UNSPECIFIED
    encode_matrix: int = SPC_BT709  # the matrix the chart's samples are computed with
    full_range: bool = False  # the samples' range
    rate: Fraction = Fraction(25)
    frames: int = 3
    codec: str = "libx264"


def patch_boxes(size_wh: tuple[int, int]) -> list[tuple[int, int, int, int]]:
    """(left, top, right, bottom) of every chart patch, in ``CHART_RGB`` order."""
    width, height = size_wh
    rows = -(-len(CHART_RGB) // CHART_COLUMNS)
    boxes = []
    for n in range(len(CHART_RGB)):
        row, col = divmod(n, CHART_COLUMNS)
        boxes.append(
            (
                col * width // CHART_COLUMNS,
                row * height // rows,
                (col + 1) * width // CHART_COLUMNS,
                (row + 1) * height // rows,
            )
        )
    return boxes


def chart_rgb(size_wh: tuple[int, int]) -> np.ndarray:
    """The chart as (H, W, 3) uint8 RGB."""
    width, height = size_wh
    image = np.zeros((height, width, 3), np.uint8)
    for (left, top, right, bottom), rgb in zip(patch_boxes(size_wh), CHART_RGB, strict=True):
        image[top:bottom, left:right] = rgb
    return image


def _scale(bits: int, full_range: bool) -> tuple[float, float, float, float]:
    """(luma offset, luma span, chroma centre, chroma span) at ``bits``."""
    one = float(1 << (bits - 8))
    if full_range:
        peak = float((1 << bits) - 1)
        return 0.0, peak, 128.0 * one, peak
    return 16.0 * one, 219.0 * one, 128.0 * one, 224.0 * one


def rgb_to_yuv(rgb: np.ndarray, matrix: int, full_range: bool, bits: int) -> np.ndarray:
    """(..., 3) RGB 0-255 → (..., 3) integer Y, Cb, Cr samples."""
    kr, kb = KR_KB[matrix]
    x = rgb.astype(np.float64) / 255.0
    y = kr * x[..., 0] + (1 - kr - kb) * x[..., 1] + kb * x[..., 2]
    cb = (x[..., 2] - y) / (2 * (1 - kb))
    cr = (x[..., 0] - y) / (2 * (1 - kr))
    offset, span, centre, chroma_span = _scale(bits, full_range)
    out = np.stack([offset + span * y, centre + chroma_span * cb, centre + chroma_span * cr], -1)
    return np.clip(np.rint(out), 0, (1 << bits) - 1).astype(np.int64)


def yuv_to_rgb(yuv: np.ndarray, matrix: int, full_range: bool, bits: int) -> np.ndarray:
    """(..., 3) Y, Cb, Cr samples → (..., 3) RGB as floats 0-255 (unclipped)."""
    kr, kb = KR_KB[matrix]
    offset, span, centre, chroma_span = _scale(bits, full_range)
    y = (yuv[..., 0] - offset) / span
    cb = (yuv[..., 1] - centre) / chroma_span
    cr = (yuv[..., 2] - centre) / chroma_span
    r = y + 2 * (1 - kr) * cr
    b = y + 2 * (1 - kb) * cb
    g = (y - kr * r - kb * b) / (1 - kr - kb)
    return np.stack([r, g, b], -1) * 255.0


def _bits(pix_fmt: str) -> int:
    return max(c.bits for c in av.VideoFormat(pix_fmt).components)


def _subsampling(pix_fmt: str) -> tuple[int, int]:
    fmt = av.VideoFormat(pix_fmt)
    return 1024 // fmt.chroma_width(1024), 1024 // fmt.chroma_height(1024)


def _chart_frame(spec: ChartSpec) -> av.VideoFrame:
    """The chart as a frame of ``spec.pix_fmt``, samples computed here (no swscale)."""
    width, height = spec.size_wh
    bits = _bits(spec.pix_fmt)
    yuv = rgb_to_yuv(chart_rgb(spec.size_wh), spec.encode_matrix, spec.full_range, bits)
    sub_w, sub_h = _subsampling(spec.pix_fmt)
    dtype = np.uint16 if bits > 8 else np.uint8
    planes = [yuv[..., 0]] + [yuv[::sub_h, ::sub_w, c] for c in (1, 2)]  # top-left siting
    frame = av.VideoFrame(width, height, spec.pix_fmt)
    for plane, samples in zip(frame.planes, planes, strict=True):
        data = np.ascontiguousarray(samples.astype(dtype))
        row_bytes = data.shape[1] * data.itemsize
        buffer = np.zeros((data.shape[0], plane.line_size), np.uint8)
        buffer[:, :row_bytes] = data.view(np.uint8).reshape(data.shape[0], row_bytes)
        plane.update(buffer.tobytes())
    return frame


def write_chart(path: Path, spec: ChartSpec) -> Path:
    """A lossless clip of the chart, tagged as ``spec`` says (untagged where unspecified)."""
    with av.open(str(path), mode="w") as out:
        stream = out.add_stream(spec.codec, rate=spec.rate)
        ctx = stream.codec_context
        ctx.width, ctx.height = spec.size_wh
        ctx.pix_fmt = spec.pix_fmt
        ctx.colorspace = spec.matrix
        ctx.color_primaries = spec.primaries
        ctx.color_trc = spec.trc
        ctx.color_range = spec.color_range
        ctx.time_base = 1 / spec.rate
        ctx.options = {"qp": "0", "preset": "ultrafast"}
        base = _chart_frame(spec)
        for i in range(spec.frames):
            frame = base.reformat()  # a fresh frame per pts
            frame.pts = i
            frame.time_base = ctx.time_base
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


@dataclass(frozen=True)
class PlayerView:
    """How a player reads a file: the interpretation and each patch's RGB, per frame."""

    matrix: int
    full_range: bool
    pix_fmt: str
    tags: tuple[int, int, int, int]  # (matrix, primaries, trc, range) as stored
    patches: list[np.ndarray]  # per frame: (patches, 3) float RGB at the patch centres


def _player_matrix(frame: av.VideoFrame) -> int:
    if frame.colorspace in KR_KB:
        return int(frame.colorspace)
    hd = frame.height >= 720 or frame.width >= 1280
    return SPC_BT709 if hd else SPC_SMPTE170M


def frame_planes(frame: av.VideoFrame) -> list[np.ndarray]:
    bits = _bits(frame.format.name)
    dtype = np.dtype(np.uint16 if bits > 8 else np.uint8)
    out = []
    for plane in frame.planes:
        rows = np.frombuffer(bytes(plane), np.uint8).reshape(plane.height, plane.line_size)
        samples = rows[:, : plane.width * dtype.itemsize].copy().view(dtype)
        out.append(samples.astype(np.int64))
    return out


def player_patches(path: Path, size_wh: tuple[int, int] | None = None) -> PlayerView:
    """Every frame's patch-centre colours, decoded with numpy the way a player reads it.

    ``size_wh`` is the chart's size in the file (default: the frame size); each patch is
    sampled over its middle third, away from edges and chroma bleeding.
    """
    views: list[np.ndarray] = []
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        for frame in container.decode(stream):
            name = frame.format.name
            matrix = _player_matrix(frame)
            full = frame.color_range == RANGE_FULL or name.startswith("yuvj")
            bits = _bits(name)
            y, cb, cr = frame_planes(frame)[:3]
            sub_w, sub_h = frame.width // cb.shape[1], frame.height // cb.shape[0]
            boxes = patch_boxes(size_wh or (frame.width, frame.height))
            values = []
            for left, top, right, bottom in boxes:
                w3, h3 = (right - left) // 3, (bottom - top) // 3
                ys = slice(top + h3, bottom - h3)
                xs = slice(left + w3, right - w3)
                cs = (
                    slice(ys.start // sub_h, ys.stop // sub_h),
                    slice(xs.start // sub_w, xs.stop // sub_w),
                )
                yuv = np.array([y[ys, xs].mean(), cb[cs].mean(), cr[cs].mean()])
                values.append(yuv_to_rgb(yuv, matrix, full, bits))
            views.append(np.clip(np.array(values), 0, 255))
            tags = (
                int(frame.colorspace),
                int(frame.color_primaries),
                int(frame.color_trc),
                int(frame.color_range),
            )
            pix_fmt = name
    return PlayerView(matrix, full, pix_fmt, tags, views)
