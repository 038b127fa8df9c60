"""Device visibility for a worker: its slot's device becomes device 0, and nothing else shows.

The frameworks read ``CUDA_VISIBLE_DEVICES`` / ``ASCEND_RT_VISIBLE_DEVICES`` once, when
their runtime initialises; set later, the variable is silently ignored and the worker
sees every device (DESIGN invariant 6). So a worker calls :func:`apply_visibility` first,
then imports and uses torch.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import MutableMapping

from vidshard.devices.types import DeviceSlot

log = logging.getLogger(__name__)


def _initialised_runtimes() -> list[str]:
    """Device runtimes torch has already started in this process (none if torch is absent)."""
    torch = sys.modules.get("torch")
    if torch is None:
        return []
    started = []
    for backend in ("cuda", "npu"):  # torch.npu exists once torch_npu is imported
        is_initialized = getattr(getattr(torch, backend, None), "is_initialized", None)
        if callable(is_initialized) and is_initialized():
            started.append(backend)
    return started


def apply_visibility(slot: DeviceSlot, environ: MutableMapping[str, str] = os.environ) -> None:
    """Put the slot's :meth:`DeviceSlot.worker_env` into ``environ`` (this process's by default).

    Call it in the worker before torch or torch_npu touch a device. Importing torch
    beforehand is harmless; initialising a device runtime is not, and raises RuntimeError.
    """
    started = _initialised_runtimes()
    if started:
        raise RuntimeError(
            f"apply_visibility for {slot.label}: expected no device runtime yet, but torch has "
            f"initialised {', '.join(started)}; call it before the first device use"
        )
    env = slot.worker_env()
    environ.update(env)
    log.debug("slot %s: visibility %s", slot.label, env)


def configure_torch_threads(slot: DeviceSlot) -> int | None:
    """Set torch's intra-op threads to the slot's share of the cores; returns the count set.

    Slots without ``cpu_threads`` (accelerator slots, as parsed) keep torch's default.
    """
    if slot.cpu_threads is None:
        return None
    import torch  # the worker's torch, imported after apply_visibility

    torch.set_num_threads(slot.cpu_threads)
    log.debug("slot %s: %d torch threads", slot.label, slot.cpu_threads)
    return slot.cpu_threads
