"""vidshard: run video AI models on every accelerator you have."""

from typing import TYPE_CHECKING, Any

from vidshard.api import upscale
from vidshard.engine.upscale import UpscaleOptions, UpscaleResult
from vidshard.errors import VidshardError

if TYPE_CHECKING:
    from vidshard.client import Client

__version__ = "0.1.0"

__all__ = [
    "Client",
    "UpscaleOptions",
    "UpscaleResult",
    "VidshardError",
    "__version__",
    "upscale",
]


def __getattr__(name: str) -> Any:
    """``vidshard.Client`` is imported on first use: ``import vidshard`` needs no httpx."""
    if name == "Client":
        from vidshard.client import Client

        return Client
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
