"""Tiny random-weight model files for tests, built in milliseconds with no download.

Each ``build_*`` constructs an architecture from spandrel's own arch modules with tiny
hyperparameters, saves its ``state_dict()`` (``.pth``, ``.pt``, ``.ckpt``, ``.bin`` or
``.safetensors``) and returns a :class:`FixtureModel` with the path, the architecture id
spandrel should detect, the scale and the original network (eval mode, CPU, fp32) to
compare outputs against. Also: a user model class file, unreadable files, random frames.

Usable from any test suite::

    from models_fixtures import build_compact, random_frames
    model = build_compact(tmp_path, scale=2)
    ref = resolve_model(str(model.path), scale=2)
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

FORMATS: tuple[str, ...] = ("pth", "safetensors", "pt", "ckpt", "bin")


@dataclass(frozen=True)
class FixtureModel:
    path: Path
    arch: str  # the spandrel architecture id loading must detect
    scale: int
    module: torch.nn.Module  # the network that was saved, eval mode, fp32, CPU


def _arch_module(name: str) -> Any:
    """spandrel's architecture package ``name``, imported with torchvision made importable."""
    from vidshard._compat.torchvision_ops import ensure_torchvision_ops

    ensure_torchvision_ops()
    import importlib

    return importlib.import_module(f"spandrel.architectures.{name}")


def save_state_dict(module: torch.nn.Module, path: Path) -> Path:
    """Save ``module``'s weights in the format the suffix of ``path`` names."""
    state = {k: v.detach().clone().contiguous() for k, v in module.state_dict().items()}
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(state, str(path))
    elif suffix == ".ckpt":
        torch.save({"state_dict": state}, path)  # wrapped, as training checkpoints are
    elif suffix in (".pth", ".pt", ".bin"):
        torch.save(state, path)
    else:
        raise ValueError(f"expected one of {FORMATS}, got {suffix!r}")
    return path


def _build(
    directory: Path,
    arch: str,
    scale: int,
    make: Callable[[], torch.nn.Module],
    *,
    fmt: str,
    seed: int,
    name: str | None,
) -> FixtureModel:
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        module = make().eval()
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name or f'{arch.lower()}_x{scale}'}.{fmt}"
    save_state_dict(module, path)
    return FixtureModel(path=path, arch=arch, scale=scale, module=module)


def build_compact(
    directory: Path,
    *,
    scale: int = 4,
    num_feat: int = 8,
    num_conv: int = 2,
    fmt: str = "pth",
    seed: int = 0,
    name: str | None = None,
) -> FixtureModel:
    """Real-ESRGAN Compact (SRVGGNetCompact): receptive field radius num_conv + 2 px."""
    cls = _arch_module("Compact").Compact

    def make() -> torch.nn.Module:
        return cls(num_feat=num_feat, num_conv=num_conv, upscale=scale)  # type: ignore[no-any-return]

    return _build(directory, "Compact", scale, make, fmt=fmt, seed=seed, name=name)


def build_esrgan(
    directory: Path,
    *,
    scale: int = 2,
    num_filters: int = 8,
    num_blocks: int = 1,
    fmt: str = "pth",
    seed: int = 0,
    name: str | None = None,
) -> FixtureModel:
    """ESRGAN (RRDBNet, old-arch keys); scale must be a power of 2."""
    cls = _arch_module("ESRGAN").ESRGAN

    def make() -> torch.nn.Module:
        return cls(num_filters=num_filters, num_blocks=num_blocks, scale=scale)  # type: ignore[no-any-return]

    return _build(directory, "ESRGAN", scale, make, fmt=fmt, seed=seed, name=name)


def build_span(
    directory: Path,
    *,
    scale: int = 2,
    feature_channels: int = 8,
    fmt: str = "pth",
    seed: int = 0,
    name: str | None = None,
) -> FixtureModel:
    """SPAN."""
    cls = _arch_module("SPAN").SPAN

    def make() -> torch.nn.Module:
        return cls(num_in_ch=3, num_out_ch=3, feature_channels=feature_channels, upscale=scale)  # type: ignore[no-any-return]

    return _build(directory, "SPAN", scale, make, fmt=fmt, seed=seed, name=name)


def build_swinir(
    directory: Path,
    *,
    scale: int = 2,
    embed_dim: int = 12,
    window_size: int = 4,
    fmt: str = "pth",
    seed: int = 0,
    name: str | None = None,
) -> FixtureModel:
    """SwinIR, lightweight (pixelshuffledirect) flavour: one layer of two blocks."""
    cls = _arch_module("SwinIR").SwinIR

    def make() -> torch.nn.Module:
        return cls(  # type: ignore[no-any-return]
            img_size=16,
            embed_dim=embed_dim,
            depths=[2],
            num_heads=[2],
            window_size=window_size,
            mlp_ratio=2.0,
            upscale=scale,
            upsampler="pixelshuffledirect",
        )

    return _build(directory, "SwinIR", scale, make, fmt=fmt, seed=seed, name=name)


def build_hat(
    directory: Path,
    *,
    scale: int = 2,
    embed_dim: int = 12,
    window_size: int = 4,
    fmt: str = "pth",
    seed: int = 0,
    name: str | None = None,
) -> FixtureModel:
    """HAT: one layer of two blocks, 8 features before the upsampler."""
    cls = _arch_module("HAT").HAT

    def make() -> torch.nn.Module:
        return cls(  # type: ignore[no-any-return]
            img_size=16,
            embed_dim=embed_dim,
            depths=[2],
            num_heads=[2],
            window_size=window_size,
            compress_ratio=3,
            squeeze_factor=4,
            mlp_ratio=2.0,
            upscale=scale,
            num_feat=8,
        )

    return _build(directory, "HAT", scale, make, fmt=fmt, seed=seed, name=name)


# spandrel architecture id -> builder
BUILDERS: dict[str, Callable[..., FixtureModel]] = {
    "Compact": build_compact,
    "ESRGAN": build_esrgan,
    "SPAN": build_span,
    "SwinIR": build_swinir,
    "HAT": build_hat,
}


def reference_output(module: torch.nn.Module, frames: np.ndarray) -> np.ndarray:
    """What vidshard should produce for ``frames`` with ``module``: fp32 on CPU, untiled,
    frame by frame, clamped and rounded to uint8."""
    outputs = []
    with torch.inference_mode():
        for frame in frames:
            x = torch.from_numpy(frame.copy()).permute(2, 0, 1)[None].float() / 255.0
            y = module(x).clamp(0, 1).mul(255).round().to(torch.uint8)
            outputs.append(y[0].permute(1, 2, 0).numpy())
    return np.stack(outputs)


def random_frames(n: int = 2, height: int = 16, width: int = 24, seed: int = 0) -> np.ndarray:
    """(n, height, width, 3) uint8 RGB noise."""
    return np.random.default_rng(seed).integers(0, 256, (n, height, width, 3), dtype=np.uint8)


USER_MODEL_SOURCE = '''\
"""A user model written to vidshard's Model protocol: nearest-neighbour upscale."""

import numpy as np

from vidshard.models import ModelSpec


class {class_name}:
    def __init__(self, scale: int = {default_scale}) -> None:
        self.spec = ModelSpec(name="{model_name}", scale=scale)
        self.device = None

    def load(self, device: str) -> None:
        self.device = device

    def run(self, batch: np.ndarray) -> np.ndarray:
        s = self.spec.scale
        return batch.repeat(s, axis=1).repeat(s, axis=2)
'''


def write_user_model_file(
    directory: Path,
    *,
    class_name: str = "NearestUpscaler",
    default_scale: int = 2,
    model_name: str = "nearest",
    filename: str = "my_model.py",
) -> Path:
    """A ``.py`` file holding a user model class (use ``f"{path}:{class_name}"``)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / filename
    source = USER_MODEL_SOURCE.format(
        class_name=class_name, default_scale=default_scale, model_name=model_name
    )
    path.write_text(textwrap.dedent(source))
    return path


def write_unreadable_files(directory: Path) -> dict[str, Path]:
    """Files spandrel cannot load, by what is wrong with them."""
    directory.mkdir(parents=True, exist_ok=True)
    files = {
        "random_bytes": directory / "random.pth",
        "text": directory / "notes.pth",
        "unknown_arch": directory / "unknown.pth",
        "bad_safetensors": directory / "broken.safetensors",
        "not_a_dict": directory / "tensor.bin",
    }
    files["random_bytes"].write_bytes(np.random.default_rng(1).bytes(4096))
    files["text"].write_text("these are not weights\n")
    with torch.random.fork_rng():
        torch.manual_seed(0)
        unknown = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Conv2d(4, 3, 1))
    save_state_dict(unknown, files["unknown_arch"])
    files["bad_safetensors"].write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{broken}")
    torch.save(torch.zeros(3), files["not_a_dict"])
    return files
