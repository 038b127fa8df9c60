"""Generation on real GPUs: the tiny random Wan2.1 I2V on one GPU (bfloat16, the CUDA
default) and, with two or more, a group over NCCL (CFG parallel, then Ulysses) whose
video matches the one-GPU video closely (bfloat16 kernels need not sum in one order)."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest

import vidshard
from gen_fixtures import test_image, tiny_wan_i2v

pytestmark = pytest.mark.gpu
pytest.importorskip("diffusers")


def frames_of(path: Path) -> np.ndarray:
    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def generate(tmp_path: Path, name: str, devices: str, **layout: object) -> np.ndarray:
    model = tiny_wan_i2v(tmp_path)
    image = test_image(tmp_path / "first.png", (48, 40))
    result = vidshard.generate(
        image=image,
        output=tmp_path / f"{name}.mp4",
        model=str(model),
        prompt="a cat walks",
        size="32x32",
        frames=5,
        steps=3,
        seed=5,
        devices=devices,
        **layout,
    )
    assert result.frames == 5
    return frames_of(result.output)


def test_one_gpu(tmp_path: Path) -> None:
    assert generate(tmp_path, "one", "cuda:0").shape == (5, 32, 32, 3)


def test_a_group_over_nccl_matches_one_gpu(tmp_path: Path) -> None:
    import torch

    if torch.cuda.device_count() < 2:
        pytest.skip("needs two GPUs")
    one = generate(tmp_path, "one", "cuda:0").astype(int)
    for name, layout in (("cfg", {"cfg_parallel": True}), ("ulysses", {"ulysses": 2})):
        two = generate(tmp_path, name, "cuda:0,cuda:1", **layout).astype(int)
        assert np.abs(one - two).mean() < 2.0, name
