"""Upscalers: resamplers, identity and spandrel files; deterministic and batch-independent.

Batch independence: resamplers and the identity work frame by frame, so one-by-one and
batched runs are identical. Conv nets on CPU may pick different kernels for different
batch sizes, so their float results can differ in the last bits; after rounding to uint8
that is at most 1 level on rare pixels, which is the tolerance used here.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from models_fixtures import build_compact, build_esrgan, build_swinir, random_frames
from vidshard.errors import ModelError
from vidshard.models import (
    IdentityModel,
    Model,
    ModelOptions,
    ResampleUpscaler,
    SpandrelUpscaler,
    build_model,
    resolve_model,
)

pytestmark = pytest.mark.filterwarnings("ignore:torch.meshgrid")


def pil_resize(frames: np.ndarray, scale: int, method: Image.Resampling) -> np.ndarray:
    _, h, w, _ = frames.shape
    return np.stack(
        [np.asarray(Image.fromarray(f).resize((w * scale, h * scale), method)) for f in frames]
    )


@pytest.mark.parametrize(
    ("method", "scale", "pil_method"),
    [
        ("lanczos", 2, Image.Resampling.LANCZOS),  # the default scale
        ("lanczos", 3, Image.Resampling.LANCZOS),  # any integer scale
        ("bicubic", 2, Image.Resampling.BICUBIC),
        ("bicubic", 4, Image.Resampling.BICUBIC),
    ],
)
def test_resampler_matches_pillow(method: str, scale: int, pil_method: Image.Resampling) -> None:
    frames = random_frames(3, 16, 24)
    out = ResampleUpscaler(method, scale).run(frames)
    assert out.shape == (3, 16 * scale, 24 * scale, 3)
    assert out.dtype == np.uint8
    assert np.array_equal(out, pil_resize(frames, scale, pil_method))


@pytest.mark.parametrize("method", ["lanczos", "bicubic"])
def test_resampler_at_scale_one_returns_a_copy(method: str) -> None:
    frames = random_frames(2, 8, 8)
    out = ResampleUpscaler(method, 1).run(frames)
    assert np.array_equal(out, frames)
    assert out is not frames


@pytest.mark.parametrize(
    ("method", "scale", "message"),
    [
        ("nearest", 2, "expected resampling method lanczos or bicubic, got 'nearest'"),
        ("lanczos", 0, "expected scale >= 1, got 0"),
    ],
)
def test_resampler_refuses_bad_arguments(method: str, scale: int, message: str) -> None:
    with pytest.raises(ModelError, match=message):
        ResampleUpscaler(method, scale)


def test_identity_returns_the_same_array() -> None:
    frames = random_frames(2, 8, 8)
    model = IdentityModel()
    model.load("cpu")
    assert model.run(frames) is frames
    assert model.spec.scale == 1


@pytest.mark.parametrize(
    ("batch", "got"),
    [
        (np.zeros((16, 16, 3), np.uint8), r"got \(16, 16, 3\) uint8"),  # one frame, no N
        (np.zeros((1, 16, 16, 3), np.float32), r"got \(1, 16, 16, 3\) float32"),  # floats
        (np.zeros((1, 16, 16, 4), np.uint8), r"got \(1, 16, 16, 4\) uint8"),  # RGBA
        ([[0]], "got list"),  # not an array
    ],
)
def test_bad_batches_are_refused(batch: object, got: str) -> None:
    with pytest.raises(ModelError, match=r"expected an \(N, H, W, 3\) uint8 batch, " + got):
        ResampleUpscaler("lanczos", 2).run(batch)  # type: ignore[arg-type]


def loaded(name: str, tmp_path: Path, **options: object) -> Model:
    """Resolve, build and load a model on CPU; names starting with "fixture:" are built."""
    builders = {"fixture:compact": build_compact, "fixture:esrgan": build_esrgan}
    if name in builders:
        name = str(builders[name](tmp_path, scale=2).path)
    model = build_model(resolve_model(name, options=ModelOptions(**options)))  # type: ignore[arg-type]
    model.load("cpu")
    return model


@pytest.mark.parametrize(
    "name",
    [
        "lanczos",  # classical
        "bicubic",  # classical
        "identity",  # no-op
        "fixture:compact",  # Real-ESRGAN Compact x2
        "fixture:esrgan",  # ESRGAN x2
    ],
)
def test_same_batch_twice_gives_identical_output(name: str, tmp_path: Path) -> None:
    model = loaded(name, tmp_path)
    frames = random_frames(3, 16, 24)
    assert np.array_equal(model.run(frames), model.run(frames.copy()))


@pytest.mark.parametrize(
    ("name", "tolerance"),
    [
        ("lanczos", 0),  # frame by frame anyway: exact
        ("bicubic", 0),
        ("identity", 0),
        ("fixture:compact", 1),  # conv net: kernels may differ by batch size, <= 1 level
        ("fixture:esrgan", 1),
    ],
)
def test_frames_one_by_one_equal_the_batch(name: str, tolerance: int, tmp_path: Path) -> None:
    model = loaded(name, tmp_path)
    frames = random_frames(4, 16, 24, seed=3)
    batched = model.run(frames)
    single = np.concatenate([model.run(frames[i : i + 1]) for i in range(len(frames))])
    assert np.abs(batched.astype(np.int16) - single).max() <= tolerance


@pytest.mark.parametrize(
    ("tile", "overlap", "changed"),
    [
        # overlap 4x Compact's receptive radius (4 px): seams blend out, rounding only
        (40, 16, 0.01),
        # overlap 2x the radius: tile borders leak into the blend, still <= 1 level
        (24, 8, 0.1),
    ],
)
def test_spandrel_tiled_matches_untiled(
    tile: int, overlap: int, changed: float, tmp_path: Path
) -> None:
    path = build_compact(tmp_path, scale=2, num_conv=2).path
    frames = random_frames(2, 48, 64, seed=5)
    untiled = SpandrelUpscaler(path, resolve_model(str(path)).spec, ModelOptions(tile=None))
    tiled = SpandrelUpscaler(
        path, resolve_model(str(path)).spec, ModelOptions(tile=tile, tile_overlap=overlap)
    )
    untiled.load("cpu")
    tiled.load("cpu")
    diff = np.abs(untiled.run(frames).astype(np.int16) - tiled.run(frames))
    assert diff.max() <= 1
    assert (diff > 0).mean() < changed


def test_spandrel_output_is_uint8_of_the_scaled_size(tmp_path: Path) -> None:
    model = loaded("fixture:compact", tmp_path)
    out = model.run(random_frames(2, 16, 24))
    assert (out.shape, out.dtype) == ((2, 32, 48, 3), np.uint8)


def test_spandrel_accepts_read_only_and_empty_batches(tmp_path: Path) -> None:
    model = loaded("fixture:compact", tmp_path)
    frames = random_frames(1, 16, 24)
    frames.flags.writeable = False  # as decoded frames sometimes are
    assert model.run(frames).shape == (1, 32, 48, 3)
    assert model.run(np.zeros((0, 16, 24, 3), np.uint8)).shape == (0, 32, 48, 3)


def test_bf16_on_cpu_is_close_to_fp32(tmp_path: Path) -> None:
    path = str(build_compact(tmp_path, scale=2).path)
    frames = random_frames(1, 16, 24)
    fp32 = loaded(path, tmp_path).run(frames)
    bf16 = loaded(path, tmp_path, precision="bf16").run(frames)
    assert np.abs(fp32.astype(np.int16) - bf16).mean() < 4


@pytest.mark.parametrize(
    ("precision", "build", "message"),
    [
        # fp16 passes resolve (the architecture supports it) but a CPU cannot run it
        ("fp16", build_compact, "precision fp16 needs a GPU or NPU, device cpu given"),
    ],
)
def test_load_refuses_what_the_device_cannot_do(
    precision: str, build: object, message: str, tmp_path: Path
) -> None:
    path = str(build_compact(tmp_path, scale=2).path)
    model = build_model(resolve_model(path, options=ModelOptions(precision=precision)))
    with pytest.raises(ModelError, match=message):
        model.load("cpu")


def test_spandrel_run_before_load_is_refused(tmp_path: Path) -> None:
    model = build_model(resolve_model(str(build_compact(tmp_path, scale=2).path)))
    with pytest.raises(ModelError, match=r"expected load\(device\) before run\(\)"):
        model.run(random_frames(1, 16, 16))


def test_spandrel_load_checks_the_file_still_matches_the_spec(tmp_path: Path) -> None:
    path = build_compact(tmp_path, scale=2).path
    spec = resolve_model(str(path)).spec
    build_compact(tmp_path, scale=4, name=path.stem)  # the file changed since resolve
    with pytest.raises(ModelError, match="upscales x4, x2 expected"):
        SpandrelUpscaler(path, spec).load("cpu")


def test_transformer_frames_below_its_minimum_size_are_padded(tmp_path: Path) -> None:
    # SwinIR wants >= 16 px; spandrel pads and crops back, so 12x12 frames still work
    model = loaded(str(build_swinir(tmp_path, scale=2).path), tmp_path)
    assert model.run(random_frames(1, 12, 12)).shape == (1, 24, 24, 3)


class OomAbovePixels:
    """Wraps a network: out of memory above ``limit_px`` input pixels per call."""

    def __init__(self, inner: object, limit_px: int) -> None:
        self.inner, self.limit_px = inner, limit_px

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] * x.shape[2] * x.shape[3] > self.limit_px:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 8.00 GiB")
        return self.inner(x)  # type: ignore[operator]


@pytest.mark.parametrize(
    ("tile", "limit_px"),
    [
        ("auto", 48 * 64),  # one whole frame per call fits: the batch halves to 1
        ("auto", 1200),  # no frame fits: tiles of 32 px, then 17 px
        (40, 1000),  # fixed tiles of 40 px do not fit: halved to 20 px
    ],
)
def test_spandrel_out_of_memory_falls_back_and_keeps_every_frame(
    tile: object, limit_px: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = build_compact(tmp_path, scale=2, num_conv=2).path
    spec = resolve_model(str(path)).spec
    reference = SpandrelUpscaler(path, spec, ModelOptions(tile=None))
    model = SpandrelUpscaler(path, spec, ModelOptions(tile=tile, tile_overlap=8))  # type: ignore[arg-type]
    reference.load("cpu")
    model.load("cpu")
    monkeypatch.setattr(model, "_descriptor", OomAbovePixels(model._descriptor, limit_px))
    frames = random_frames(3, 48, 64, seed=2)
    out = model.run(frames)
    assert out.shape == (3, 96, 128, 3)
    assert np.abs(out.astype(np.int16) - reference.run(frames)).max() <= 2


def test_spandrel_tiling_off_lets_out_of_memory_through(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = build_compact(tmp_path, scale=2).path
    model = SpandrelUpscaler(path, resolve_model(str(path)).spec, ModelOptions(tile=None))
    model.load("cpu")
    monkeypatch.setattr(model, "_descriptor", OomAbovePixels(model._descriptor, 100))
    with pytest.raises(torch.OutOfMemoryError):
        model.run(random_frames(1, 16, 16))
