"""Upscale models: spandrel weights files, classical resamplers and the identity.

All take (N, H, W, 3) uint8 RGB and return (N, H*s, W*s, 3) uint8 RGB, deterministically.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vidshard.errors import ModelError
from vidshard.models.base import ModelSpec
from vidshard.models.classical import IdentityModel, ResampleUpscaler, check_batch
from vidshard.models.options import DEFAULT_OPTIONS, ModelOptions
from vidshard.models.tiling import TilePlan, TileRunner, free_memory_bytes, plan_tiles
from vidshard.models.weights import load_descriptor

logger = logging.getLogger(__name__)

_DTYPES: dict[str, torch.dtype] = {
    "fp32": torch.float32,
    "fp16": torch.float16,
    "bf16": torch.bfloat16,
}


class SpandrelUpscaler:
    """A weights file (ESRGAN, Real-ESRGAN Compact, SwinIR, HAT, SPAN, ...) run by spandrel.

    ``load(device)`` reads the file, moves the network to ``device`` in the precision of
    ``options`` and puts it in eval mode; fp16 needs an accelerator. ``run`` tiles frames
    according to ``options.tile`` (see :mod:`vidshard.models.tiling`) and falls back to
    smaller batches and tiles on out-of-memory.
    """

    def __init__(
        self, path: Path | str, spec: ModelSpec, options: ModelOptions = DEFAULT_OPTIONS
    ) -> None:
        self.path = Path(path)
        self.spec = spec
        self.options = options
        self._descriptor: Any = None
        self._device = torch.device("cpu")
        self._dtype = _DTYPES[options.precision]
        self._runners: dict[tuple[int, int], TileRunner] = {}

    def load(self, device: str) -> None:
        dev = torch.device(device)
        if self.options.precision == "fp16" and dev.type == "cpu":
            raise ModelError(
                f"model {self.spec.name}: precision fp16 needs a GPU or NPU, device {device} given"
            )
        if self.options.precision not in self.spec.precisions:
            raise ModelError(
                f"model {self.spec.name} runs in {', '.join(self.spec.precisions)}, "
                f"precision {self.options.precision} given"
            )
        descriptor = load_descriptor(self.path, "cpu")
        if int(descriptor.scale) != self.spec.scale:
            raise ModelError(
                f"model {self.path.name} upscales x{descriptor.scale}, x{self.spec.scale} expected"
            )
        descriptor.to(dev, self._dtype)
        descriptor.eval()
        self._descriptor, self._device = descriptor, dev
        self._runners.clear()
        logger.info(
            "loaded %s (%s x%d) on %s in %s",
            self.path.name,
            self.spec.arch,
            self.spec.scale,
            device,
            self.options.precision,
        )

    def run(self, batch: np.ndarray) -> np.ndarray:
        check_batch(batch, self.spec.name)
        if self._descriptor is None:
            raise ModelError(f"model {self.spec.name}: expected load(device) before run()")
        n, h, w, _ = batch.shape
        if n == 0:
            return np.empty((0, h * self.spec.scale, w * self.spec.scale, 3), dtype=np.uint8)
        if not batch.flags.writeable:
            batch = batch.copy()  # torch.from_numpy warns about read-only arrays
        with torch.inference_mode():
            frames = torch.from_numpy(batch).to(self._device)
            x = frames.permute(0, 3, 1, 2).to(self._dtype).div_(255.0)
            y = self._runner((h, w))(x)
            out = y.float().clamp_(0.0, 1.0).mul_(255.0).round_().to(torch.uint8)
            return out.permute(0, 2, 3, 1).contiguous().cpu().numpy()

    def _runner(self, frame_hw: tuple[int, int]) -> TileRunner:
        """One runner per frame size, planned from free memory when first needed; it keeps
        what it learns from out-of-memory errors."""
        runner = self._runners.get(frame_hw)
        if runner is None:
            opts = self.options

            def plan_now() -> TilePlan:
                return plan_tiles(
                    opts.tile,
                    frame_hw,
                    self.spec.scale,
                    opts.tile_overlap,
                    free_bytes=free_memory_bytes(str(self._device)),
                    element_bytes=torch.finfo(self._dtype).bits // 8,
                    tileable=self.spec.tileable,
                    max_batch=opts.batch_size,
                )

            plan = plan_now()
            runner = TileRunner(
                self._descriptor,
                self.spec.scale,
                tile=plan.tile,
                overlap=opts.tile_overlap,
                tile_batch=plan.tile_batch,
                adapt=not opts.tiling_off,
                on_oom=self._empty_cache,
                # Free memory is re-read every few batches, as it changes (seed 003).
                grow=lambda _current: plan_now().tile_batch,
            )
            logger.debug("frames %s: tile %s, %d per call", frame_hw, plan.tile, plan.tile_batch)
            self._runners[frame_hw] = runner
        return runner

    def _empty_cache(self) -> None:
        if self._device.type == "cuda":
            torch.cuda.empty_cache()
        elif self._device.type == "npu" and hasattr(torch, "npu"):
            torch.npu.empty_cache()


__all__ = ["IdentityModel", "ResampleUpscaler", "SpandrelUpscaler", "check_batch"]
