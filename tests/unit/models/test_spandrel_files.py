"""Weights files through spandrel: build -> save -> resolve -> load -> compare.

The files come from ``tests/models_fixtures.py``: tiny random-weight networks built from
spandrel's own architecture modules, so spandrel must detect the same architecture and
scale, and the loaded network must give the saved network's outputs.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from models_fixtures import (
    BUILDERS,
    FORMATS,
    FixtureModel,
    build_compact,
    build_hat,
    build_swinir,
    random_frames,
    reference_output,
    write_unreadable_files,
)
from vidshard.errors import ModelError
from vidshard.models import ModelOptions, build_model, resolve_model
from vidshard.models.weights import load_descriptor

pytestmark = [
    pytest.mark.filterwarnings("ignore:torch.meshgrid"),  # inside spandrel's SwinIR / HAT
    pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated"),  # .pt: spandrel
]

ROUND_TRIPS = [
    # every architecture the fixtures build, as .pth and as .safetensors
    *[(arch, fmt, 2) for arch in BUILDERS for fmt in ("pth", "safetensors")],
    # every file format, on the cheapest network
    *[("Compact", fmt, 4) for fmt in FORMATS if fmt not in ("pth", "safetensors")],
    ("Compact", "pth", 4),  # Real-ESRGAN Compact x4 as well as x2
    ("ESRGAN", "pth", 4),  # ESRGAN x4: two upsampling stages
    ("SPAN", "pth", 4),
]


@pytest.mark.parametrize(("arch", "fmt", "scale"), ROUND_TRIPS)
def test_round_trip(arch: str, fmt: str, scale: int, tmp_path: Path) -> None:
    fixture = BUILDERS[arch](tmp_path, scale=scale, fmt=fmt)
    assert fixture.path.suffix == f".{fmt}"

    ref = resolve_model(str(fixture.path))
    assert (ref.kind, ref.target) == ("file", str(fixture.path.resolve()))
    assert (ref.spec.arch, ref.spec.scale, ref.spec.name) == (arch, scale, fixture.path.stem)

    # spandrel's network gives the saved network's output, bit for bit
    x = torch.rand((1, 3, 16, 20), generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        expected = fixture.module(x).clamp(0, 1)
    assert torch.equal(load_descriptor(fixture.path)(x), expected)

    # and vidshard's model, run as a worker would, gives the same frames
    model = build_model(pickle.loads(pickle.dumps(ref)))
    model.load("cpu")
    frames = random_frames(2, 16, 20)
    out = model.run(frames)
    assert out.shape == (2, 16 * scale, 20 * scale, 3)
    assert np.abs(out.astype(np.int16) - reference_output(fixture.module, frames)).max() <= 1


@pytest.mark.parametrize(
    ("build", "precisions"),
    [
        (build_compact, ("fp32", "fp16", "bf16")),  # convolutions: all three
        (build_swinir, ("fp32", "bf16")),  # spandrel: SwinIR not in fp16
        (build_hat, ("fp32", "bf16")),  # nor HAT
    ],
)
def test_precisions_come_from_the_architecture(
    build: Callable[..., FixtureModel], precisions: tuple[str, ...], tmp_path: Path
) -> None:
    assert resolve_model(str(build(tmp_path).path)).spec.precisions == precisions


@pytest.mark.parametrize(
    ("build", "scale", "precision", "message"),
    [
        # the weights are x4
        (build_compact, 2, "fp32", r"model compact_x4.pth \(Compact\) upscales x4, --scale 2"),
        # an architecture without fp16
        (build_hat, None, "fp16", r"model hat_x2.pth \(HAT\) runs in fp32, bf16, precision fp16"),
        (build_swinir, 2, "fp16", r"\(SwinIR\) runs in fp32, bf16, precision fp16 given"),
    ],
)
def test_requests_the_weights_cannot_meet_are_refused(
    build: Callable[..., FixtureModel],
    scale: int | None,
    precision: str,
    message: str,
    tmp_path: Path,
) -> None:
    path = build(tmp_path).path
    with pytest.raises(ModelError, match=message):
        resolve_model(str(path), scale=scale, options=ModelOptions(precision=precision))


def test_matching_scale_is_accepted(tmp_path: Path) -> None:
    path = build_compact(tmp_path, scale=4).path
    assert resolve_model(str(path), scale=4).spec.scale == 4


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("random_bytes", r"cannot read model file random\.pth: expected PyTorch or safetensors"),
        ("text", r"cannot read model file notes\.pth: expected PyTorch or safetensors"),
        ("unknown_arch", r"unknown\.pth: architecture not recognised by spandrel"),
        ("bad_safetensors", r"cannot read model file broken\.safetensors"),
        ("not_a_dict", r"tensor\.bin: .*expected a state dict, got Tensor"),
    ],
)
def test_files_spandrel_cannot_read_give_one_line_errors(
    kind: str, message: str, tmp_path: Path
) -> None:
    path = write_unreadable_files(tmp_path)[kind]
    with pytest.raises(ModelError, match=message) as info:
        resolve_model(str(path))
    assert "\n" not in str(info.value)


def test_fixture_builders_are_seeded(tmp_path: Path) -> None:
    a = build_compact(tmp_path / "a", seed=7).module.state_dict()
    b = build_compact(tmp_path / "b", seed=7).module.state_dict()
    c = build_compact(tmp_path / "c", seed=8).module.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)
