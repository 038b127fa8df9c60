"""Parallel VAE decode: diffusers' tiled Wan decode with its tiles spread over the ranks.

``AutoencoderKLWan.tiled_decode`` cuts the latent video into overlapping spatial tiles,
decodes each tile through every frame on its own (the causal frame cache is cleared per
tile), then blends each tile into its upper and left neighbours and crops. The tiles are
independent until that blend, so :func:`decode_latents` gives tile ``k`` (row-major) to rank
``k % world``, sends every decoded tile to rank 0, and rank 0 blends them exactly as
``tiled_decode`` does. The result equals one device's tiled decode (the same tiles, the
same arithmetic; checked by the tests to 0.0), not the untiled decode: the blend of the
overlaps differs slightly from decoding the whole frame at once, which is the price of
tiling on one device too.

A video no larger than one tile is decoded whole on rank 0, as ``tiled_decode`` would.
This mirrors diffusers 0.42's private tile loop (``_feat_map``, ``_conv_idx``,
``clear_cache``); the ``generate`` extra pins diffusers below 0.43 for it.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist


def _tiles(vae: Any, height: int, width: int) -> list[tuple[int, int]]:
    """The (row, column) latent origin of every tile, in tiled_decode's order."""
    ratio = vae.spatial_compression_ratio
    stride_h = vae.tile_sample_stride_height // ratio
    stride_w = vae.tile_sample_stride_width // ratio
    return [(i, j) for i in range(0, height, stride_h) for j in range(0, width, stride_w)]


def _decode_tile(vae: Any, z: torch.Tensor, origin: tuple[int, int]) -> torch.Tensor:
    """One tile through every frame, as ``tiled_decode``'s inner loop decodes it."""
    ratio = vae.spatial_compression_ratio
    tile_h = vae.tile_sample_min_height // ratio
    tile_w = vae.tile_sample_min_width // ratio
    i, j = origin
    vae.clear_cache()
    frames = []
    for k in range(z.shape[2]):
        vae._conv_idx = [0]
        tile = vae.post_quant_conv(z[:, :, k : k + 1, i : i + tile_h, j : j + tile_w])
        frames.append(
            vae.decoder(tile, feat_cache=vae._feat_map, feat_idx=vae._conv_idx, first_chunk=k == 0)
        )
    return torch.cat(frames, dim=2)


def _collect(
    decoded: dict[int, torch.Tensor], count: int, rank: int, world: int, device: torch.device
) -> list[torch.Tensor] | None:
    """Every tile on rank 0 (in order), each sent by its owner; None on the others.
    Rank 0 owns tile 0, so it knows the dtype to receive into."""
    tiles: list[torch.Tensor] = []
    for index in range(count):
        owner = index % world
        if owner == 0:
            if rank == 0:
                tiles.append(decoded[index])
            continue
        if rank == owner:
            tile = decoded[index].contiguous()
            dist.send(torch.tensor(tile.shape, dtype=torch.int64, device=device), dst=0)
            dist.send(tile, dst=0)
        elif rank == 0:
            shape = torch.empty(5, dtype=torch.int64, device=device)
            dist.recv(shape, src=owner)
            tile = torch.empty(tuple(shape.tolist()), dtype=decoded[0].dtype, device=device)
            dist.recv(tile, src=owner)
            tiles.append(tile)
    return tiles if rank == 0 else None


def _blend(
    vae: Any,
    tiles: list[torch.Tensor],
    grid: list[tuple[int, int]],
    height: int,
    width: int,
) -> torch.Tensor:
    """tiled_decode's blend and crop of the decoded tiles."""
    from diffusers.models.autoencoders.autoencoder_kl_wan import unpatchify

    ratio = vae.spatial_compression_ratio
    sample_h, sample_w = height * ratio, width * ratio
    stride_h, stride_w = vae.tile_sample_stride_height, vae.tile_sample_stride_width
    patch = vae.config.patch_size
    if patch is not None:
        sample_h, sample_w = sample_h // patch, sample_w // patch
        stride_h, stride_w = stride_h // patch, stride_w // patch
        blend_h = vae.tile_sample_min_height // patch - stride_h
        blend_w = vae.tile_sample_min_width // patch - stride_w
    else:
        blend_h = vae.tile_sample_min_height - stride_h
        blend_w = vae.tile_sample_min_width - stride_w
    columns = len({j for _, j in grid})
    rows = [tiles[r : r + columns] for r in range(0, len(tiles), columns)]
    result_rows = []
    for i, row in enumerate(rows):
        result_row = []
        for j, decoded in enumerate(row):
            tile = decoded  # blended in place, as tiled_decode does
            if i > 0:
                tile = vae.blend_v(rows[i - 1][j], tile, blend_h)
            if j > 0:
                tile = vae.blend_h(row[j - 1], tile, blend_w)
            result_row.append(tile[:, :, :, :stride_h, :stride_w])
        result_rows.append(torch.cat(result_row, dim=-1))
    out = torch.cat(result_rows, dim=3)[:, :, :, :sample_h, :sample_w]
    if patch is not None:
        out = unpatchify(out, patch_size=patch)
    return torch.clamp(out, min=-1.0, max=1.0)


def decode_latents(
    vae: Any, z: torch.Tensor, rank: int, world: int, device: torch.device
) -> torch.Tensor | None:
    """The decoded video (B, 3, F, H, W) in [-1, 1] on rank 0, None on the others; tiles
    over ``world`` ranks when ``vae.use_tiling`` and the video is larger than a tile."""
    _, _, _, height, width = z.shape
    ratio = vae.spatial_compression_ratio
    larger = (
        width > vae.tile_sample_min_width // ratio or height > vae.tile_sample_min_height // ratio
    )
    if not (vae.use_tiling and larger):
        return vae.decode(z, return_dict=False)[0] if rank == 0 else None
    grid = _tiles(vae, height, width)
    decoded = {k: _decode_tile(vae, z, grid[k]) for k in range(len(grid)) if k % world == rank}
    vae.clear_cache()
    tiles = _collect(decoded, len(grid), rank, world, device)
    if tiles is None:
        return None
    return _blend(vae, tiles, grid, height, width)
