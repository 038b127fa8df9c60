"""The generate task's options and seed 002's request: each value checked once, each
problem named the way its caller wrote it."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from vidshard.errors import ConfigError
from vidshard.generation.types import CacheSettings, Layout
from vidshard.service.routers.compat import GenerationSubmitRequest, seed_002_message
from vidshard.tasks.generate import GenerateParams, GenerateTask, parse_size
from vidshard.tasks.options import build_options, options_from_request

BASE = {"model": "wan", "prompt": "a cat"}


def options(naming: str = "python", **values: object) -> GenerateParams:
    built = build_options(GenerateParams, {**BASE, **values}, naming)  # type: ignore[arg-type]
    assert isinstance(built, GenerateParams)
    return built


@pytest.mark.parametrize(
    ("text", "size"),
    [("832x480", (832, 480)), ("1280*720", (1280, 720)), (" 640 X 368 ", (640, 368))],
)
def test_sizes_in_either_spelling(text: str, size: tuple[int, int]) -> None:
    assert options(size=text).size_wh == size
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["832", "832x", "x480", "-832x480", "832x480x3", "wide", ""])
def test_a_size_that_is_not_w_by_h(text: str) -> None:
    with pytest.raises(ConfigError, match=r"^--size: expected WIDTHxHEIGHT"):
        options("cli", size=text)


@pytest.mark.parametrize("text", ["830x480", "832x481", "8x8", "8192x480", "0x0"])
def test_a_size_off_the_grid_or_range(text: str) -> None:
    with pytest.raises(ConfigError, match=r"^size: expected sides that are multiples of 16"):
        options(size=text)


@pytest.mark.parametrize("frames", [4, 6, 80, 82, 1029])
def test_frames_must_be_4k_plus_1(frames: int) -> None:
    with pytest.raises(ConfigError, match=r"^params\.frames: "):
        options("http", frames=frames)


def test_the_layout_follows_the_options() -> None:
    assert options().layout == Layout(world=1)
    assert options(ulysses=2, cfg_parallel=True, fsdp=True, vae_parallel=True).layout == Layout(
        world=4, ulysses=2, cfg=2, fsdp=True, vae_parallel=True
    )


def test_cfg_parallel_needs_guidance_above_1() -> None:
    with pytest.raises(ConfigError, match="cfg_parallel needs guidance above 1"):
        options(cfg_parallel=True, guidance=1.0)


def test_the_attention_cache() -> None:
    assert options().cache is None
    assert options(attention_cache=True, steps=40, cache_end_step=37).cache == CacheSettings(
        12, 4, 37
    )
    with pytest.raises(ConfigError, match="outside the 10 steps"):
        options(attention_cache=True, steps=10)  # starts at 12 by default
    with pytest.raises(ConfigError, match=r"^--cache-interval: "):
        options("cli", attention_cache=True, cache_interval=1)


@pytest.mark.parametrize(
    ("values", "where"),
    [
        ({"seed": -1}, "seed"),
        ({"seed": 2**31}, "seed"),
        ({"steps": 0}, "steps"),
        ({"solver": "ddim"}, "solver"),
        ({"shift": 0}, "shift"),
        ({"ulysses": 0}, "ulysses"),
        ({"prompt": ""}, "prompt"),
        ({"prompt": "x" * 4001}, "prompt"),
        ({"typo": 1}, "typo"),
    ],
)
def test_bad_values_are_named(values: dict[str, object], where: str) -> None:
    with pytest.raises(ConfigError, match=rf"^{where}: "):
        options(**values)


def test_a_model_is_needed(tmp_path: Path) -> None:
    task = GenerateTask()
    access = SimpleNamespace(naming="http", file=lambda name, field: name, exists=lambda n: True)
    with pytest.raises(
        ConfigError, match=r"params\.model: give a Wan2\.1 .*default_generate_model"
    ):
        task.check(build_options(GenerateParams, {"prompt": "p"}, "http"), access)  # type: ignore[arg-type]
    access.naming = "cli"
    with pytest.raises(ConfigError, match=r"^--model: .* is not a diffusers model folder"):
        task.check(options(model=str(tmp_path)), access)  # type: ignore[arg-type]


def test_the_server_s_default_model_fills_a_request_without_one() -> None:
    settings = SimpleNamespace(default_generate_model="/models/wan")
    built = options_from_request(GenerateParams, {"prompt": "p"}, settings)  # type: ignore[arg-type]
    assert isinstance(built, GenerateParams) and built.model == "/models/wan"


SEED_BODY = {
    "prompt": "A white cat wearing sunglasses sits on a surfboard at the beach",
    "image_url": "https://example.com/input.jpg",
    "image_size": "1280*720",
    "num_frames": 81,
    "guidance_scale": 3.0,
    "infer_steps": 30,
    "seed": 42,
    "negative_prompt": "blurry, low quality",
    "vae_parallel": True,
    "ulysses_size": 8,
    "dit_fsdp": True,
    "t5_fsdp": True,
    "use_attentioncache": True,
    "start_step": 12,
    "attentioncache_interval": 4,
    "end_step": 37,
    "sample_solver": "unipc",
}


def test_seed_002_s_own_request_maps_onto_the_generate_task() -> None:
    request = GenerationSubmitRequest.model_validate(SEED_BODY).job_request()
    assert request.task == "generate" and request.input_url == SEED_BODY["image_url"]
    params = request.params
    assert params["size"] == "1280*720" and params["frames"] == 81
    assert (params["guidance"], params["steps"], params["seed"]) == (3.0, 30, 42)
    assert params["ulysses"] == 8 and params["fsdp"] and params["vae_parallel"]
    assert not params["cfg_parallel"]
    assert (params["cache_start_step"], params["cache_interval"], params["cache_end_step"]) == (
        12,
        4,
        37,
    )
    settings = SimpleNamespace(default_generate_model="/models/wan")
    built = options_from_request(GenerateParams, params, settings)  # type: ignore[arg-type]
    assert isinstance(built, GenerateParams)
    assert built.layout == Layout(world=8, ulysses=8, fsdp=True, vae_parallel=True)
    assert built.size_wh == (1280, 720) and built.negative_prompt == "blurry, low quality"


def test_seed_002_s_minimal_request_takes_the_seed_s_defaults() -> None:
    body = {"prompt": "A serene lake", "image_url": "https://picsum.photos/1280/720"}
    params = GenerationSubmitRequest.model_validate(body).job_request().params
    assert (params["size"], params["frames"], params["guidance"], params["steps"]) == (
        "1280*720",
        81,
        3.0,
        30,
    )
    assert params["negative_prompt"] == "" and params["cache_end_step"] is None


@pytest.mark.parametrize(
    "body",
    [
        {"prompt": "p"},  # no image
        {"prompt": "p", "image_url": "https://x/a.png", "image_path": "/a.png"},
        {"prompt": "p", "image_url": "https://x/a.png", "cfg_size": 3},
        {"prompt": "p", "image_url": "https://x/a.png", "surprise": 1},
    ],
)
def test_seed_002_requests_refused(body: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        GenerationSubmitRequest.model_validate(body)


def test_problems_are_told_in_seed_002_s_words() -> None:
    text = "params.frames: expected 4k+1 frames; params.ulysses: too big; params.cfg_parallel: x"
    assert (
        seed_002_message(text)
        == "num_frames: expected 4k+1 frames; ulysses_size: too big; cfg_size: x"
    )
    assert (
        seed_002_message("attention cache end_step: expected 13..30") == "end_step: expected 13..30"
    )
