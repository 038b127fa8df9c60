"""Tiled inference: tile layout, feathered blending, and the out-of-memory fallback."""

from __future__ import annotations

import pytest
import torch

from vidshard.errors import ConfigError, ModelError
from vidshard.models.tiling import (
    CPU_PIXEL_BUDGET,
    TilePlan,
    TileRunner,
    feather_ramp,
    pixel_budget,
    plan_tiles,
    run_tiled,
    tile_starts,
)


def nearest(scale: int):  # type: ignore[no-untyped-def]
    """A pointwise model: nearest-neighbour upscale."""

    def fn(x: torch.Tensor) -> torch.Tensor:
        return x.repeat_interleave(scale, dim=-1).repeat_interleave(scale, dim=-2)

    return fn


def image(n: int = 2, h: int = 37, w: int = 53, seed: int = 0) -> torch.Tensor:
    return torch.rand((n, 3, h, w), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize(
    ("length", "tile", "overlap", "starts"),
    [
        (10, 16, 4, [0]),  # frame smaller than the tile: one tile
        (16, 16, 4, [0]),  # exact fit
        (28, 16, 4, [0, 12]),  # last tile pulled back to the edge
        (40, 16, 4, [0, 12, 24]),  # stride 12 lands exactly on the edge
        (41, 16, 4, [0, 12, 24, 25]),  # one pixel more: an extra, mostly overlapping tile
        (17, 16, 0, [0, 1]),  # no overlap still covers everything
    ],
)
def test_tile_starts(length: int, tile: int, overlap: int, starts: list[int]) -> None:
    assert tile_starts(length, tile, overlap) == starts


def test_tile_starts_refuses_overlap_as_large_as_the_tile() -> None:
    with pytest.raises(ConfigError, match="tile 8 must be larger than tile overlap 8"):
        tile_starts(20, 8, 8)


E = 1e-4  # the near-zero weight of an overlap's outer quarter


@pytest.mark.parametrize(
    ("length", "ramp", "left", "right", "expected"),
    [
        (4, 8, False, False, [1, 1, 1, 1]),  # a tile alone: all ones
        (6, 0, True, True, [1] * 6),  # no overlap: no ramp
        (8, 4, True, False, [E, 1 / 3, 2 / 3, 1, 1, 1, 1, 1]),  # ramp at the left only
        (8, 4, False, True, [1, 1, 1, 1, 1, 2 / 3, 1 / 3, E]),  # right only
        (6, 4, True, True, [E, 1 / 3, 2 / 3, 2 / 3, 1 / 3, E]),  # both sides meet
        (4, 2, True, False, [1 / 3, 2 / 3, 1, 1]),  # ramp too short for a margin: linear
    ],
)
def test_feather_ramp(
    length: int, ramp: int, left: bool, right: bool, expected: list[float]
) -> None:
    weights = feather_ramp(length, ramp, left=left, right=right)
    assert torch.allclose(weights, torch.tensor(expected, dtype=torch.float32))
    assert bool((weights > 0).all())  # never zero: every pixel gets a weight


@pytest.mark.parametrize(
    ("scale", "tile", "overlap", "tile_batch"),
    [
        (2, 16, 4, 1),  # many tiles, one per call
        (2, 16, 0, 3),  # no overlap, odd batches across frames
        (2, 20, 8, 64),  # every tile of both frames in one call
        (2, 64, 8, 2),  # tile larger than the frame: whole frames
        (2, 17, 5, 5),  # odd sizes
        (3, 24, 6, 4),  # x3
        (1, 16, 4, 2),  # x1
    ],
)
def test_pointwise_model_tiled_equals_untiled_exactly(
    scale: int, tile: int, overlap: int, tile_batch: int
) -> None:
    fn = nearest(scale)
    x = image()
    out = run_tiled(fn, x, scale, tile, overlap, tile_batch)
    assert out.shape == (2, 3, 37 * scale, 53 * scale)
    assert torch.equal(out, fn(x))  # bit for bit, not approximately


def conv_model(seed: int = 0) -> torch.nn.Module:
    """Two 3x3 convolutions (receptive field radius 2) then a x2 pixel shuffle."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return torch.nn.Sequential(
            torch.nn.Conv2d(3, 8, 3, padding=1),
            torch.nn.ReLU(),
            torch.nn.Conv2d(8, 12, 3, padding=1),
            torch.nn.PixelShuffle(2),
        ).eval()


@pytest.mark.parametrize(
    ("tile", "overlap", "tolerance"),
    [
        # overlap >= 4x the receptive field radius (2 px): the outer quarter of each
        # overlap, where a tile sees its zero padding, is weighted ~0 -> about 2e-5 off
        (32, 8, 1e-4),
        (24, 10, 1e-4),  # more tiles, same
        (48, 16, 1e-4),  # tile larger than the frame height
    ],
)
def test_conv_model_tiled_is_close_to_untiled(tile: int, overlap: int, tolerance: float) -> None:
    model = conv_model()
    x = image(1, 40, 72)
    with torch.inference_mode():
        tiled = run_tiled(model, x, 2, tile, overlap, 4)
        untiled = model(x)
    assert (tiled - untiled).abs().max().item() < tolerance


def test_overlap_smaller_than_the_receptive_field_shows_seams() -> None:
    # why the overlap matters: without it the tile borders differ visibly
    model = conv_model()
    x = image(1, 40, 72)
    with torch.inference_mode():
        seams = (run_tiled(model, x, 2, 24, 0, 4) - model(x)).abs().max().item()
        blended = (run_tiled(model, x, 2, 24, 8, 4) - model(x)).abs().max().item()
    assert seams > 100 * blended


def test_wrong_tile_output_shape_is_reported() -> None:
    with pytest.raises(ModelError, match=r"expected tile output .* got \(1, 3, 16, 16\)"):
        run_tiled(nearest(1), image(1, 32, 32), 2, 16, 4, 1)


class OomAbove:
    """A fake model that runs out of memory above ``limit_px`` input pixels per call."""

    def __init__(self, limit_px: int, scale: int = 2, error: type[Exception] | None = None):
        self.limit_px, self.fn = limit_px, nearest(scale)
        self.error = error
        self.calls: list[tuple[int, ...]] = []

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self.calls.append(tuple(x.shape))
        if x.shape[0] * x.shape[2] * x.shape[3] > self.limit_px:
            if self.error is not None:
                raise self.error("CUDA out of memory. Tried to allocate 2.00 GiB")
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return self.fn(x)


@pytest.mark.parametrize(
    ("limit_px", "tile", "tile_batch", "final_tile", "final_batch"),
    [
        (10_000, None, 4, None, 2),  # two 64x48 frames fit: batch 4 -> 2, no tiling
        (3072, None, 4, None, 1),  # one frame fits: batch -> 1
        (1500, None, 4, 32, 1),  # no frame fits: batch -> 1, then tile 64 -> 32
        (300, None, 1, 17, 1),  # halve down to the floor (2 x overlap + 1 = 17)
        (1100, 32, 8, 32, 1),  # fixed tiles: only the tile batch halves
        (600, 32, 1, 17, 1),  # fixed tile too big: 32 -> 17
    ],
)
def test_out_of_memory_halves_batch_then_tile_and_drops_nothing(
    limit_px: int,
    tile: int | None,
    tile_batch: int,
    final_tile: int | None,
    final_batch: int,
) -> None:
    fake = OomAbove(limit_px)
    emptied: list[int] = []
    runner = TileRunner(
        fake, 2, tile=tile, overlap=8, tile_batch=tile_batch, on_oom=lambda: emptied.append(1)
    )
    x = image(4, 48, 64)
    out = runner(x)
    assert torch.equal(out, nearest(2)(x))  # every frame, every pixel
    assert (runner.tile, runner.tile_batch) == (final_tile, final_batch)
    assert len(emptied) == sum(1 for s in fake.calls if s[0] * s[2] * s[3] > limit_px)


@pytest.mark.parametrize(
    ("limit_px", "proposal", "expected_batch"),
    [
        # memory freed up: the batch rises to what the free memory allows
        (10**9, 8, 8),
        # a proposal at or above a size that ran out of memory stops just below it
        (10_000, 8, 3),
        # a smaller proposal never shrinks the batch (only an OOM does)
        (10**9, 1, 2),
    ],
)
def test_batch_grows_again_when_memory_allows(
    limit_px: int, proposal: int, expected_batch: int
) -> None:
    fake = OomAbove(limit_px)
    asked: list[int] = []

    def grow(current: int) -> int:
        asked.append(current)
        return proposal

    start = 4 if limit_px < 10**9 else 2  # with the OOM limit: 4 fails, falls to 2
    runner = TileRunner(fake, 2, tile=None, overlap=8, tile_batch=start, grow=grow, recheck_every=2)
    x = image(24, 48, 64)
    assert torch.equal(runner(x), nearest(2)(x))  # no frame dropped either way
    assert asked  # re-checked every few batches
    assert runner.tile_batch == expected_batch


def test_what_the_runner_learns_sticks_for_the_next_frames() -> None:
    fake = OomAbove(1500)
    runner = TileRunner(fake, 2, tile=None, overlap=8, tile_batch=4)
    runner(image(4, 48, 64))
    fake.calls.clear()
    runner(image(4, 48, 64, seed=1))
    assert all(s[0] * s[2] * s[3] <= 1500 for s in fake.calls)  # no OOM the second time


@pytest.mark.parametrize(
    ("error", "adapt"),
    [
        (None, False),  # adapt off (tiling disabled by the user): the OOM propagates
        (RuntimeError, False),  # a plain RuntimeError OOM (torch_npu style), adapt off
    ],
)
def test_out_of_memory_propagates_without_adapt(error: type[Exception] | None, adapt: bool) -> None:
    runner = TileRunner(
        OomAbove(100, error=error), 2, tile=None, overlap=8, tile_batch=2, adapt=adapt
    )
    with pytest.raises(RuntimeError, match="out of memory"):
        runner(image(2, 32, 32))


def test_out_of_memory_at_the_smallest_tile_propagates() -> None:
    runner = TileRunner(OomAbove(10), 2, tile=None, overlap=8, tile_batch=1)
    with pytest.raises(torch.OutOfMemoryError):
        runner(image(1, 48, 64))
    assert runner.tile == 17  # it tried every size down to the floor


def test_runtime_error_with_out_of_memory_text_is_handled_as_oom() -> None:
    runner = TileRunner(OomAbove(1500, error=RuntimeError), 2, tile=None, overlap=8, tile_batch=2)
    x = image(2, 48, 64)
    assert torch.equal(runner(x), nearest(2)(x))


def test_other_runtime_errors_propagate_unchanged() -> None:
    def broken(x: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("shape mismatch")

    with pytest.raises(RuntimeError, match="shape mismatch"):
        TileRunner(broken, 2, tile=None, overlap=8, tile_batch=2)(image(1, 16, 16))


@pytest.mark.parametrize(
    ("option", "frame_hw", "free_bytes", "expected"),
    [
        # CPU, small frames: untiled, as many frames per call as the 8 MP budget holds
        ("auto", (48, 64), None, TilePlan(None, CPU_PIXEL_BUDGET // (48 * 64))),
        # CPU, a 16 MP frame: tiles of sqrt(8 MP) rounded down to 8 px
        ("auto", (4000, 4000), None, TilePlan(2824, 1)),
        # tiling off: whole frames even when they are huge
        (None, (4000, 4000), None, TilePlan(None, 1)),
        (0, (48, 64), None, TilePlan(None, CPU_PIXEL_BUDGET // (48 * 64))),
        # a fixed tile: batch from the budget
        (512, (4000, 4000), None, TilePlan(512, CPU_PIXEL_BUDGET // 512**2)),
        # an accelerator with 2 GiB free: (2 GiB - 512 MiB reserve) / 10 KiB per pixel at
        # x4 fp32 = 157286 px -> tile 392
        ("auto", (1080, 1920), 2 * 1024**3, TilePlan(392, 1)),
        # an accelerator with nothing free: the smallest tile, one per call
        ("auto", (1080, 1920), 0, TilePlan(33, 1)),
    ],
)
def test_plan_tiles(
    option: object, frame_hw: tuple[int, int], free_bytes: int | None, expected: TilePlan
) -> None:
    plan = plan_tiles(option, frame_hw, 4, 16, free_bytes=free_bytes)  # type: ignore[arg-type]
    assert plan == expected


def test_plan_tiles_keeps_a_model_that_tiles_itself_whole() -> None:
    plan = plan_tiles("auto", (4000, 4000), 2, 16, free_bytes=None, tileable=False)
    assert plan.tile is None


def test_plan_tiles_caps_frames_per_call_at_batch_size() -> None:
    assert plan_tiles("auto", (48, 64), 2, 16, free_bytes=None, max_batch=3).tile_batch == 3


def test_pixel_budget_grows_with_free_memory_and_shrinks_with_scale() -> None:
    assert pixel_budget(8 * 1024**3, 2, 4) > pixel_budget(4 * 1024**3, 2, 4)
    assert pixel_budget(8 * 1024**3, 4, 4) < pixel_budget(8 * 1024**3, 2, 4)
    assert pixel_budget(8 * 1024**3, 4, 2) > pixel_budget(8 * 1024**3, 4, 4)  # fp16
