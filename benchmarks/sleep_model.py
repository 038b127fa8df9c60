"""A stand-in for accelerator time: waits a fixed time per frame without using the CPU.

``--model benchmarks/sleep_model.py:SleepModel`` (optionally ``--scale N``). ``run``
sleeps ``per_frame_s * len(batch)`` and returns the batch unchanged (scale 1) or a
nearest-neighbour upscale (``numpy.repeat``, cheap) for a larger scale.

The per-frame time is read in ``__init__`` from ``$VIDSHARD_BENCH_SLEEP_MS``
(milliseconds, default 40): vidshard passes the constructor nothing but ``scale``, and
the worker processes inherit the environment of the process that started the job.
"""

from __future__ import annotations

import os
import time

import numpy as np

from vidshard.models import ModelSpec

SLEEP_ENV = "VIDSHARD_BENCH_SLEEP_MS"
DEFAULT_SLEEP_MS = 40.0


class SleepModel:
    def __init__(self, scale: int = 1) -> None:
        self.spec = ModelSpec(name="sleep", scale=scale)
        self.per_frame_s = float(os.environ.get(SLEEP_ENV, DEFAULT_SLEEP_MS)) / 1000.0
        self.device: str | None = None

    def load(self, device: str) -> None:
        self.device = device  # nothing to load

    def run(self, batch: np.ndarray) -> np.ndarray:
        if self.per_frame_s > 0:
            time.sleep(self.per_frame_s * len(batch))
        s = self.spec.scale
        if s == 1:
            return batch
        return batch.repeat(s, axis=1).repeat(s, axis=2)


class NearestModel(SleepModel):
    """The same without the wait: a nearest-neighbour upscale (default x2), CPU-cheap.

    ``memory.py`` uses it to keep 2x-sized frames flowing through the pipeline at a
    fraction of ``lanczos``'s CPU cost.
    """

    def __init__(self, scale: int = 2) -> None:
        super().__init__(scale=scale)
        self.spec = ModelSpec(name="nearest", scale=scale)
        self.per_frame_s = 0.0
