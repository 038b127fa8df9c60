"""Weights files read by spandrel: detect architecture and scale, load for inference.

spandrel and torch are imported inside the functions, so importing this module stays
cheap; :func:`~vidshard._compat.torchvision_ops.ensure_torchvision_ops` runs first because
spandrel imports torchvision.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vidshard.errors import ModelError

logger = logging.getLogger(__name__)

WEIGHT_SUFFIXES: tuple[str, ...] = (".pth", ".pt", ".ckpt", ".safetensors", ".bin")


@dataclass(frozen=True)
class WeightsInfo:
    """What spandrel detected in a weights file."""

    arch: str  # spandrel architecture id: "Compact", "ESRGAN", "HAT", ...
    scale: int
    precisions: tuple[str, ...]  # fp32 always; fp16 / bf16 where the architecture allows
    tileable: bool  # False where spandrel says the model tiles internally
    tags: tuple[str, ...] = ()


def is_weights_path(name: str) -> bool:
    return Path(name).suffix.lower() in WEIGHT_SUFFIXES


def load_descriptor(path: Path, device: str = "cpu") -> Any:
    """Load ``path`` with spandrel onto ``device``; an ``ImageModelDescriptor``.

    Any failure to read or recognise the file becomes a one-line :class:`ModelError`.
    """
    if not path.is_file():
        raise ModelError(f"model file not found: {path}")
    spandrel = _spandrel()
    loader = spandrel.ModelLoader(device=device)
    try:
        state_dict = _read_state_dict(loader, path)
    except Exception as exc:  # torch.load / safetensors raise many types on bad bytes
        raise ModelError(
            f"cannot read model file {path.name}: expected PyTorch or safetensors weights "
            f"({_first_line(exc)})"
        ) from exc
    try:
        descriptor = loader.load_from_state_dict(state_dict)
    except spandrel.UnsupportedModelError as exc:
        raise ModelError(
            f"model file {path.name}: architecture not recognised by spandrel "
            f"{spandrel.__version__} (expected e.g. ESRGAN, Compact, SwinIR, HAT, SPAN)"
        ) from exc
    except Exception as exc:  # an architecture matched but its loader failed on this file
        raise ModelError(
            f"model file {path.name}: spandrel cannot load it ({_first_line(exc)})"
        ) from exc
    _check_descriptor(descriptor, path)
    return descriptor


def _spandrel() -> Any:
    """The spandrel module, imported after torchvision's ops are made loadable."""
    from vidshard._compat.torchvision_ops import ensure_torchvision_ops

    ensure_torchvision_ops()
    import spandrel

    return spandrel


def _read_state_dict(loader: Any, path: Path) -> dict[str, Any]:
    if path.suffix.lower() != ".bin":
        state: dict[str, Any] = loader.load_state_dict_from_file(path)
        return state
    import torch

    spandrel = _spandrel()

    # .bin (Hugging Face style) is a pickled state dict; spandrel's loader refuses the suffix
    raw = torch.load(path, map_location=loader.device, weights_only=True)
    if not isinstance(raw, dict):
        raise TypeError(f"expected a state dict, got {type(raw).__name__}")
    return dict(spandrel.canonicalize_state_dict(raw))


def _check_descriptor(descriptor: Any, path: Path) -> None:
    spandrel = _spandrel()
    arch = descriptor.architecture.id
    if not isinstance(descriptor, spandrel.ImageModelDescriptor):
        raise ModelError(
            f"model file {path.name}: expected an image-to-image model, "
            f"got {arch} ({descriptor.purpose})"
        )
    channels = (descriptor.input_channels, descriptor.output_channels)
    if channels != (3, 3):
        raise ModelError(
            f"model file {path.name}: expected 3 input and 3 output channels (RGB), "
            f"got {channels[0]} and {channels[1]} ({arch})"
        )


def inspect_weights(path: Path) -> WeightsInfo:
    """Detect architecture, scale and precisions on CPU, then free the model."""
    descriptor = load_descriptor(path, "cpu")
    spandrel = _spandrel()
    precisions: tuple[str, ...] = ("fp32",)
    if descriptor.supports_half:
        precisions += ("fp16",)
    if descriptor.supports_bfloat16:
        precisions += ("bf16",)
    info = WeightsInfo(
        arch=str(descriptor.architecture.id),
        scale=int(descriptor.scale),
        precisions=precisions,
        tileable=descriptor.tiling != spandrel.ModelTiling.INTERNAL,
        tags=tuple(descriptor.tags),
    )
    del descriptor  # freed by reference counting; gc.collect() would cost ~0.2 s
    logger.debug("%s: %s x%d %s", path.name, info.arch, info.scale, ",".join(info.tags))
    return info


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    detail = text[0] if text else ""
    return f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__
