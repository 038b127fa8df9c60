"""``down_sample``: frames are shrunk by the model's scale before the model, so the output
keeps the input's size (seed 000's option), with every frame and timestamp kept."""

from __future__ import annotations

from pathlib import Path

import av
import pytest
from tests.clips import ClipSpec, write_clip
from tests.helpers import frame_times

import vidshard
from vidshard.engine.segment import model_input_size_wh

# A model that insists on seeing the shrunk frames: a job fails if it gets any other size.
CHECKING_MODEL = """
from vidshard.models import ModelSpec


class Checking:
    def __init__(self, scale=2):
        self.spec = ModelSpec(name="checking", scale=scale)

    def load(self, device):
        pass

    def run(self, batch):
        expected = ({height}, {width})
        if batch.shape[1:3] != expected:
            raise ValueError(f"expected frames of {{expected}}, got {{batch.shape[1:3]}}")
        s = self.spec.scale
        return batch.repeat(s, axis=1).repeat(s, axis=2)
"""


def _size(path: Path) -> tuple[int, int]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return stream.codec_context.width, stream.codec_context.height


@pytest.mark.parametrize(
    ("size_wh", "scale"),
    [
        ((64, 48), 2),  # divides evenly
        ((64, 48), 4),  # a quarter each way
        ((66, 50), 4),  # does not divide: the model's output is fitted back to the input
    ],
)
def test_down_sample_keeps_the_input_size(
    tmp_path: Path, size_wh: tuple[int, int], scale: int
) -> None:
    source = write_clip(tmp_path / "in.mp4", ClipSpec(frames=20, size_wh=size_wh, gop=5))
    small_w, small_h = model_input_size_wh(size_wh, scale)
    model = tmp_path / "checking.py"
    model.write_text(CHECKING_MODEL.format(width=small_w, height=small_h))
    result = vidshard.upscale(
        source,
        tmp_path / "out.mp4",
        model=f"{model}:Checking",
        scale=scale,
        devices="cpu:2",
        segment_seconds=0.2,
        preset="ultrafast",
        down_sample=True,
    )
    assert result.size_wh == size_wh
    assert _size(result.output) == size_wh
    assert frame_times(result.output) == frame_times(source)


def test_without_down_sample_the_output_is_enlarged(tmp_path: Path) -> None:
    source = write_clip(tmp_path / "in.mp4", ClipSpec(frames=8, size_wh=(32, 24)))
    result = vidshard.upscale(
        source, tmp_path / "out.mp4", model="lanczos", scale=2, devices="cpu:1", preset="ultrafast"
    )
    assert _size(result.output) == (64, 48)


def test_down_sample_is_part_of_the_resume_fingerprint(tmp_path: Path) -> None:
    """A rerun with down_sample changed must not reuse the other run's segments."""
    from vidshard.engine.upscale import UpscaleOptions, _output_options

    plain = UpscaleOptions(model="lanczos", scale=2)
    shrunk = UpscaleOptions(model="lanczos", scale=2, down_sample=True)
    settings = plain.encode_settings()
    assert _output_options(plain, settings) != _output_options(shrunk, settings)
