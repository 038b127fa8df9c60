"""vidshard: run video AI models on every accelerator you have."""

from vidshard.api import upscale
from vidshard.engine.upscale import UpscaleOptions, UpscaleResult
from vidshard.errors import VidshardError

__version__ = "0.1.0"

__all__ = ["UpscaleOptions", "UpscaleResult", "VidshardError", "__version__", "upscale"]
