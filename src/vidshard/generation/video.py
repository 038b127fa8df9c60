"""The generated video as an mp4, written atomically: encoded into a hidden temporary file
next to the output, then renamed over it, so a reader never sees half a video and a failed
encode leaves nothing behind. H.264 (libx264), yuv420p, one frame per ``1/fps`` s, through
the project's :class:`~vidshard.media.writer.SegmentWriter`."""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path

import numpy as np

from vidshard.errors import MediaError, OutputError, write_failure
from vidshard.media.writer import EncodeSettings, SegmentWriter

# One encoder thread: x264's threaded encode gave identical frames other bytes now and
# then (measured here: 2 of 8 encodes); on one thread it is rarer but still seen on tiny
# (32x32) test videos, a few levels apart. It costs a few seconds for 81 frames at 720p.
SETTINGS = EncodeSettings(codec="libx264", crf=18, preset="medium", pix_fmt="yuv420p", threads=1)


def to_uint8(frames: np.ndarray) -> np.ndarray:
    """(F, H, W, 3) floats in [0, 1] as uint8 RGB (rounded to nearest)."""
    return np.clip(np.rint(frames * 255.0), 0, 255).astype(np.uint8)


def write_video(path: Path, frames: np.ndarray, fps: int, *, tag: str = "") -> int:
    """Encode ``frames`` ((F, H, W, 3) uint8 RGB) at ``fps`` into ``path``; the number of
    frames written (always F)."""
    path = Path(path)
    count, height, width = (int(n) for n in frames.shape[:3])
    temporary = path.with_name(f".{path.stem}.{tag or os.getpid()}.partial.mp4")
    writer = SegmentWriter(temporary, SETTINGS, (width, height), Fraction(1, fps), Fraction(fps))
    with writer:
        for index in range(count):
            writer.write(np.ascontiguousarray(frames[index]), index)
    if writer.frames_written != count:
        temporary.unlink(missing_ok=True)
        raise MediaError(
            f"{path.name}: expected {count} frames written, got {writer.frames_written}"
        )
    try:
        os.replace(temporary, path)
    except OSError as exc:
        temporary.unlink(missing_ok=True)
        raise write_failure(exc, str(path)) or OutputError(f"cannot write {path}: {exc}") from exc
    return count
