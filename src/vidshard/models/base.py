"""What a model author writes: a spec plus ``load`` and ``run``. Nothing else.

A model never sees a process, a queue or a file path. The engine builds it inside the
worker after the worker's device visibility is set, calls ``load`` once, then ``run``
with batches of frames.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

Precision = str  # "fp32" | "fp16" | "bf16"
PRECISIONS: tuple[str, ...] = ("fp32", "fp16", "bf16")


@dataclass(frozen=True)
class ModelSpec:
    name: str
    task: str = "upscale"
    scale: int = 1  # output size = input size x scale
    temporal_window: int = 0  # context frames the model wants on each side
    batchable: bool = True
    precisions: tuple[str, ...] = ("fp32",)
    deterministic: bool = True
    arch: str = ""  # detected architecture ("Compact", "HAT", ...); "" when not a network file
    tileable: bool = True  # False: the model tiles internally, so "auto" never tiles it


@runtime_checkable
class Model(Protocol):
    """An upscale model: ``run`` maps (N, H, W, 3) uint8 RGB to (N, H*s, W*s, 3) uint8 RGB.

    A user's own class, named ``package.module:Class`` or ``path/to/file.py:Class``, is
    built with no arguments, plus ``scale=`` when it has a ``scale`` parameter and a scale
    was asked for, plus ``options=`` (:class:`~vidshard.models.ModelOptions`) when it has an
    ``options`` parameter. The constructor must be cheap and touch no device: it also runs
    in the coordinator to read ``spec``. Weights load in ``load(device)``, in the worker.
    """

    spec: ModelSpec

    def load(self, device: str) -> None:
        """Load weights onto ``device`` ("cpu", "cuda:0", "npu:0")."""

    def run(self, batch: np.ndarray) -> np.ndarray:
        """Process one batch of frames."""
