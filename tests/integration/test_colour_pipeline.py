"""Colour, depth and timecodes end to end: ``vidshard.upscale`` over worker processes.

The issue's measurement: an untagged 1280x720 H.264 chart through ``--model identity
--crf 0`` must show in a player what the input shows (within 3 levels of 255); and an
SD chart upscaled with lanczos, a 10-bit chart (bit-identical whatever the slots), a
codec that cannot keep 10 bits (one warning line) and a QuickTime timecode track.
"""

from __future__ import annotations

import logging
from fractions import Fraction

import av
import numpy as np
import pytest
from tests.clips import ClipSpec, write_clip
from tests.colour_chart import (
    PRI_BT470BG,
    PRI_BT709,
    RANGE_LIMITED,
    SPC_BT470BG,
    SPC_BT709,
    TRC_BT709,
    TRC_SMPTE170M,
    ChartSpec,
    player_patches,
    write_chart,
)
from tests.helpers import frame_hashes

import vidshard
from vidshard.media import probe

FAST = {"preset": "ultrafast", "crf": 0}
TOLERANCE = 3.0


def assert_same_colours(source, output) -> None:
    before, after = player_patches(source), player_patches(output, size_wh=None)
    for frame_in, frame_out in zip(before.patches, after.patches, strict=True):
        assert np.abs(frame_out - frame_in).max() <= TOLERANCE


def test_untagged_hd_through_identity_shows_the_input_colours(tmp_path):
    """The issue's case: decoded BT.601 and labelled BT.709, the red was 20 levels off."""
    source = write_chart(tmp_path / "in.mp4", ChartSpec((1280, 720), frames=16))
    result = vidshard.upscale(
        source, tmp_path / "out.mp4", model="identity", devices="cpu:2", segment_seconds=0.1, **FAST
    )
    assert result.segments >= 2  # workers encode apart, the join keeps their tags
    assert_same_colours(source, result.output)
    assert player_patches(result.output).tags == (SPC_BT709, PRI_BT709, TRC_BT709, RANGE_LIMITED)


def test_untagged_sd_upscaled_with_lanczos_keeps_its_colours(tmp_path):
    """480x270 at 25 fps reads as BT.601; the 960x540 output says so explicitly."""
    source = write_chart(tmp_path / "in.mp4", ChartSpec((480, 270), encode_matrix=6, frames=4))
    result = vidshard.upscale(
        source, tmp_path / "out.mp4", model="lanczos", scale=2, devices="cpu:1", **FAST
    )
    assert probe(result.output).video.size_wh == (960, 540)
    assert_same_colours(source, result.output)
    view = player_patches(result.output)
    assert view.tags == (SPC_BT470BG, PRI_BT470BG, TRC_SMPTE170M, RANGE_LIMITED)


def test_ten_bit_stays_ten_bit_and_bit_identical_over_slots(tmp_path):
    source = write_chart(
        tmp_path / "in.mkv",
        ChartSpec((640, 360), pix_fmt="yuv420p10le", encode_matrix=6, frames=16),
    )
    two = vidshard.upscale(
        source, tmp_path / "two.mkv", model="identity", devices="cpu:2", segment_seconds=0.1, **FAST
    )
    one = vidshard.upscale(source, tmp_path / "one.mkv", model="identity", devices="cpu:1", **FAST)
    assert two.segments >= 2
    assert probe(two.output).video.pix_fmt == "yuv420p10le"
    assert frame_hashes(two.output) == frame_hashes(one.output)
    assert_same_colours(source, two.output)


def test_a_codec_without_ten_bits_says_so_once(tmp_path, caplog):
    source = write_clip(tmp_path / "in.mkv", ClipSpec(pix_fmt="yuv420p10le", frames=24))
    caplog.set_level(logging.WARNING)
    vidshard.upscale(
        source,
        tmp_path / "out.mkv",
        model="identity",
        devices="cpu:2",
        segment_seconds=0.1,
        codec="mpeg4",
        crf=None,
        preset=None,
    )
    lines = [r.getMessage() for r in caplog.records if "cannot encode" in r.getMessage()]
    assert lines == [
        "in.mkv: mpeg4 cannot encode 10-bit 4:2:0 (yuv420p10le): writing yuv420p (8-bit 4:2:0)"
    ]
    assert probe(tmp_path / "out.mkv").video.pix_fmt == "yuv420p"


@pytest.mark.parametrize("suffix", [".mov", ".mp4", ".mkv"])
def test_a_quicktime_timecode_track_is_kept(tmp_path, suffix):
    """.mov → .mov failed at the join, .mp4 and .mkv were refused with "use .mov"."""
    spec = ClipSpec(frames=12, rate=Fraction(25), video_metadata={"timecode": "10:00:00:00"})
    source = write_clip(tmp_path / "in.mov", spec)
    result = vidshard.upscale(source, tmp_path / f"out{suffix}", devices="cpu:2", **FAST)
    with av.open(str(result.output)) as container:
        tags = container.streams.video[0].metadata
        assert {k.lower(): v for k, v in tags.items()}["timecode"] == "10:00:00:00"
        kinds = [s.type for s in container.streams]
    assert kinds == (["video"] if suffix == ".mkv" else ["video", "data"])
