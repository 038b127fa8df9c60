"""ModelOptions: every value out of range is refused when the options are built."""

from __future__ import annotations

import pytest

from vidshard.errors import ConfigError, ModelError
from vidshard.models import ModelOptions


@pytest.mark.parametrize(
    "kwargs",
    [
        {},  # defaults: fp32, tile "auto", overlap 16
        {"precision": "fp16"},  # half precision (checked against the device at load)
        {"precision": "bf16"},  # bfloat16
        {"tile": None},  # tiling off
        {"tile": 0},  # tiling off, CLI style
        {"tile": 16, "tile_overlap": 0},  # the smallest tile, no overlap
        {"tile": 512, "tile_overlap": 32},  # a usual fixed tile
        {"batch_size": 1},  # one frame per forward pass
    ],
)
def test_valid_options_are_kept(kwargs: dict[str, object]) -> None:
    options = ModelOptions(**kwargs)  # type: ignore[arg-type]
    for key, value in kwargs.items():
        assert getattr(options, key) == value


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"precision": "fp8"}, ModelError, "precision 'fp8' not supported"),  # unknown name
        ({"precision": "FP16"}, ModelError, "expected one of fp32, fp16, bf16"),  # case matters
        ({"tile": -1}, ConfigError, "tile must be 'auto', 0 or an integer >= 16, got -1"),
        ({"tile": 8, "tile_overlap": 0}, ConfigError, "got 8"),  # below the 16 px floor
        ({"tile": "big"}, ConfigError, "got 'big'"),  # not a size
        ({"tile": 32.0}, ConfigError, "got 32.0"),  # a float is not a tile size
        ({"tile": 32, "tile_overlap": 16}, ConfigError, "larger than 2 x tile overlap (16)"),
        ({"tile_overlap": -4}, ConfigError, "tile overlap must be an integer >= 0, got -4"),
        ({"batch_size": 0}, ConfigError, "batch size must be an integer >= 1, got 0"),
        ({"batch_size": True}, ConfigError, "got True"),  # a bool is not a count
    ],
)
def test_invalid_options_are_refused(
    kwargs: dict[str, object], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message.replace("(", r"\(").replace(")", r"\)")):
        ModelOptions(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("tile", "tile_px", "off"),
    [
        ("auto", None, False),  # chosen at run time
        (None, None, True),  # off
        (0, None, True),  # off
        (64, 64, False),  # fixed
    ],
)
def test_tile_properties(tile: object, tile_px: int | None, off: bool) -> None:
    options = ModelOptions(tile=tile, tile_overlap=8)  # type: ignore[arg-type]
    assert options.tile_px == tile_px
    assert options.tiling_off is off
