"""A stand-in detector for the streams benchmark: a batch costs a fixed time plus a time
per frame, waited without using the CPU, as an accelerator's call would be.

``--model benchmarks/sleep_stream_detector.py:SleepBatchDetector``. A call on ``n``
frames sleeps ``$VIDSHARD_BENCH_BATCH_MS + n * $VIDSHARD_BENCH_FRAME_MS`` milliseconds
(defaults 20 and 2), read in each worker, and finds nothing, so only what vidshard does
around the detector is measured beside it.

With ``$VIDSHARD_BENCH_CALLS`` set to a file, every call appends one line to it,
``<epoch seconds> <frames>``, so the benchmark counts detector calls per frame.
"""

from __future__ import annotations

import os
import time

import numpy as np

from vidshard.detection import Detections

BATCH_ENV = "VIDSHARD_BENCH_BATCH_MS"
FRAME_ENV = "VIDSHARD_BENCH_FRAME_MS"
CALLS_ENV = "VIDSHARD_BENCH_CALLS"


class SleepBatchDetector:
    name = "sleep-batch"

    def __init__(self) -> None:
        self.batch_s = float(os.environ.get(BATCH_ENV, "20")) / 1000.0
        self.frame_s = float(os.environ.get(FRAME_ENV, "2")) / 1000.0
        path = os.environ.get(CALLS_ENV)
        self._calls_fd = (
            os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644) if path else None
        )

    def load(self, device: str) -> None:
        self.device = device

    def detect(self, frames: np.ndarray) -> list[Detections]:
        time.sleep(self.batch_s + self.frame_s * len(frames))
        if self._calls_fd is not None:  # one write of one line: O_APPEND keeps lines whole
            os.write(self._calls_fd, f"{time.time():.4f} {len(frames)}\n".encode())
        return [Detections.empty() for _ in frames]
