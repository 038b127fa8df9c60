"""The file pipeline end to end, through the Python API, over several CPU slots."""

from __future__ import annotations

import shutil
from fractions import Fraction

import av
import pytest
from tests.clips import ClipSpec, variable_rate_pts, write_clip
from tests.helpers import EXAMPLES, audio_packets, frame_hashes, frame_times

import vidshard
from vidshard.media import probe

FAST = {"preset": "ultrafast", "crf": 0}


def test_bundled_clip_cpu4_equals_cpu1(tmp_path):
    """The issue's acceptance run: frames, timestamps and audio kept; slots change nothing."""
    source = EXAMPLES / "car-detection.mp4"
    four = vidshard.upscale(source, tmp_path / "four.mp4", devices="cpu:4", **FAST)
    one = vidshard.upscale(source, tmp_path / "one.mp4", devices="cpu:1", **FAST)
    assert four.frames == one.frames == 377
    assert four.size_wh == (1536, 864)
    assert {s.label for s in four.slots if s.frames} == {"cpu#0", "cpu#1", "cpu#2", "cpu#3"}
    assert frame_times(four.output) == frame_times(source)
    assert audio_packets(four.output) == audio_packets(source)
    assert frame_hashes(four.output) == frame_hashes(one.output)
    assert not list(tmp_path.glob(".*"))  # no work dir or temp file left


@pytest.mark.parametrize(
    "spec",
    [
        # variable frame rate with an audio track: timestamps must survive
        ClipSpec(
            frames=40,
            time_base=Fraction(1, 1000),
            pts=variable_rate_pts(40),
            rate=Fraction(25),
            audio_languages=("eng",),
        ),
        # odd size and B-frames
        ClipSpec(size_wh=(35, 27), frames=30, bframes=2, gop=10),
        # a single frame
        ClipSpec(frames=1),
        # two audio tracks and rotation metadata
        ClipSpec(frames=20, audio_languages=("eng", "deu"), rotation=90),
    ],
    ids=["vfr-audio", "odd-bframes", "single-frame", "two-audio-rotated"],
)
def test_generated_clips_keep_frames_and_streams(tmp_path, spec):
    source = write_clip(tmp_path / "in.mp4", spec)
    result = vidshard.upscale(
        source, tmp_path / "out.mp4", devices="cpu:3", segment_seconds=0.3, **FAST
    )
    assert result.frames == spec.frames
    assert frame_times(result.output) == frame_times(source)
    assert audio_packets(result.output) == audio_packets(source)
    info = probe(result.output)
    assert info.video.size_wh == (spec.size_wh[0] * 2, spec.size_wh[1] * 2)
    assert info.video.rotation == vidshard.media.probe(source).video.rotation


def test_overlap_frames_crossfade_keeps_count_and_identity(tmp_path):
    """With the identity model, crossfading two equal halves changes nothing."""
    source = write_clip(tmp_path / "in.mp4", ClipSpec(frames=60, gop=60))
    plain = vidshard.upscale(
        source,
        tmp_path / "plain.mp4",
        model="identity",
        devices="cpu:1",
        segment_seconds=10,
        **FAST,
    )
    seams = vidshard.upscale(
        source,
        tmp_path / "seams.mp4",
        model="identity",
        devices="cpu:2",
        overlap_frames=3,
        segment_seconds=0.5,
        **FAST,
    )
    assert seams.segments > 2
    assert frame_times(seams.output) == frame_times(source)
    assert frame_hashes(seams.output) == frame_hashes(plain.output)


def test_spandrel_weights_file(tmp_path):
    from tests.models_fixtures import build_compact

    weights = build_compact(tmp_path, scale=2).path
    source = write_clip(tmp_path / "in.mp4", ClipSpec(frames=12, size_wh=(32, 24)))
    result = vidshard.upscale(
        source, tmp_path / "out.mkv", model=str(weights), devices="cpu:2", **FAST
    )
    assert result.size_wh == (64, 48)
    with av.open(str(result.output)) as c:
        assert c.streams.video[0].frames in (0, 12)  # mkv may not store a count
    assert len(frame_times(result.output)) == 12


def test_real_clip_with_non_integer_rate(tmp_path):
    source = tmp_path / "bottle.mp4"
    shutil.copy(EXAMPLES / "bottle-detection.mp4", source)
    result = vidshard.upscale(
        source, tmp_path / "out.mp4", model="identity", devices="cpu:2", **FAST
    )
    assert result.frames == 1189
    assert frame_times(result.output) == frame_times(source)
