"""The Wan image-to-video denoising loop, written out so each rank runs its share.

It is ``WanImageToVideoPipeline.__call__`` (diffusers 0.42, Wan2.1: one transformer, no
expanded timesteps) with the same helpers (``encode_prompt``, ``encode_image``,
``prepare_latents``) and the same arithmetic, so one rank reproduces the pipeline's own
output exactly (a test checks it). What it adds:

- CFG parallel: with ``layout.cfg == 2`` the rank on branch 0 runs the conditional pass
  and the rank on branch 1 the unconditional one (its prompt embeddings swapped for the
  negative ones); the two predictions are all-gathered and every rank combines them and
  takes the same scheduler step, so every rank holds the same latents.
- Cancel agreed over the group after each step (all_reduce MAX of each rank's flag): all
  ranks stop at the same step and raise :class:`~vidshard.errors.Cancelled`.
- Progress ``on_step(step, total)`` after each step.
- The attention cache (seed 002's ``start_step`` / ``interval`` / ``end_step``): diffusers'
  TaylorSeer cache hook with ``max_order=0``, which is plain reuse: from ``start_step`` to
  ``end_step`` (exclusive; None: to the end) each block's self-attention output is
  recomputed every ``interval`` steps (at ``start_step + 1``, ``start_step + 1 + interval``,
  ...) and reused in between; before ``start_step`` and from ``end_step`` on, everything is
  computed. The state is kept per branch (``cache_context("cond" / "uncond")``), so CFG
  parallel caches exactly what one rank caches.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch

from vidshard.errors import Cancelled, ConfigError

from .dist import any_rank
from .parallel import Placement, join_branches
from .types import CacheSettings, GenerationRequest, Layout

MAX_TEXT_TOKENS = 512  # Wan's max_sequence_length


@dataclass
class Conditioning:
    """What the loop needs, computed once per request."""

    prompt_embeds: torch.Tensor
    negative_embeds: torch.Tensor | None  # None without guidance
    image_embeds: torch.Tensor | None  # None for a transformer without image_dim
    latents: torch.Tensor  # the seeded noise
    condition: torch.Tensor  # the encoded first frame and mask


def prepare(
    pipe: Any, request: GenerationRequest, image: Any, device: torch.device
) -> Conditioning:
    """Encode the prompts and the image and draw the seeded noise, as the pipeline does."""
    width, height = request.size_wh
    guided = request.guidance > 1.0
    prompt_embeds, negative_embeds = pipe.encode_prompt(
        prompt=request.prompt,
        negative_prompt=request.negative_prompt,
        do_classifier_free_guidance=guided,
        num_videos_per_prompt=1,
        max_sequence_length=MAX_TEXT_TOKENS,
        device=device,
    )
    dtype = pipe.transformer.dtype
    prompt_embeds = prompt_embeds.to(dtype)
    if negative_embeds is not None:
        negative_embeds = negative_embeds.to(dtype)
    image_embeds = None
    if pipe.transformer.config.image_dim is not None:
        image_embeds = pipe.encode_image(image, device).to(dtype)
    video = pipe.video_processor.preprocess(image, height=height, width=width)
    generator = torch.Generator(device=device).manual_seed(request.seed)
    latents, condition = pipe.prepare_latents(
        video.to(device, dtype=torch.float32),
        1,
        pipe.vae.config.z_dim,
        height,
        width,
        request.frames,
        torch.float32,
        device,
        generator,
    )
    return Conditioning(prompt_embeds, negative_embeds, image_embeds, latents, condition)


def make_scheduler(base: Any, solver: str, shift: float) -> Any:
    """A fresh scheduler for one request: UniPC with ``flow_shift`` or flow-matching Euler
    with ``shift``, keeping the model's own settings where it ships the same kind."""
    from diffusers import FlowMatchEulerDiscreteScheduler, UniPCMultistepScheduler

    config = dict(base.config)
    if solver == "unipc":
        if not isinstance(base, UniPCMultistepScheduler):
            config = {"num_train_timesteps": config.get("num_train_timesteps", 1000)}
        return UniPCMultistepScheduler.from_config(
            config, prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=shift
        )
    if not isinstance(base, FlowMatchEulerDiscreteScheduler):
        config = {"num_train_timesteps": config.get("num_train_timesteps", 1000)}
    return FlowMatchEulerDiscreteScheduler.from_config(
        config, shift=shift, use_dynamic_shifting=False
    )


@contextmanager
def attention_cache(transformer: Any, cache: CacheSettings | None) -> Iterator[None]:
    """Seed 002's attention cache on ``transformer`` for one request (see the module
    docstring); removed afterwards, so the loaded model serves the next request as new."""
    if cache is None:
        yield
        return
    from diffusers import TaylorSeerCacheConfig

    config = TaylorSeerCacheConfig(
        cache_interval=cache.interval,
        disable_cache_before_step=cache.start_step,
        disable_cache_after_step=cache.end_step,
        max_order=0,
        taylor_factors_dtype=transformer.dtype,
        cache_identifiers=[r"blocks\.\d+\.attn1"],
    )
    transformer.enable_cache(config)
    try:
        yield
    finally:
        transformer.disable_cache()


def _predict(
    transformer: Any,
    branch: str,
    latent_input: torch.Tensor,
    timestep: torch.Tensor,
    embeds: torch.Tensor,
    cond: Conditioning,
) -> torch.Tensor:
    with transformer.cache_context(branch):
        out: torch.Tensor = transformer(
            hidden_states=latent_input,
            timestep=timestep,
            encoder_hidden_states=embeds,
            encoder_hidden_states_image=cond.image_embeds,
            return_dict=False,
        )[0]
    return out


def _noise(
    transformer: Any,
    cond: Conditioning,
    latent_input: torch.Tensor,
    timestep: torch.Tensor,
    guidance: float,
    layout: Layout,
    placement: Placement,
) -> torch.Tensor:
    """The guided noise prediction of one step (CFG split over two ranks when asked)."""
    if layout.cfg == 2:
        if cond.negative_embeds is None:
            raise ConfigError(f"guidance: cfg parallel needs guidance > 1, got {guidance}")
        on_cond = placement.cfg_rank == 0
        embeds = cond.prompt_embeds if on_cond else cond.negative_embeds
        mine = _predict(
            transformer, "cond" if on_cond else "uncond", latent_input, timestep, embeds, cond
        )
        noise, noise_uncond = join_branches(mine, placement)
        return noise_uncond + guidance * (noise - noise_uncond)
    noise = _predict(transformer, "cond", latent_input, timestep, cond.prompt_embeds, cond)
    if cond.negative_embeds is None:
        return noise
    noise_uncond = _predict(
        transformer, "uncond", latent_input, timestep, cond.negative_embeds, cond
    )
    return noise_uncond + guidance * (noise - noise_uncond)


def denoise(
    pipe: Any,
    cond: Conditioning,
    request: GenerationRequest,
    layout: Layout,
    placement: Placement,
    device: torch.device,
    *,
    on_step: Callable[[int, int], None],
    should_stop: Callable[[], bool],
) -> torch.Tensor:
    """Run every denoising step; the final latents (the same on every rank)."""
    transformer = pipe.transformer
    scheduler = make_scheduler(pipe.scheduler, request.solver, request.shift)
    scheduler.set_timesteps(request.steps, device=device)
    timesteps = scheduler.timesteps
    total = len(timesteps)
    latents = cond.latents
    with attention_cache(transformer, request.cache):
        for index, t in enumerate(timesteps):
            latent_input = torch.cat([latents, cond.condition], dim=1).to(transformer.dtype)
            noise = _noise(
                transformer,
                cond,
                latent_input,
                t.expand(latents.shape[0]),
                request.guidance,
                layout,
                placement,
            )
            latents = scheduler.step(noise, t, latents, return_dict=False)[0]
            stop = should_stop()
            if layout.world > 1:
                stop = any_rank(stop, device)
            if stop:
                raise Cancelled(
                    f"generation {request.request_id} cancelled after step {index + 1}/{total}"
                )
            on_step(index + 1, total)
    return latents
