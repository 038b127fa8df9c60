"""How a :class:`~vidshard.generation.types.Layout` maps onto the ranks of a group.

Ranks form a ``(cfg, ring, ulysses)`` device mesh of shape ``(layout.cfg, 1,
layout.ulysses)``: rank ``r`` is on CFG branch ``r // ulysses`` and holds sequence shard
``r % ulysses``. The ``(ring, ulysses)`` sub-mesh of a branch is handed to diffusers'
context parallelism (``ContextParallelConfig(ulysses_degree=..., mesh=...)``, then
``transformer.enable_parallelism``); the ``cfg`` dimension joins the two branches' noise
predictions (all_gather). FSDP (``torch.distributed.fsdp.fully_shard``) shards over a flat
mesh of every rank: each transformer block and each text-encoder block is one unit (see
:func:`apply_fsdp` for what stays whole).
Ring attention is not used: CPU torch has no attention backend for it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.distributed.device_mesh import DeviceMesh, init_device_mesh

from .types import Layout


@dataclass(frozen=True)
class Placement:
    """One rank's place in its group."""

    rank: int
    cfg_rank: int  # 0: the conditional branch, 1: the unconditional one
    mesh: DeviceMesh | None  # (cfg, ring, ulysses); None for a single rank
    flat: DeviceMesh | None  # every rank, for FSDP; None for a single rank

    @property
    def cfg_group(self) -> dist.ProcessGroup | None:
        """The two ranks holding this rank's sequence shard on either CFG branch."""
        return None if self.mesh is None else self.mesh.get_group("cfg")


def place(layout: Layout, rank: int, device: torch.device) -> Placement:
    """Build the meshes of ``layout`` (a collective: every rank calls it in step)."""
    if layout.world == 1:
        return Placement(rank=0, cfg_rank=0, mesh=None, flat=None)
    mesh = init_device_mesh(
        device.type,
        (layout.cfg, 1, layout.ulysses),
        mesh_dim_names=("cfg", "ring", "ulysses"),
    )
    flat = init_device_mesh(device.type, (layout.world,), mesh_dim_names=("fsdp",))
    return Placement(rank=rank, cfg_rank=rank // layout.ulysses, mesh=mesh, flat=flat)


def apply_ulysses(transformer: torch.nn.Module, layout: Layout, placement: Placement) -> None:
    """Split the transformer's sequence over the ``ulysses`` ranks of each CFG branch."""
    if layout.ulysses == 1 or placement.mesh is None:
        return
    from diffusers import ContextParallelConfig

    config = ContextParallelConfig(
        ulysses_degree=layout.ulysses, mesh=placement.mesh["ring", "ulysses"]
    )
    transformer.enable_parallelism(config=config)  # type: ignore[operator]


def apply_fsdp(
    module: torch.nn.Module, blocks: torch.nn.ModuleList, placement: Placement, *, root: bool
) -> None:
    """``fully_shard`` each of ``blocks`` over every rank, and ``module`` itself (the
    parameters outside the blocks) when ``root``.

    The transformer keeps its few parameters outside the blocks (patch embedding, the
    time/text/image embedders, the output head: well under 1% of Wan's weights) whole on
    every rank: sharding them too changes its output by one float32 ulp (1.2e-7 measured
    on CPU), and the layouts are meant to be exact. The text encoder's root (the 256k-token
    embedding, a good share of UMT5's weights) is sharded: that is exact.
    """
    if placement.flat is None:
        return
    from torch.distributed.fsdp import fully_shard

    for block in blocks:
        fully_shard(block, mesh=placement.flat, reshard_after_forward=True)
    if root:
        fully_shard(module, mesh=placement.flat, reshard_after_forward=True)


def join_branches(noise: torch.Tensor, placement: Placement) -> tuple[torch.Tensor, torch.Tensor]:
    """(conditional, unconditional) noise predictions, each computed on one CFG branch
    and all-gathered over the branch pair."""
    parts = [torch.empty_like(noise) for _ in range(2)]
    dist.all_gather(parts, noise.contiguous(), group=placement.cfg_group)
    return parts[0], parts[1]
