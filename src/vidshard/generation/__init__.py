"""Video generation over a device group: one model split over the ranks of a
``torch.distributed`` process group (Ulysses, CFG parallel, FSDP, parallel VAE decode).

This package's top level stays light (no torch): the coordinator imports the types and
:func:`check_request`; the ranks import :mod:`vidshard.generation.rank`.
"""

from .checks import check_request
from .types import CacheSettings, GenerationModel, GenerationRequest, GenerationResult, Layout

__all__ = [
    "CacheSettings",
    "GenerationModel",
    "GenerationRequest",
    "GenerationResult",
    "Layout",
    "check_request",
]
