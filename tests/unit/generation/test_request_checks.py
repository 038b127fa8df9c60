"""check_request: a request the group could not run is a typed error naming the field,
raised on the coordinator from the configs alone."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from gen_fixtures import tiny_wan_i2v
from vidshard.errors import ConfigError, ModelError
from vidshard.generation.checks import check_request
from vidshard.generation.types import CacheSettings, Layout


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_wan_i2v(tmp_path_factory.mktemp("wan"))  # 2 heads, 16 px multiple


GOOD = {"frames": 5, "size_wh": (32, 32), "steps": 3, "guidance": 5.0}


def test_a_runnable_request_passes(model: Path) -> None:
    check_request(model, Layout(4, ulysses=2, cfg=2), **GOOD)  # type: ignore[arg-type]
    check_request(model, Layout(1), **{**GOOD, "guidance": 1.0})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("layout", "changes", "words"),
    [
        (Layout(1), {"frames": 6}, "frames: expected 4k+1"),  # not 4k+1
        (Layout(1), {"frames": 0}, "frames: expected 4k+1"),  # none at all
        (Layout(1), {"size_wh": (40, 32)}, "size: expected width and height multiples of 16"),
        (Layout(1), {"size_wh": (32, 24)}, "multiples of 16, got 32x24"),  # height off
        (Layout(1), {"steps": 0}, "steps: expected >= 1"),
        (Layout(1), {"solver": "ddim"}, "solver: expected one of unipc, euler"),
        (Layout(1), {"shift": 0.0}, "shift: expected > 0"),
        (Layout(1), {"fps": 0}, "fps: expected >= 1"),
        # cfg parallel needs a guided (unconditional) branch to put on the second rank
        (Layout(2, cfg=2), {"guidance": 1.0}, "guidance: cfg parallel"),
        # 4 does not divide the tiny model's 2 heads
        (Layout(4, ulysses=4), {}, "ulysses: expected a divisor of the model's 2 attention heads"),
        # 1 latent frame at 16x48: 1 x 1 x 3 tokens, odd
        (Layout(2, ulysses=2), {"frames": 1, "size_wh": (48, 16)}, "3 tokens, not divisible"),
        (Layout(1), {"cache": CacheSettings(1, 0, None)}, "interval: expected >= 1"),
        (Layout(1), {"cache": CacheSettings(3, 1, None)}, "start_step: expected 0..2"),
        (Layout(1), {"cache": CacheSettings(1, 1, 1)}, "end_step: expected 2..3"),
        (Layout(1), {"cache": CacheSettings(0, 1, 4)}, "end_step: expected 1..3"),
    ],
)
def test_unrunnable_requests_name_the_field(model, layout, changes, words) -> None:
    with pytest.raises(ConfigError, match=re.escape(words)):
        check_request(model, layout, **{**GOOD, **changes})


@pytest.mark.parametrize(
    ("world", "ulysses", "cfg", "words"),
    [
        (2, 1, 1, "expected ulysses x cfg = 1 x 1 = 1 ranks, got 2"),  # world too large
        (2, 2, 2, "= 4 ranks, got 2"),  # world too small
        (2, 1, 3, "cfg: expected 1 or 2, got 3"),
        (1, 0, 1, "ulysses: expected >= 1, got 0"),
    ],
)
def test_a_layout_that_does_not_add_up_is_refused(world, ulysses, cfg, words) -> None:
    with pytest.raises(ConfigError, match=re.escape(words)):
        Layout(world, ulysses=ulysses, cfg=cfg)


def test_a_folder_that_is_not_wan_i2v_is_a_model_error(model: Path, tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="not a directory"):
        check_request(tmp_path / "missing", Layout(1), **GOOD)  # type: ignore[arg-type]
    with pytest.raises(ModelError, match=r"model_index\.json"):
        check_request(tmp_path, Layout(1), **GOOD)  # type: ignore[arg-type]
    other = tmp_path / "other"
    other.mkdir()
    (other / "model_index.json").write_text(json.dumps({"_class_name": "FluxPipeline"}))
    with pytest.raises(ModelError, match="got 'FluxPipeline'"):
        check_request(other, Layout(1), **GOOD)  # type: ignore[arg-type]
