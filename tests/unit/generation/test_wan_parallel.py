"""Each parallel layout of the Wan runner equals one rank with the same seed.

The tiny random Wan2.1 I2V model (tests/gen_fixtures.py) runs on groups of spawned gloo
ranks (tests/gen_ranks.py); every group's rank-0 frames are compared with the frames of
one rank in this process. Exact (max abs diff 0.0): the ranks run the same float32 CPU
kernels on the same numbers, one thread each, so any difference is a bug in the split
(a branch with the wrong prompt, a shard in the wrong place), not rounding.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import av
import numpy as np
import pytest

from gen_fixtures import test_image, tiny_wan_i2v
from gen_ranks import Outcome, Step, TinyTileRunner, run_group, run_single
from vidshard.generation.types import CacheSettings, GenerationRequest, Layout

STEPS = 3


@pytest.fixture(scope="module")
def wan(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("wan")
    return tiny_wan_i2v(folder), test_image(folder / "first.png", (48, 40))


def _request(image: Path, out: Path, **changes: object) -> GenerationRequest:
    base = GenerationRequest(
        request_id="a",
        image=image,
        prompt="a cat walks on the grass",
        negative_prompt="blurry low quality",
        frames=5,
        size_wh=(32, 32),
        steps=STEPS,
        guidance=5.0,
        seed=7,
        solver="unipc",
        shift=3.0,
        cache=None,
        output=out / "a.mp4",
    )
    return replace(base, **changes)  # type: ignore[arg-type]


CACHE = CacheSettings(start_step=1, interval=2, end_step=None)


@pytest.fixture(scope="module")
def requests(
    wan: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, GenerationRequest]:
    _, image = wan
    out = tmp_path_factory.mktemp("out")
    return {
        "base": _request(image, out),
        "euler": _request(image, out, request_id="e", solver="euler", shift=5.0),
        "cache": _request(image, out, request_id="c", cache=CACHE),
        "seed": _request(image, out, request_id="s", seed=8),
    }


@pytest.fixture(scope="module")
def reference(
    wan: tuple[Path, Path], requests: dict[str, GenerationRequest]
) -> dict[str, np.ndarray]:
    """One rank's frames of every request, in this process."""
    model, _ = wan
    names = list(requests)
    outcomes = run_single(model, [Step(requests[name]) for name in names])
    return {name: outcome.value for name, outcome in zip(names, outcomes, strict=True)}


def _frames(outcomes: list[list[Outcome]]) -> list[np.ndarray]:
    """Rank 0's frames of each step; the other ranks returned None."""
    for rank_outcomes in outcomes[1:]:
        assert all(o.status == "ok" and o.value is None for o in rank_outcomes)
    assert all(o.status == "ok" for o in outcomes[0])
    return [o.value for o in outcomes[0]]


def _max_diff(a: np.ndarray, b: np.ndarray) -> float:
    assert a.shape == b.shape == (5, 32, 32, 3)
    return float(np.abs(a - b).max())


def _diffusers_frames(model, image, request, *, tiling: bool = False):  # type: ignore[no-untyped-def]
    """diffusers' own pipeline on one thread (the tiled VAE decode with the test tiles)."""
    import torch
    from diffusers import WanImageToVideoPipeline
    from PIL import Image

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        pipe = WanImageToVideoPipeline.from_pretrained(str(model), dtype=torch.float32)
        if tiling:
            pipe.vae.enable_tiling(16, 16, 8, 8)
        return pipe(
            image=Image.open(image).convert("RGB"),
            prompt=request.prompt,
            negative_prompt=request.negative_prompt,
            height=32,
            width=32,
            num_frames=5,
            num_inference_steps=STEPS,
            guidance_scale=request.guidance,
            generator=torch.Generator().manual_seed(request.seed),
            output_type="np",
        ).frames[0]
    finally:
        torch.set_num_threads(threads)


def test_one_rank_is_the_diffusers_pipeline(wan, requests, reference) -> None:
    """The runner's own loop reproduces WanImageToVideoPipeline.__call__ exactly."""
    model, image = wan
    request = requests["base"]
    frames = _diffusers_frames(model, image, request)
    assert _max_diff(frames, reference["base"]) == 0.0


def test_seed_decides_the_video(reference) -> None:
    # the same seed twice is covered by every equality below; another seed moves it
    assert _max_diff(reference["base"], reference["seed"]) > 1e-3
    # the solver and the cache change the video (so the tests below can tell them apart)
    assert _max_diff(reference["base"], reference["euler"]) > 1e-4
    assert _max_diff(reference["base"], reference["cache"]) > 0.0


def test_ulysses_2_equals_one_rank(wan, requests, reference, tmp_path) -> None:
    model, _ = wan
    names = ["base", "euler", "cache", "seed", "base"]
    outcomes = run_group(Layout(2, ulysses=2), model, [Step(requests[n]) for n in names], tmp_path)
    for name, frames in zip(names, _frames(outcomes), strict=True):
        assert _max_diff(frames, reference[name]) == 0.0, name


def test_cfg_2_equals_one_rank_and_cancels_together(wan, requests, reference, tmp_path) -> None:
    model, _ = wan
    plan = [
        Step(requests["base"]),
        Step(requests["cache"]),
        Step(requests["base"], stop_rank=1, stop_after=2),  # rank 1 alone asks, after step 2
        Step(requests["seed"]),  # the group still serves the next request
    ]
    outcomes = run_group(Layout(2, cfg=2), model, plan, tmp_path)
    for rank_outcomes in outcomes:
        cancelled = rank_outcomes[2]
        assert cancelled.status == "cancelled"
        assert "after step 2/3" in cancelled.value
        assert cancelled.steps == [1]  # both ranks stopped at the same step
        assert [o.status for o in rank_outcomes] == ["ok", "ok", "cancelled", "ok"]
    done = [o.value for i, o in enumerate(outcomes[0]) if i != 2]
    assert _max_diff(done[0], reference["base"]) == 0.0
    assert _max_diff(done[1], reference["cache"]) == 0.0
    assert _max_diff(done[2], reference["seed"]) == 0.0
    assert outcomes[0][0].steps == [1, 2, 3]


def test_cfg_2_by_ulysses_2_equals_one_rank(wan, requests, reference, tmp_path) -> None:
    model, _ = wan
    names = ["base", "cache"]
    outcomes = run_group(
        Layout(4, ulysses=2, cfg=2), model, [Step(requests[n]) for n in names], tmp_path
    )
    for name, frames in zip(names, _frames(outcomes), strict=True):
        assert _max_diff(frames, reference[name]) == 0.0, name


@pytest.mark.parametrize(
    "layout",
    [
        Layout(2, cfg=2, fsdp=True),  # FSDP over the two CFG branches
        Layout(2, ulysses=2, fsdp=True),  # FSDP with Ulysses
    ],
    ids=["fsdp-cfg2", "fsdp-ulysses2"],
)
def test_fsdp_equals_one_rank(wan, requests, reference, tmp_path, layout) -> None:
    model, _ = wan
    outcomes = run_group(layout, model, [Step(requests["base"])], tmp_path)
    assert _max_diff(_frames(outcomes)[0], reference["base"]) == 0.0


def test_parallel_vae_equals_one_rank_tiled_decode(wan, requests, reference, tmp_path) -> None:
    """Tiles spread over 2 ranks give exactly one device's tiled decode."""
    model, image = wan
    request = requests["base"]
    tiled_one = run_single(model, [Step(request)], Layout(1, vae_parallel=True), TinyTileRunner)
    outcomes = run_group(
        Layout(2, ulysses=2, vae_parallel=True),
        model,
        [Step(request)],
        tmp_path,
        runner_cls=TinyTileRunner,
    )
    assert _max_diff(_frames(outcomes)[0], tiled_one[0].value) == 0.0
    # tiling does change the picture (the tiles really were split and blended)
    assert _max_diff(tiled_one[0].value, reference["base"]) > 0.0
    # and the runner's tile loop is diffusers' own tiled_decode
    frames = _diffusers_frames(model, image, request, tiling=True)
    assert _max_diff(frames, tiled_one[0].value) == 0.0


@pytest.mark.parametrize("frames", [5, 9])
def test_mp4_has_exactly_the_frames_at_the_model_fps(wan, requests, tmp_path, frames) -> None:
    model, _ = wan
    request = replace(requests["base"], frames=frames, output=tmp_path / "video.mp4", steps=1)
    (outcome,) = run_single(model, [Step(request, write=True)])
    result = outcome.value
    assert result.output == request.output and result.frames == frames and result.fps == 16
    assert result.load_seconds > 0.0  # the first request after load reports it
    with av.open(str(request.output)) as container:
        stream = container.streams.video[0]
        assert stream.average_rate == 16
        assert stream.codec_context.pix_fmt == "yuv420p"
        assert (stream.codec_context.width, stream.codec_context.height) == (32, 32)
        assert sum(1 for _ in container.decode(video=0)) == frames
    assert [p.name for p in tmp_path.iterdir()] == ["video.mp4"]  # no temporary left
