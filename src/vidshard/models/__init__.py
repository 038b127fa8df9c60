"""Models: the Model protocol, the registry of names / files / classes, upscalers, tiling.

Importing this package is cheap: torch and spandrel load only when an upscaler or the
tiling helpers are first used (``from vidshard.models import SpandrelUpscaler`` imports
torch then, never spandrel; spandrel loads when a weights file is read).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from vidshard.models.base import PRECISIONS, Model, ModelSpec
from vidshard.models.options import MIN_TILE, ModelOptions, TileOption
from vidshard.models.registry import (
    DEFAULT_SCALE,
    PLUGIN_GROUP,
    ModelEntry,
    ModelRef,
    ModelRegistry,
    build_model,
    builtin_entries,
    default_registry,
    plugin_entries,
    resolve_model,
)
from vidshard.models.weights import WEIGHT_SUFFIXES, WeightsInfo, inspect_weights

if TYPE_CHECKING:
    from vidshard.models.tiling import TilePlan, TileRunner, plan_tiles, run_tiled
    from vidshard.models.upscale import IdentityModel, ResampleUpscaler, SpandrelUpscaler

# Names that need torch, imported on first use.
_LAZY = {
    "IdentityModel": "vidshard.models.classical",
    "ResampleUpscaler": "vidshard.models.classical",
    "SpandrelUpscaler": "vidshard.models.upscale",
    "TilePlan": "vidshard.models.tiling",
    "TileRunner": "vidshard.models.tiling",
    "plan_tiles": "vidshard.models.tiling",
    "run_tiled": "vidshard.models.tiling",
}

__all__ = [
    "DEFAULT_SCALE",
    "MIN_TILE",
    "PLUGIN_GROUP",
    "PRECISIONS",
    "WEIGHT_SUFFIXES",
    "IdentityModel",
    "Model",
    "ModelEntry",
    "ModelOptions",
    "ModelRef",
    "ModelRegistry",
    "ModelSpec",
    "ResampleUpscaler",
    "SpandrelUpscaler",
    "TileOption",
    "TilePlan",
    "TileRunner",
    "WeightsInfo",
    "build_model",
    "builtin_entries",
    "default_registry",
    "inspect_weights",
    "plan_tiles",
    "plugin_entries",
    "resolve_model",
    "run_tiled",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
