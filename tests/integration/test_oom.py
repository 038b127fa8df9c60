"""Out of memory in a worker: the tile batch, then the tile, halves; no frame is dropped."""

from __future__ import annotations

import av
import numpy as np
import pytest
from tests.clips import ClipSpec, write_clip
from tests.helpers import frame_times

import vidshard
from models_fixtures import build_compact

OOM_MODEL = """
import torch
from vidshard.models import ModelOptions, ModelSpec
from vidshard.models.upscale import SpandrelUpscaler

LIMIT_PX = {limit_px}


class OomCompact(SpandrelUpscaler):
    \"\"\"A real spandrel model whose forward pass runs out of memory above LIMIT_PX.\"\"\"

    def __init__(self):
        options = ModelOptions(tile="auto", tile_overlap=16, batch_size=4)
        super().__init__({weights!r}, ModelSpec(name="oom-compact", scale=2), options)

    def load(self, device):
        super().load(device)
        forward = self._descriptor

        def guarded(x):
            if LIMIT_PX and x.shape[0] * x.shape[2] * x.shape[3] > LIMIT_PX:
                raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 4.00 GiB")
            return forward(x)

        self._descriptor = guarded
"""


def decoded(path):
    """The encoder's own YUV planes: an RGB conversion would magnify a 1-level change."""
    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray() for f in container.decode(video=0)])


@pytest.mark.timeout(180)
def test_oom_halves_then_tiles_and_keeps_every_frame(tmp_path):
    weights = build_compact(tmp_path, scale=2, num_conv=1).path
    source = write_clip(tmp_path / "in.mp4", ClipSpec(frames=16, size_wh=(96, 64)))
    outputs = {}
    # 0: no limit; 9000 px: one 96x64 frame fits, a batch does not (batch halves);
    # 2000 px: not even one frame fits (tiles, halved until they fit)
    for limit_px in (0, 9000, 2000):
        model_file = tmp_path / f"oom_{limit_px}.py"
        model_file.write_text(OOM_MODEL.format(limit_px=limit_px, weights=str(weights)))
        result = vidshard.upscale(
            source,
            tmp_path / f"out_{limit_px}.mp4",
            model=f"{model_file}:OomCompact",
            devices="cpu:2",
            crf=0,
            preset="ultrafast",
        )
        assert frame_times(result.output) == frame_times(source)  # every frame kept
        outputs[limit_px] = decoded(result.output).astype(np.int16)
    # Smaller batches: the same pixels, but for float rounding. A convolution sums in
    # another order for another batch size, which moves a rare pixel by one level.
    batch_diff = np.abs(outputs[9000] - outputs[0])
    assert batch_diff.max() <= 1
    assert np.count_nonzero(batch_diff) <= batch_diff.size // 10_000
    # tiles blend over an overlap wider than the model's reach: within a level or two
    diff = np.abs(outputs[2000] - outputs[0])
    assert diff.max() <= 2
    assert diff.mean() < 0.05
