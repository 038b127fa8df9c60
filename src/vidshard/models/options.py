"""How a model runs: precision, tiling and batch size, validated once when built.

These are the user's knobs (``--precision``, ``--tile``, ``--tile-overlap``,
``--batch-size``). They travel to the workers inside a :class:`~vidshard.models.ModelRef`,
so everything here is plain, frozen and picklable.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from vidshard.errors import ConfigError, ModelError
from vidshard.models.base import PRECISIONS

TileOption = int | Literal["auto"] | None

MIN_TILE = 16  # smallest tile edge in input pixels; below it models lose too much context


@dataclass(frozen=True)
class ModelOptions:
    """Run-time options of a model.

    ``tile``: ``"auto"`` picks a tile from free device memory (no tiling when the frame
    fits), an integer is the tile edge in input pixels, ``None`` or ``0`` turns tiling off.
    ``tile_overlap`` is the overlap between neighbouring tiles in input pixels; it should
    cover the model's receptive field so seams do not show. ``batch_size`` caps the frames
    per forward pass (``None``: as many as the engine hands over and memory allows).
    """

    precision: str = "fp32"
    tile: TileOption = "auto"
    tile_overlap: int = 16
    batch_size: int | None = None

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ModelError(
                f"precision {self.precision!r} not supported: expected one of "
                f"{', '.join(PRECISIONS)}"
            )
        if not _is_int(self.tile_overlap) or self.tile_overlap < 0:
            raise ConfigError(f"tile overlap must be an integer >= 0, got {self.tile_overlap!r}")
        _check_tile(self.tile, self.tile_overlap)
        if self.batch_size is not None and (not _is_int(self.batch_size) or self.batch_size < 1):
            raise ConfigError(f"batch size must be an integer >= 1, got {self.batch_size!r}")

    @property
    def tile_px(self) -> int | None:
        """The fixed tile edge, or None for "auto" and for no tiling."""
        return self.tile if isinstance(self.tile, int) and self.tile > 0 else None

    @property
    def tiling_off(self) -> bool:
        return self.tile is None or self.tile == 0


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_tile(tile: object, overlap: int) -> None:
    if tile is None or tile == "auto":
        return
    if not _is_int(tile) or not isinstance(tile, int) or tile < 0:
        raise ConfigError(f"tile must be 'auto', 0 or an integer >= {MIN_TILE}, got {tile!r}")
    if tile == 0:
        return
    if tile < MIN_TILE:
        raise ConfigError(f"tile must be 'auto', 0 or an integer >= {MIN_TILE}, got {tile}")
    if tile <= 2 * overlap:
        raise ConfigError(f"tile {tile} must be larger than 2 x tile overlap ({overlap})")


DEFAULT_OPTIONS = ModelOptions()  # the shared default (frozen, so safe to share)
