"""Cheap checks of a generation request against a model folder and a layout.

:func:`check_request` runs on the coordinator before a group is formed: it reads only the
JSON configs of the model folder (no torch, no weights) and raises a typed error naming
the field for anything the ranks would otherwise fail on minutes later.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vidshard.errors import ConfigError, ModelError

from .types import CacheSettings, Layout

WAN_PIPELINES = frozenset({"WanImageToVideoPipeline"})
SOLVERS = ("unipc", "euler")


@dataclass(frozen=True)
class ModelShape:
    """What the checks need from a Wan folder's configs."""

    heads: int  # transformer attention heads
    patch_hw: tuple[int, int]  # transformer spatial patch
    scale_spatial: int  # VAE spatial downsampling
    scale_temporal: int  # VAE temporal downsampling

    @property
    def size_multiple(self) -> int:
        """Width and height must be multiples of this (16 for Wan)."""
        return self.scale_spatial * max(self.patch_hw)

    def sequence_length(self, frames: int, size_wh: tuple[int, int]) -> int:
        """Tokens the transformer sees for a video of ``frames`` at ``size_wh``."""
        latent_frames = (frames - 1) // self.scale_temporal + 1
        width, height = size_wh
        tokens_h = height // self.scale_spatial // self.patch_hw[0]
        tokens_w = width // self.scale_spatial // self.patch_hw[1]
        return latent_frames * tokens_h * tokens_w


def _json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ModelError(
            f"model: expected a diffusers folder with {path.name}, missing {path}"
        ) from exc
    except (OSError, ValueError) as exc:
        raise ModelError(f"model: cannot read {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise ModelError(f"model: expected a JSON object in {path}, got {type(data).__name__}")
    return data


def model_shape(model_path: Path) -> ModelShape:
    """Read a Wan image-to-video folder's configs (ModelError when it is not one)."""
    root = Path(model_path)
    if not root.is_dir():
        raise ModelError(f"model: expected a diffusers model folder, got {root} (not a directory)")
    index = _json(root / "model_index.json")
    kind = index.get("_class_name")
    if kind not in WAN_PIPELINES:
        raise ModelError(
            f"model: expected a {', '.join(sorted(WAN_PIPELINES))} folder, got {kind!r} in {root}"
        )
    transformer = _json(root / "transformer" / "config.json")
    vae = _json(root / "vae" / "config.json")
    try:
        patch = transformer.get("patch_size", [1, 2, 2])
        downsample = vae.get("temperal_downsample", [False, True, True])
        return ModelShape(
            heads=int(transformer["num_attention_heads"]),
            patch_hw=(int(patch[1]), int(patch[2])),
            scale_spatial=2 ** len(downsample),
            scale_temporal=2 ** sum(bool(step) for step in downsample),
        )
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise ModelError(f"model: unexpected transformer or VAE config in {root}: {exc}") from exc


def _check_numbers(
    shape: ModelShape,
    frames: int,
    size_wh: tuple[int, int],
    steps: int,
    shift: float,
    solver: str,
    fps: int | None,
) -> None:
    if frames < 1 or (frames - 1) % shape.scale_temporal:
        raise ConfigError(f"frames: expected {shape.scale_temporal}k+1 (e.g. 81), got {frames}")
    width, height = size_wh
    multiple = shape.size_multiple
    if width <= 0 or height <= 0 or width % multiple or height % multiple:
        raise ConfigError(
            f"size: expected width and height multiples of {multiple}, got {width}x{height}"
        )
    if steps < 1:
        raise ConfigError(f"steps: expected >= 1, got {steps}")
    if solver not in SOLVERS:
        raise ConfigError(f"solver: expected one of {', '.join(SOLVERS)}, got {solver!r}")
    if not shift > 0:
        raise ConfigError(f"shift: expected > 0, got {shift}")
    if fps is not None and fps < 1:
        raise ConfigError(f"fps: expected >= 1, got {fps}")


def _check_cache(cache: CacheSettings | None, steps: int) -> None:
    if cache is None:
        return
    if cache.interval < 1:
        raise ConfigError(f"attention cache interval: expected >= 1, got {cache.interval}")
    if not 0 <= cache.start_step < steps:
        raise ConfigError(
            f"attention cache start_step: expected 0..{steps - 1} (steps={steps}), "
            f"got {cache.start_step}"
        )
    if cache.end_step is not None and not cache.start_step < cache.end_step <= steps:
        raise ConfigError(
            f"attention cache end_step: expected {cache.start_step + 1}..{steps} "
            f"(after start_step, at most steps), got {cache.end_step}"
        )


def _check_layout(
    shape: ModelShape, layout: Layout, frames: int, size_wh: tuple[int, int], guidance: float
) -> None:
    if layout.world != layout.ulysses * layout.cfg:
        raise ConfigError(
            f"devices: expected ulysses x cfg = {layout.ulysses * layout.cfg}, got {layout.world}"
        )
    if layout.cfg == 2 and not guidance > 1.0:
        raise ConfigError(
            f"guidance: cfg parallel runs the unguided branch on its own rank and needs "
            f"guidance > 1, got {guidance}"
        )
    if shape.heads % layout.ulysses:
        raise ConfigError(
            f"ulysses: expected a divisor of the model's {shape.heads} attention heads, "
            f"got {layout.ulysses}"
        )
    tokens = shape.sequence_length(frames, size_wh)
    if tokens % layout.ulysses:
        width, height = size_wh
        raise ConfigError(
            f"ulysses: {frames} frames at {width}x{height} are {tokens} tokens, "
            f"not divisible by ulysses={layout.ulysses}; pick another size or degree"
        )


def check_request(
    model_path: Path,
    layout: Layout,
    *,
    frames: int,
    size_wh: tuple[int, int],
    steps: int,
    guidance: float,
    solver: str = "unipc",
    shift: float = 5.0,
    cache: CacheSettings | None = None,
    fps: int | None = None,
) -> None:
    """Raise ``ConfigError`` (or ``ModelError`` for the folder) for a request the group
    could not run: frames not 4k+1, a size not a multiple of 16, a layout whose Ulysses
    degree does not divide the heads or the sequence, cfg parallel without guidance > 1, a
    world that is not ulysses x cfg, a cache window outside the steps."""
    shape = model_shape(model_path)
    _check_numbers(shape, frames, size_wh, steps, shift, solver, fps)
    _check_cache(cache, steps)
    _check_layout(shape, layout, frames, size_wh, guidance)
