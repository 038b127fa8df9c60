"""Let diffusers' context parallelism run on a CPU-only torch build.

diffusers 0.42 (``ModelMixin._resolve_parallel_config``) picks each rank's device as
``rank % torch.accelerator.device_count()``; with no accelerator that count is 0 and the
modulo divides by zero before any gloo collective runs. :func:`ensure_cpu_device_count`
makes ``torch.accelerator.device_count()`` answer 1 (the CPU) when, and only when, torch
has no accelerator; where CUDA or an NPU is present it changes nothing.
"""

from __future__ import annotations

import torch

_patched = False


def ensure_cpu_device_count() -> bool:
    """Make ``torch.accelerator.device_count()`` return 1 without an accelerator; True when
    it patched (or had patched) torch, False where an accelerator exists."""
    global _patched
    if _patched:
        return True
    if torch.accelerator.current_accelerator() is not None:
        return False
    torch.accelerator.device_count = lambda: 1  # the one-line shim: the CPU is one device
    _patched = True
    return True
