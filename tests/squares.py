"""Synthetic videos of three coloured squares moving in straight lines on black, and a
fake detector that finds them: every detection result is known in advance."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np

SIZE = (160, 96)
COLOURS = {"red": 0, "green": 1, "blue": 2}
SQUARE = 14

FAKE_DETECTOR = '''
import numpy as np
from vidshard.detection import Detections

NAMES = ("red", "green", "blue")


class Squares:
    """Finds the red, green and blue squares: a box per colour present."""

    name = "squares"

    def load(self, device):
        self.device = device

    def detect(self, frames):
        out = []
        for image in frames:
            boxes, names, ids = [], [], []
            for c, name in enumerate(NAMES):
                others = [k for k in range(3) if k != c]
                mask = (image[..., c] > 150) & (image[..., others].max(axis=-1) < 100)
                if mask.sum() < 20:
                    continue
                ys, xs = np.nonzero(mask)
                boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
                names.append(name)
                ids.append(c)
            out.append(
                Detections(
                    np.array(boxes, np.float32).reshape(-1, 4),
                    np.full(len(boxes), 0.9, np.float32),
                    np.array(ids, np.int32),
                    tuple(names),
                )
            )
        return out


class Fixed:
    """One box in the middle of every frame."""

    name = "fixed"

    def load(self, device):
        pass

    def detect(self, frames):
        h, w = frames.shape[1:3]
        box = [[w / 4, h / 4, 3 * w / 4, 3 * h / 4]]
        return [
            Detections(np.array(box, np.float32), np.ones(1, np.float32),
                       np.zeros(1, np.int32), ("thing",))
            for _ in frames
        ]
'''


def square_positions(index: int, frames: int) -> dict[str, tuple[int, int]]:
    """Top-left corners: three squares crossing the frame on different straight paths."""
    w, h = SIZE
    t = index / max(1, frames - 1)
    return {
        "red": (int(4 + t * (w - SQUARE - 8)), 8),
        "green": (int(w - SQUARE - 4 - t * (w - SQUARE - 8)), 40),
        "blue": (int(4 + t * (w - SQUARE - 8)), int(h - SQUARE - 8 - t * 50)),
    }


def write_squares(path: Path, frames: int, rate: int = 25, gop: int = 12) -> Path:
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=rate)
        stream.width, stream.height = SIZE
        stream.pix_fmt = "yuv444p"
        stream.codec_context.gop_size = gop
        stream.options = {"crf": "0", "preset": "ultrafast"}
        stream.time_base = Fraction(1, rate)
        for i in range(frames):
            image = np.zeros((SIZE[1], SIZE[0], 3), np.uint8)
            for name, (x, y) in square_positions(i, frames).items():
                image[y : y + SQUARE, x : x + SQUARE, COLOURS[name]] = 255
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts = i
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path
