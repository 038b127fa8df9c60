"""Small clips for the stream tests: what ``tests/rtsp_server.py`` loops and streams read.

The three squares of :mod:`squares` (same colours and the same test for them, so its fake
``Squares`` detector finds them), at a size suited to streams (320x240 by default), in
yuv420p with a keyframe every few frames so a reader starts fast. The red square crosses
the frame from left to right once per clip: its position says where in the clip a frame
is, so a test sees a loop restart as the red square jumping back to the left.

    from stream_clips import find_squares, write_squares_stream
    path = write_squares_stream(tmp_path / "squares.mp4", frames=50)
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from numpy.typing import NDArray

from squares import COLOURS, SQUARE

STREAM_SIZE_WH = (320, 240)
MIN_PIXELS = 20  # the fake detector's threshold: fewer matching pixels, no square


def square_side(size_wh: tuple[int, int]) -> int:
    """The side of each square: even (aligned with the 4:2:0 chroma), at least ``SQUARE``."""
    return max(SQUARE, min(size_wh) // 10) // 2 * 2


def stream_square_positions(
    index: int, frames: int, size_wh: tuple[int, int] = STREAM_SIZE_WH
) -> dict[str, tuple[int, int]]:
    """Top-left corners (even) of the squares in frame ``index`` of a ``frames``-frame clip:
    red left to right along the top, green right to left in the middle, blue diagonally up
    in the bottom half. They never overlap in a picture of 160x120 or more."""
    width, height = size_wh
    side = square_side(size_wh)
    t = (index % frames) / max(1, frames - 1)
    span_x = width - side - 8
    blue_bottom = height - side - 4
    span_y = blue_bottom - (height // 2 + side)
    return {
        name: (x // 2 * 2, y // 2 * 2)
        for name, (x, y) in {
            "red": (4 + round(t * span_x), 4),
            "green": (4 + round((1 - t) * span_x), (height - side) // 2),
            "blue": (4 + round(t * span_x), blue_bottom - round(t * span_y)),
        }.items()
    }


def squares_image(
    index: int, frames: int, size_wh: tuple[int, int] = STREAM_SIZE_WH
) -> NDArray[np.uint8]:
    """Frame ``index`` as an (H, W, 3) uint8 RGB picture: the squares on black."""
    width, height = size_wh
    side = square_side(size_wh)
    image = np.zeros((height, width, 3), np.uint8)
    for name, (x, y) in stream_square_positions(index, frames, size_wh).items():
        image[y : y + side, x : x + side, COLOURS[name]] = 255
    return image


def write_squares_stream(
    path: Path,
    *,
    frames: int = 50,
    rate: int = 25,
    gop: int = 5,
    size_wh: tuple[int, int] = STREAM_SIZE_WH,
) -> Path:
    """Write ``frames`` frames of moving squares at ``rate`` fps, a keyframe every ``gop``
    frames, H.264 (constrained baseline, yuv420p; the container follows the extension)."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=rate)
        stream.width, stream.height = size_wh
        stream.pix_fmt = "yuv420p"
        stream.time_base = Fraction(1, rate)
        stream.options = {
            "preset": "ultrafast",
            "crf": "12",
            "x264-params": f"keyint={gop}:min-keyint={gop}:scenecut=0:bframes=0:cabac=0",
        }
        for index in range(frames):
            frame = av.VideoFrame.from_ndarray(squares_image(index, frames, size_wh), "rgb24")
            frame.pts = index
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


def find_squares(image: NDArray[np.uint8]) -> dict[str, tuple[float, float]]:
    """The centre (x, y) of each square found in an RGB picture, by the fake detector's test:
    its channel above 150, the other two below 100, on at least ``MIN_PIXELS`` pixels."""
    found = {}
    for name, channel in COLOURS.items():
        others = [k for k in range(3) if k != channel]
        mask = (image[..., channel] > 150) & (image[..., others].max(axis=-1) < 100)
        if mask.sum() >= MIN_PIXELS:
            ys, xs = np.nonzero(mask)
            found[name] = ((xs.min() + xs.max() + 1) / 2, (ys.min() + ys.max() + 1) / 2)
    return found
