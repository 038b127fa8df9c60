"""One rank of a generation group: Wan2.1 image-to-video through diffusers.

A :class:`WanRunner` lives in a worker process that already joined the group's process
group (:func:`vidshard.generation.dist.init_group`). :meth:`WanRunner.load` reads the
diffusers folder and applies the layout (Ulysses, FSDP, CFG placement, tiled VAE);
:meth:`WanRunner.generate` is called by every rank with the same request, and rank 0
writes the mp4. The runner knows nothing of executors or queues.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vidshard.errors import ConfigError, InputError, ModelError

from .checks import check_request
from .denoise import denoise, prepare
from .parallel import Placement, apply_fsdp, apply_ulysses, place
from .types import GenerationModel, GenerationRequest, GenerationResult, Layout
from .vae import decode_latents
from .video import to_uint8, write_video

logger = logging.getLogger(__name__)

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}

__all__ = ["WanRunner", "check_request", "resolve_dtype"]


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """``auto``: float32 on CPU, bfloat16 on an accelerator; else the named dtype."""
    if name == "auto":
        return torch.float32 if device.type == "cpu" else torch.bfloat16
    if name not in _DTYPES:
        raise ConfigError(f"dtype: expected auto or one of {', '.join(_DTYPES)}, got {name!r}")
    return _DTYPES[name]


def _load_image(path: Path) -> Any:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except (OSError, UnidentifiedImageError) as exc:
        raise InputError(f"image: cannot read {path}: {exc}") from exc


class WanRunner:
    """Wan2.1 I2V on one rank of a group laid out as ``layout``.

    ``fps`` is the model's frame rate (Wan2.1: 16); ``vae_tile_px`` the (tile, stride) in
    pixels of the tiled VAE decode that ``layout.vae_parallel`` spreads over the ranks.
    """

    fps = 16
    vae_tile_px = (256, 192)

    def __init__(self, model: GenerationModel, layout: Layout, rank: int, device: str) -> None:
        self.model = model
        self.layout = layout
        self.rank = rank
        self.device = torch.device(device)
        self._pipe: Any = None
        self._placement: Placement | None = None
        self._load_seconds = 0.0

    def load(self) -> float:
        """Build the pipeline and apply the layout; the seconds it took. Collective: every
        rank of the group calls it."""
        started = time.perf_counter()
        from vidshard._compat.accelerator import ensure_cpu_device_count
        from vidshard._compat.torchvision_ops import ensure_torchvision_ops

        ensure_torchvision_ops()
        ensure_cpu_device_count()
        _quiet_loading()
        dtype = resolve_dtype(self.model.dtype, self.device)
        pipe = self._from_pretrained(dtype)
        pipe.set_progress_bar_config(disable=True)
        self._placement = place(self.layout, self.rank, self.device)
        apply_ulysses(pipe.transformer, self.layout, self._placement)
        if self.layout.fsdp:
            apply_fsdp(pipe.transformer, pipe.transformer.blocks, self._placement, root=False)
            pipe.transformer.to(self.device)  # what is outside the blocks stays whole
            apply_fsdp(
                pipe.text_encoder, pipe.text_encoder.encoder.block, self._placement, root=True
            )
        else:
            pipe.transformer.to(self.device)
            pipe.text_encoder.to(self.device)
        pipe.vae.to(self.device)
        if pipe.image_encoder is not None:
            pipe.image_encoder.to(self.device)
        if self.layout.vae_parallel:
            tile, stride = self.vae_tile_px
            pipe.vae.enable_tiling(tile, tile, stride, stride)
        self._pipe = pipe
        self._load_seconds = time.perf_counter() - started
        logger.debug("rank %d loaded %s in %.1f s", self.rank, self.model.name, self._load_seconds)
        return self._load_seconds

    def _from_pretrained(self, dtype: torch.dtype) -> Any:
        from diffusers import WanImageToVideoPipeline

        path = Path(self.model.path)
        if not (path / "model_index.json").is_file():
            raise ModelError(
                f"model: expected a diffusers folder with model_index.json, got {path}"
            )
        try:
            # Wan's VAE and CLIP image encoder stay in float32, as Wan runs them.
            dtypes = {"default": dtype, "vae": torch.float32, "image_encoder": torch.float32}
            return WanImageToVideoPipeline.from_pretrained(str(path), dtype=dtypes)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ModelError(f"model: cannot load {path} as a Wan I2V pipeline: {exc}") from exc

    def frames(
        self,
        request: GenerationRequest,
        on_step: Callable[[int, int], None],
        should_stop: Callable[[], bool],
    ) -> np.ndarray | None:
        """The video as (F, H, W, 3) float32 in [0, 1] on rank 0, None on the others."""
        if self._pipe is None or self._placement is None:
            raise RuntimeError("WanRunner.load() must run before generating")
        pipe = self._pipe
        check_request(
            self.model.path,
            self.layout,
            frames=request.frames,
            size_wh=request.size_wh,
            steps=request.steps,
            guidance=request.guidance,
            solver=request.solver,
            shift=request.shift,
            cache=request.cache,
            fps=request.fps,
        )
        image = _load_image(Path(request.image))
        with torch.no_grad():
            cond = prepare(pipe, request, image, self.device)
            latents = denoise(
                pipe,
                cond,
                request,
                self.layout,
                self._placement,
                self.device,
                on_step=on_step,
                should_stop=should_stop,
            )
            del cond
            video = decode_latents(
                pipe.vae, self._unscale(latents), self.rank, self.layout.world, self.device
            )
        if video is None:
            return None
        out: np.ndarray = pipe.video_processor.postprocess_video(video, output_type="np")[0]
        return out

    def _unscale(self, latents: torch.Tensor) -> torch.Tensor:
        """The pipeline's latents → the VAE's (undo the per-channel normalisation)."""
        vae = self._pipe.vae
        latents = latents.to(device=self.device, dtype=vae.dtype)
        shape = (1, vae.config.z_dim, 1, 1, 1)
        mean = torch.tensor(vae.config.latents_mean).view(shape).to(latents.device, latents.dtype)
        inv_std = 1.0 / torch.tensor(vae.config.latents_std).view(shape).to(
            latents.device, latents.dtype
        )
        return latents / inv_std + mean

    def generate(
        self,
        request: GenerationRequest,
        on_step: Callable[[int, int], None],
        should_stop: Callable[[], bool],
    ) -> GenerationResult | None:
        """Generate ``request`` (every rank calls it); rank 0 writes the mp4 and returns the
        result, the others return None. Raises ``Cancelled`` on every rank at the same step
        when ``should_stop`` turns True on any."""
        started = time.perf_counter()
        video = self.frames(request, on_step, should_stop)
        if video is None:
            return None
        fps = request.fps or self.fps
        count = write_video(Path(request.output), to_uint8(video), fps, tag=request.request_id)
        load_seconds, self._load_seconds = self._load_seconds, 0.0  # reported once
        return GenerationResult(
            request_id=request.request_id,
            output=Path(request.output),
            frames=count,
            fps=fps,
            seconds=time.perf_counter() - started,
            load_seconds=load_seconds,
        )

    def close(self) -> None:
        """Drop the pipeline (the process group is the caller's to close)."""
        self._pipe = None
        self._placement = None


def _quiet_loading() -> None:
    """No loading bars, no "experimental feature" notices and no deprecation warnings of
    torch's own collectives from the libraries in a worker's stderr: the caller shows the
    group's own progress, and errors still come through."""
    import warnings

    import diffusers.utils.logging as diffusers_logging
    import transformers.utils.logging as transformers_logging

    diffusers_logging.disable_progress_bar()
    diffusers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"torch\.distributed")
