"""Models that need no framework: classical resamplers and identity.

Kept apart from the torch-based upscalers so a worker running them never imports torch
(about 2 s and 300 MiB per worker).
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from vidshard.errors import ModelError
from vidshard.models.base import PRECISIONS, ModelSpec

_RESAMPLE_FILTERS = {
    "lanczos": Image.Resampling.LANCZOS,
    "bicubic": Image.Resampling.BICUBIC,
}


def check_batch(batch: object, name: str) -> np.ndarray:
    """``batch`` if it is (N, H, W, 3) uint8, else a ModelError saying what arrived."""
    if (
        not isinstance(batch, np.ndarray)
        or batch.dtype != np.uint8
        or batch.ndim != 4
        or batch.shape[-1] != 3
    ):
        got = (
            f"{batch.shape} {batch.dtype}"
            if isinstance(batch, np.ndarray)
            else type(batch).__name__
        )
        raise ModelError(f"model {name}: expected an (N, H, W, 3) uint8 batch, got {got}")
    return batch


class ResampleUpscaler:
    """Classical resampling with Pillow, frame by frame: ``lanczos`` or ``bicubic``,
    any integer scale >= 1. No weights; ``load`` does nothing."""

    def __init__(self, method: str = "lanczos", scale: int = 2) -> None:
        if method not in _RESAMPLE_FILTERS:
            raise ModelError(f"expected resampling method lanczos or bicubic, got {method!r}")
        if scale < 1:
            raise ModelError(f"model {method}: expected scale >= 1, got {scale}")
        self.spec = ModelSpec(name=method, scale=scale, precisions=PRECISIONS)
        self._filter = _RESAMPLE_FILTERS[method]

    def load(self, device: str) -> None:
        """Nothing to load: resampling runs on the CPU whatever the device."""

    def run(self, batch: np.ndarray) -> np.ndarray:
        check_batch(batch, self.spec.name)
        n, h, w, _ = batch.shape
        s = self.spec.scale
        out = np.empty((n, h * s, w * s, 3), dtype=np.uint8)
        if s == 1:
            out[...] = batch
            return out
        for i in range(n):
            image = Image.fromarray(batch[i])
            out[i] = np.asarray(image.resize((w * s, h * s), self._filter))
        return out


class IdentityModel:
    """Returns each batch unchanged (the same array): measures the engine's own overhead."""

    def __init__(self) -> None:
        self.spec = ModelSpec(name="identity", scale=1, precisions=PRECISIONS)

    def load(self, device: str) -> None:
        """Nothing to load."""

    def run(self, batch: np.ndarray) -> np.ndarray:
        return batch
