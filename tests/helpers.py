"""Comparisons the integration tests share: frames, timestamps, packets."""

from __future__ import annotations

import hashlib
import importlib.util
from fractions import Fraction
from pathlib import Path

import av
import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def need_package(name: str) -> None:
    """Skip the test when ``name`` is not installed, without importing it: importing
    ultralytics here, before vidshard sets its offline environment, would fix its
    settings directory in the user's home for the whole test process."""
    if importlib.util.find_spec(name) is None:
        pytest.skip(f"{name} is not installed")


def frame_times(path: Path) -> list[Fraction]:
    """Every video frame's presentation time (seconds, exact), in display order."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        tb = stream.time_base
        times = [
            packet.pts * tb
            for packet in container.demux(stream)
            if packet.pts is not None and packet.size
        ]
    return sorted(times)


def frame_hashes(path: Path) -> list[str]:
    """A digest of every decoded frame's pixels (its native pixel format)."""
    digests = []
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            digest = hashlib.sha256()
            for plane in frame.planes:
                digest.update(bytes(plane))
            digests.append(digest.hexdigest())
    return digests


def audio_packets(path: Path) -> list[tuple[int, int, bytes]]:
    """(stream order, pts in 1/1e6 s, payload) of every audio packet."""
    out = []
    with av.open(str(path)) as container:
        streams = list(container.streams.audio)
        if not streams:
            return []
        for packet in container.demux(*streams):
            if packet.size == 0 or packet.pts is None:
                continue
            micros = round(packet.pts * packet.time_base * 1_000_000)
            out.append((streams.index(packet.stream), micros, bytes(packet)))
    return sorted(out, key=lambda p: (p[0], p[1]))


def slow_model_source(class_name: str = "Slow", per_frame_s: float = 0.05) -> str:
    """A model file's text: nearest x2, ``per_frame_s`` a frame, deterministic, slow
    enough to watch, interrupt or cancel (workers load it as ``file.py:ClassName``)."""
    return f'''
import time
from vidshard.models import ModelSpec


class {class_name}:
    def __init__(self):
        self.spec = ModelSpec(name="{class_name.lower()}", scale=2)

    def load(self, device):
        pass

    def run(self, batch):
        time.sleep({per_frame_s} * len(batch))
        return batch.repeat(2, axis=1).repeat(2, axis=2)
'''


def same_video(a: object, b: object) -> bool:
    """Two decoded videos ((F, H, W, 3) uint8) from the same generated frames: equal but
    for the encoder. The frames themselves are compared exactly in
    tests/unit/generation; x264 now and then encodes identical tiny frames a few levels
    apart (up to 8 of 255 seen on 32x32), where another seed differs by tens on average."""
    import numpy as np

    first, second = np.asarray(a, dtype=int), np.asarray(b, dtype=int)
    if first.shape != second.shape:
        return False
    difference = np.abs(first - second)
    return bool(difference.max() <= 16 and difference.mean() < 0.5)
