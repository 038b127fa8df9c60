"""The CUDA paths, on a real GPU: discovery, visibility, spandrel in fp32/fp16, tiling."""

from __future__ import annotations

import json

import numpy as np
import pytest
from tests.clips import ClipSpec, write_clip
from tests.helpers import frame_times
from typer.testing import CliRunner

import vidshard
from models_fixtures import build_compact, random_frames
from vidshard.cli.app import app
from vidshard.devices import discover_devices
from vidshard.models import ModelOptions, build_model, resolve_model

pytestmark = pytest.mark.gpu


def test_discovery_lists_the_gpus():
    import torch

    found = [s for s in discover_devices() if s.device.kind == "cuda"]
    assert len(found) == torch.cuda.device_count()
    assert all(s.memory_total_bytes for s in found)
    result = CliRunner().invoke(app, ["devices", "--json"])
    assert result.exit_code == 0
    assert any(d["kind"] == "cuda" for d in json.loads(result.stdout)["devices"])


@pytest.mark.parametrize("precision", ["fp32", "fp16"])  # full and half precision
def test_spandrel_on_cuda_matches_cpu(tmp_path, precision):
    weights = build_compact(tmp_path, scale=2).path
    frames = random_frames(2, 48, 64, seed=1)
    outputs = {}
    for device in ("cpu", "cuda:0"):
        prec = precision if device != "cpu" else "fp32"
        model = build_model(resolve_model(str(weights), options=ModelOptions(precision=prec)))
        model.load(device)
        outputs[device] = model.run(frames).astype(np.int16)
    tolerance = 1 if precision == "fp32" else 4
    assert np.abs(outputs["cpu"] - outputs["cuda:0"]).max() <= tolerance


def test_tiled_matches_untiled_on_cuda(tmp_path):
    weights = build_compact(tmp_path, scale=2, num_conv=1).path
    frames = random_frames(1, 96, 128, seed=2)
    results = []
    for tile in (None, 48):
        model = build_model(
            resolve_model(str(weights), options=ModelOptions(tile=tile, tile_overlap=16))
        )
        model.load("cuda:0")
        results.append(model.run(frames).astype(np.int16))
    assert np.abs(results[0] - results[1]).max() <= 1


def test_upscale_on_every_gpu(tmp_path):
    weights = build_compact(tmp_path, scale=2).path
    source = write_clip(
        tmp_path / "in.mp4", ClipSpec(frames=48, size_wh=(160, 120), audio_languages=("eng",))
    )
    result = vidshard.upscale(
        source, tmp_path / "out.mp4", model=str(weights), devices="all", crf=0, preset="ultrafast"
    )
    assert result.size_wh == (320, 240)
    assert frame_times(result.output) == frame_times(source)
    assert {s.label.split("#")[0] for s in result.slots if s.frames} <= {
        f"cuda:{i}" for i in range(8)
    }


def test_two_workers_per_gpu_see_only_their_device(tmp_path):
    model_file = tmp_path / "probe_model.py"
    model_file.write_text(
        "import os\n"
        "import numpy as np\n"
        "from vidshard.models import ModelSpec\n"
        "class Probe:\n"
        "    def __init__(self):\n"
        "        self.spec = ModelSpec(name='probe', scale=1)\n"
        "    def load(self, device):\n"
        "        import torch\n"
        "        assert device == 'cuda:0', device\n"
        "        assert torch.cuda.device_count() == 1, torch.cuda.device_count()\n"
        "        assert os.environ['CUDA_VISIBLE_DEVICES'].isdigit()\n"
        "    def run(self, batch):\n"
        "        return batch\n"
    )
    source = write_clip(tmp_path / "in.mp4", ClipSpec(frames=24))
    result = vidshard.upscale(
        source, tmp_path / "out.mp4", model=f"{model_file}:Probe", devices="0", workers_per_device=2
    )
    assert result.frames == 24
