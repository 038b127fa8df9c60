"""Tiled inference for frames too big for memory, with feathered seams and OOM fallback.

A frame is cut into tiles of ``tile`` input pixels that overlap by ``overlap`` pixels; the
last tile in a row or column is pulled back so every tile has the same size and tiles
batch together (``tile_batch`` per forward pass). Each upscaled tile is blended into the
output with weights that ramp linearly across the overlap, so seams do not show.

Blending is an incremental weighted mean (``out += (tile - out) * w / sum_w``): where every
tile agrees the output equals them bit for bit, so a pointwise model tiled gives exactly
its untiled result.

:class:`TileRunner` adds the out-of-memory fallback: halve the tile batch, then the tile
edge, and retry the same tiles, never dropping a frame. What it learns sticks for the
following frames. Untiled inference is the case "one tile per frame", so the same fallback
also halves the frames per forward pass and then starts tiling.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from vidshard.errors import ConfigError, ModelError
from vidshard.models.options import MIN_TILE, TileOption

logger = logging.getLogger(__name__)

TileFn = Callable[[torch.Tensor], torch.Tensor]
_Tile = tuple[int, int, int]  # (frame index, top, left) in input pixels

CPU_PIXEL_BUDGET = 8_000_000  # frames up to 8 MP run untiled on CPU
_MIN_RESERVE_BYTES = 512 * 1024 * 1024
_RESERVE_FRACTION = 0.1
_FEATURES = 64  # feature maps assumed per pixel when estimating activation memory
_EDGE_WEIGHT = 1e-4  # blending weight of the outer quarter of an overlap


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles of ``tile`` px covering ``length`` px, ``overlap`` px shared."""
    if length <= tile:
        return [0]
    if tile <= overlap:
        raise ConfigError(f"tile {tile} must be larger than tile overlap {overlap}")
    return [*range(0, length - tile, tile - overlap), length - tile]


def feather_ramp(length: int, ramp: int, *, left: bool, right: bool) -> torch.Tensor:
    """1-D blending weights of a tile ``length`` px long.

    1 inside. On a side that meets another tile, over ``ramp`` px from the edge: the outer
    quarter weighs almost nothing (that is where a convolution sees the tile's padding),
    the middle half ramps up linearly, the inner quarter weighs 1. Weights are never 0, so
    every output pixel has weight. Tiles agree to ~1e-4 of their difference wherever the
    model's receptive field is within a quarter of the overlap.
    """
    weights = torch.ones(length, dtype=torch.float32)
    ramp = min(ramp, length)
    if ramp <= 0:
        return weights
    margin = ramp // 4
    inner = ramp - 2 * margin
    up = torch.cat(
        [
            torch.full((margin,), _EDGE_WEIGHT),
            torch.arange(1, inner + 1, dtype=torch.float32) / (inner + 1),
            torch.ones(margin),
        ]
    ).clamp_(min=_EDGE_WEIGHT)
    if left:
        weights[:ramp] = torch.minimum(weights[:ramp], up)
    if right:
        weights[-ramp:] = torch.minimum(weights[-ramp:], up.flip(0))
    return weights


class _Blender:
    """Collects upscaled tiles of one batch of frames into the output tensor."""

    def __init__(
        self, image: torch.Tensor, scale: int, tile_hw: tuple[int, int], overlap: int
    ) -> None:
        n, _, self.h, self.w = image.shape
        self.n, self.scale, self.device = n, scale, image.device
        self.th, self.tw = tile_hw
        self.whole_frames = self.th == self.h and self.tw == self.w
        self.ramp = overlap * scale
        self.parts: list[torch.Tensor] = []  # whole-frame mode: outputs in frame order
        self.out: torch.Tensor | None = None
        self.weight_sum: torch.Tensor | None = None
        self._weights: dict[tuple[int, int], torch.Tensor] = {}

    def add(self, tiles: Sequence[_Tile], outputs: torch.Tensor) -> None:
        expected = (len(tiles), self.th * self.scale, self.tw * self.scale)
        if outputs.ndim != 4 or (outputs.shape[0], *outputs.shape[2:]) != expected:
            raise ModelError(
                f"expected tile output (B, C, H, W) = ({expected[0]}, C, {expected[1]}, "
                f"{expected[2]}), got {tuple(outputs.shape)}"
            )
        if self.whole_frames:
            self.parts.append(outputs)
            return
        for (frame, top, left), tile_out in zip(tiles, outputs, strict=True):
            self._blend(frame, top, left, tile_out)

    def _blend(self, frame: int, top: int, left: int, tile_out: torch.Tensor) -> None:
        if self.out is None or self.weight_sum is None:
            dtype = torch.promote_types(tile_out.dtype, torch.float32)
            c, s = tile_out.shape[0], self.scale
            self.out = torch.zeros(
                (self.n, c, self.h * s, self.w * s), dtype=dtype, device=self.device
            )
            self.weight_sum = torch.zeros(
                (self.n, self.h * s, self.w * s), dtype=dtype, device=self.device
            )
        s = self.scale
        rows = slice(top * s, (top + self.th) * s)
        cols = slice(left * s, (left + self.tw) * s)
        weight = self._weight(top, left).to(self.out.dtype)
        acc_w = self.weight_sum[frame, rows, cols]
        acc_w += weight
        acc = self.out[frame, :, rows, cols]
        acc += (tile_out.to(acc.dtype) - acc) * (weight / acc_w)

    def _weight(self, top: int, left: int) -> torch.Tensor:
        key = (top, left)
        if key not in self._weights:
            wy = feather_ramp(
                self.th * self.scale, self.ramp, left=top > 0, right=top + self.th < self.h
            )
            wx = feather_ramp(
                self.tw * self.scale, self.ramp, left=left > 0, right=left + self.tw < self.w
            )
            self._weights[key] = (wy[:, None] * wx[None, :]).to(self.device)
        return self._weights[key]

    def result(self) -> torch.Tensor:
        if self.whole_frames:
            return self.parts[0] if len(self.parts) == 1 else torch.cat(self.parts)
        if self.out is None:
            raise ModelError("expected at least one tile, got none")
        return self.out


def _is_oom(exc: BaseException) -> bool:
    if isinstance(exc, torch.OutOfMemoryError):
        return True
    # torch_npu and some CUDA paths raise a plain RuntimeError
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


class TileRunner:
    """Runs ``fn`` over (N, C, H, W) tensors in tiles; learns smaller tiles on OOM.

    ``tile=None`` runs whole frames, ``tile_batch`` of them per call. With ``adapt`` an
    out-of-memory error halves ``tile_batch``, then ``tile`` (down to ``min_tile``), and
    the same tiles run again; ``on_oom`` (e.g. emptying the CUDA cache) runs before the
    retry. At the floor, or without ``adapt``, the error propagates.

    ``grow`` proposes a tile batch from the memory free now; it is asked every
    ``recheck_every`` successful calls, and the batch rises to its proposal, but never
    back to a size that has run out of memory (seed 003's adaptive batch).
    """

    def __init__(
        self,
        fn: TileFn,
        scale: int,
        *,
        tile: int | None,
        overlap: int,
        tile_batch: int,
        adapt: bool = True,
        on_oom: Callable[[], None] | None = None,
        grow: Callable[[int], int] | None = None,
        recheck_every: int = 5,
    ) -> None:
        if tile is not None and tile <= 0:
            tile = None
        if tile is not None and tile <= overlap:
            raise ConfigError(f"tile {tile} must be larger than tile overlap {overlap}")
        if tile_batch < 1:
            raise ConfigError(f"tile batch must be >= 1, got {tile_batch}")
        self.fn, self.scale, self.overlap = fn, scale, overlap
        self.tile, self.tile_batch = tile, tile_batch
        self.adapt, self.on_oom = adapt, on_oom
        self.grow, self.recheck_every = grow, max(1, recheck_every)
        self.min_tile = max(MIN_TILE, 2 * overlap + 1)
        self._oom_batch: int | None = None  # the smallest tile batch that ran out of memory
        self._since_check = 0

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        if image.ndim != 4:
            raise ModelError(f"expected an (N, C, H, W) tensor, got shape {tuple(image.shape)}")
        _, _, h, w = image.shape
        return self._run(image, self.tile or max(h, w))

    def _run(self, image: torch.Tensor, tile: int) -> torch.Tensor:
        n, _, h, w = image.shape
        th, tw = min(tile, h), min(tile, w)
        ys, xs = tile_starts(h, th, self.overlap), tile_starts(w, tw, self.overlap)
        pending: deque[_Tile] = deque((f, y, x) for f in range(n) for y in ys for x in xs)
        blender = _Blender(image, self.scale, (th, tw), self.overlap)
        while pending:
            if self.tile is not None and self.tile < tile:
                # learned a smaller tile on OOM: split what is left, one tile at a time
                f, y, x = pending.popleft()
                region = image[f : f + 1, :, y : y + th, x : x + tw]
                blender.add([(f, y, x)], self._run(region, self.tile))
                continue
            chunk = [pending.popleft() for _ in range(min(self.tile_batch, len(pending)))]
            outputs = self._try(image, chunk, (th, tw))
            if outputs is None:
                pending.extendleft(reversed(chunk))  # same tiles again, smaller
                continue
            blender.add(chunk, outputs)
            self._maybe_grow()
        return blender.result()

    def _maybe_grow(self) -> None:
        if self.grow is None:
            return
        self._since_check += 1
        if self._since_check < self.recheck_every:
            return
        self._since_check = 0
        proposal = self.grow(self.tile_batch)
        if self._oom_batch is not None:
            proposal = min(proposal, self._oom_batch - 1)
        if proposal > self.tile_batch:
            logger.info("memory allows: tile batch %d -> %d", self.tile_batch, proposal)
            self.tile_batch = proposal

    def _try(
        self, image: torch.Tensor, chunk: list[_Tile], tile_hw: tuple[int, int]
    ) -> torch.Tensor | None:
        th, tw = tile_hw
        if (th, tw) == tuple(image.shape[2:]):
            batch = image[chunk[0][0] : chunk[-1][0] + 1]  # whole frames: a view, no copy
        else:
            batch = torch.stack([image[f, :, y : y + th, x : x + tw] for f, y, x in chunk])
        try:
            return self.fn(batch)
        except (torch.OutOfMemoryError, RuntimeError) as exc:
            if not (_is_oom(exc) and self.adapt and self._shrink(len(chunk), max(th, tw))):
                raise
        del batch
        if self.on_oom is not None:
            self.on_oom()
        return None

    def _shrink(self, tried: int, current: int) -> bool:
        """Halve the batch (below the ``tried`` tiles that failed), else the tile."""
        if min(self.tile_batch, tried) > 1:
            failed = min(self.tile_batch, tried)
            self._oom_batch = failed if self._oom_batch is None else min(self._oom_batch, failed)
            smaller_batch = failed // 2
            logger.warning("out of memory: tile batch %d -> %d", tried, smaller_batch)
            self.tile_batch = smaller_batch
            return True
        start = current if self.tile is None else min(self.tile, current)
        smaller = max(start // 2, self.min_tile)
        if smaller >= start:
            return False
        logger.warning("out of memory: tile %d -> %d px", start, smaller)
        self.tile = smaller
        return True


def run_tiled(
    fn: TileFn, image_nchw: torch.Tensor, scale: int, tile: int, overlap: int, tile_batch: int
) -> torch.Tensor:
    """Upscale ``image_nchw`` with ``fn`` tile by tile; a pure function (OOM propagates).

    Returns (N, C, H*scale, W*scale), float32 or wider where tiles were blended.
    """
    runner = TileRunner(fn, scale, tile=tile, overlap=overlap, tile_batch=tile_batch, adapt=False)
    return runner(image_nchw)


@dataclass(frozen=True)
class TilePlan:
    """What to start with: ``tile`` px edge (None: whole frames) and tiles per call."""

    tile: int | None
    tile_batch: int


def bytes_per_input_pixel(scale: int, element_bytes: int) -> int:
    """Rough activation memory per input pixel: 64 feature maps at input size plus the
    upscaled stages. Off by a few times for some architectures; the OOM fallback fixes it."""
    return element_bytes * _FEATURES * (8 + 2 * scale * scale)


def pixel_budget(free_bytes: int | None, scale: int, element_bytes: int) -> int:
    """Input pixels one forward pass may hold: free memory less a reserve, or on CPU
    (``free_bytes=None``) a fixed :data:`CPU_PIXEL_BUDGET`."""
    if free_bytes is None:
        return CPU_PIXEL_BUDGET
    reserve = max(_MIN_RESERVE_BYTES, int(free_bytes * _RESERVE_FRACTION))
    return max(0, free_bytes - reserve) // bytes_per_input_pixel(scale, element_bytes)


def plan_tiles(
    option: TileOption,
    frame_hw: tuple[int, int],
    scale: int,
    overlap: int,
    *,
    free_bytes: int | None,
    element_bytes: int = 4,
    tileable: bool = True,
    max_batch: int | None = None,
) -> TilePlan:
    """Choose the starting tile and tile batch for frames of ``frame_hw`` (H, W)."""
    budget = pixel_budget(free_bytes, scale, element_bytes)
    h, w = frame_hw
    tile: int | None
    if option is None or option == 0 or (option == "auto" and (not tileable or h * w <= budget)):
        tile, per_call = None, h * w
    elif option == "auto":
        tile = max(math.isqrt(budget) // 8 * 8, MIN_TILE, 2 * overlap + 1)
        per_call = tile * tile
    else:
        tile, per_call = int(option), int(option) ** 2
    batch = max(1, budget // max(1, per_call))
    if max_batch is not None and tile is None:
        batch = min(batch, max_batch)
    return TilePlan(tile=tile, tile_batch=batch)


def free_memory_bytes(device: str) -> int | None:
    """Free memory of an accelerator (CUDA, Ascend) in bytes; None for CPU."""
    dev = torch.device(device)
    if dev.type == "cuda":
        free, _ = torch.cuda.mem_get_info(dev)
        cached = torch.cuda.memory_reserved(dev) - torch.cuda.memory_allocated(dev)
        return int(free + cached)
    npu = getattr(torch, "npu", None)
    if dev.type == "npu" and npu is not None and hasattr(npu, "mem_get_info"):
        return int(npu.mem_get_info(dev)[0])
    return None
