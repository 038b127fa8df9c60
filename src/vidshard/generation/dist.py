"""The process group of a generation group, and the few collectives the runner needs.

Every rank of a group calls :func:`init_group` once (the coordinator hands each the same
``init_method``), builds its runner, and calls :func:`close_group` when the group is
dismissed. Collectives time out after ``timeout_s``: a dead or hung rank surfaces as an
exception on the live ones instead of a hang.
"""

from __future__ import annotations

import logging
from datetime import timedelta

import torch
import torch.distributed as dist

from vidshard._compat.accelerator import ensure_cpu_device_count
from vidshard.errors import ConfigError

logger = logging.getLogger(__name__)

_BACKENDS = {"cuda": "nccl", "npu": "hccl", "cpu": "gloo"}


def default_backend(device: str) -> str:
    """nccl for ``cuda[:i]``, hccl for ``npu[:i]``, gloo for ``cpu``."""
    kind = torch.device(device).type
    if kind not in _BACKENDS:
        raise ConfigError(
            f"device: expected cpu, cuda or npu for a generation group, got {device!r}"
        )
    return _BACKENDS[kind]


def init_group(
    rank: int,
    world: int,
    init_method: str,
    backend: str | None = None,
    timeout_s: float = 600.0,
    *,
    device: str = "cpu",
) -> None:
    """Join the group's default process group as ``rank`` of ``world``.

    ``backend`` None picks it from ``device`` (:func:`default_backend`). Applies the CPU
    device-count shim (:mod:`vidshard._compat.accelerator`), inert where accelerators exist.
    """
    if not 0 <= rank < world:
        raise ConfigError(f"rank: expected 0..{world - 1}, got {rank}")
    if dist.is_initialized():
        raise RuntimeError("this process already belongs to a process group")
    ensure_cpu_device_count()
    chosen = backend or default_backend(device)
    kind = torch.device(device).type
    if kind == "cuda":
        torch.cuda.set_device(torch.device(device))
    dist.init_process_group(
        backend=chosen,
        init_method=init_method,
        rank=rank,
        world_size=world,
        timeout=timedelta(seconds=timeout_s),
    )
    logger.debug("rank %d/%d joined (%s, %s)", rank, world, chosen, init_method)


def close_group() -> None:
    """Leave the process group (idempotent)."""
    if dist.is_initialized():
        dist.destroy_process_group()


def any_rank(flag: bool, device: torch.device) -> bool:
    """True on every rank when ``flag`` is True on at least one (all_reduce MAX)."""
    value = torch.tensor([1 if flag else 0], dtype=torch.int32, device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())
