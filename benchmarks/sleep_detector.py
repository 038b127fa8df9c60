"""A stand-in detector for benchmarks: waits a fixed time per frame without using the CPU.

``DetectRecipe(detector="class", weights="benchmarks/sleep_detector.py:SleepDetector")``.
The time per frame comes from ``$VIDSHARD_BENCH_SLEEP_MS`` (default 20), read in each
worker; it finds nothing, so only scheduling and decoding are measured beside it.
"""

from __future__ import annotations

import os
import time

import numpy as np

from vidshard.detection import Detections

SLEEP_ENV = "VIDSHARD_BENCH_SLEEP_MS"


class SleepDetector:
    name = "sleep"

    def __init__(self) -> None:
        self.per_frame_s = float(os.environ.get(SLEEP_ENV, "20")) / 1000.0

    def load(self, device: str) -> None:
        self.device = device

    def detect(self, frames: np.ndarray) -> list[Detections]:
        time.sleep(self.per_frame_s * len(frames))
        return [Detections.empty() for _ in frames]
