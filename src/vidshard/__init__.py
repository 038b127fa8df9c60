"""vidshard: run video AI models on every accelerator you have."""

import importlib
from typing import TYPE_CHECKING, Any

from vidshard.errors import VidshardError

if TYPE_CHECKING:
    from vidshard.api import detect, generate, run, track, upscale
    from vidshard.client import Client
    from vidshard.engine.upscale import UpscaleOptions, UpscaleResult

__version__ = "0.1.0"

__all__ = [
    "Client",
    "UpscaleOptions",
    "UpscaleResult",
    "VidshardError",
    "__version__",
    "detect",
    "generate",
    "run",
    "track",
    "upscale",
]


_LAZY = {
    "Client": "vidshard.client",
    "UpscaleOptions": "vidshard.engine.upscale",
    "UpscaleResult": "vidshard.engine.upscale",
    "detect": "vidshard.api",
    "generate": "vidshard.api",
    "run": "vidshard.api",
    "track": "vidshard.api",
    "upscale": "vidshard.api",
}


def __getattr__(name: str) -> Any:
    """The API is imported on first use: ``import vidshard`` (a worker does) loads no task,
    engine or httpx."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
