"""The output's pixel format: the source's bit depth and chroma where the encoder can."""

from __future__ import annotations

import dataclasses
from fractions import Fraction

import av
import numpy as np
import pytest

from clips import ClipSpec, frame_image, simulate_pipeline, write_clip
from colour_chart import frame_planes
from vidshard.errors import ConfigError
from vidshard.media import EncodeSettings, SegmentWriter, probe
from vidshard.media.colour import from_rgb, video_colour
from vidshard.media.formats import choose_format
from vidshard.media.writer import choose_pix_fmt, output_notes

LOSSLESS = EncodeSettings(crf=0, preset="ultrafast", threads=1)
X264 = EncodeSettings()
NVENC_FORMATS = ("yuv420p", "nv12", "p010le", "yuv444p", "p016le", "yuv444p16le", "bgr0")


@pytest.mark.parametrize(
    ("settings", "source", "size_wh", "expected", "reduced"),
    [
        (X264, "yuv420p", (64, 48), "yuv420p", False),  # 8-bit 4:2:0 as before
        (X264, None, (64, 48), "yuv420p", False),  # no source: the old default
        (X264, "yuv420p10le", (64, 48), "yuv420p10le", False),  # 10 bits kept
        (X264, "yuv422p", (64, 48), "yuv422p", False),  # 4:2:2 kept
        (X264, "yuv444p", (64, 48), "yuv444p", False),  # 4:4:4 kept
        (X264, "yuv422p10le", (64, 48), "yuv422p10le", False),  # both kept
        (X264, "yuvj420p", (64, 48), "yuv420p", False),  # full range is a tag, not a format
        (X264, "nv12", (64, 48), "yuv420p", False),  # semi-planar source: same layout
        (X264, "gray", (64, 48), "yuv420p", False),  # grey: colour room for the model
        (X264, "gbrp", (64, 48), "yuv444p", False),  # RGB: no chroma lost
        (X264, "yuv420p12le", (64, 48), "yuv420p10le", True),  # x264 stops at 10 bits
        (X264, "yuv420p10le", (99, 67), "yuv444p10le", False),  # odd: 4:4:4, depth kept
        (X264, "yuv420p", (99, 67), "yuv444p", False),  # odd, 8-bit: today's rule
        (EncodeSettings(codec="libx265"), "yuv420p12le", (64, 48), "yuv420p12le", False),
        (EncodeSettings(codec="libx265"), "yuva420p", (64, 48), "yuv420p", False),  # no alpha
        (EncodeSettings(codec="mpeg4", crf=None), "yuv422p10le", (64, 48), "yuv420p", True),
        (EncodeSettings(codec="libsvtav1", crf=30), "yuv444p10le", (64, 48), "yuv420p10le", True),
        (EncodeSettings(codec="libvpx-vp9", crf=30), "yuv440p", (64, 48), "yuv440p", False),
        (EncodeSettings(codec="prores_ks", crf=None), "yuv420p", (64, 48), "yuv422p10le", False),
        (EncodeSettings(codec="libx264rgb"), "yuv420p", (64, 48), "bgr0", False),  # RGB only
        # an explicit pix_fmt always wins, and is no reduction to report
        (EncodeSettings(pix_fmt="yuv420p"), "yuv420p10le", (64, 48), "yuv420p", False),
        (EncodeSettings(pix_fmt="yuv444p"), "yuv420p", (64, 48), "yuv444p", False),
    ],
)
def test_choose_pix_fmt(settings, source, size_wh, expected, reduced):
    name, note = choose_pix_fmt(settings, size_wh, source)
    assert name == expected
    assert (note is not None) == reduced
    if note:
        assert note.startswith(f"{settings.codec} cannot encode") and expected in note


def test_semi_planar_only_encoders_keep_ten_bits():
    """An encoder whose 10-bit 4:2:0 is semi-planar (NVENC's p010le) still gets 10 bits."""
    assert choose_format("h264_nvenc", NVENC_FORMATS, (64, 48), "yuv420p10le") == ("p010le", None)
    assert choose_format("h264_nvenc", NVENC_FORMATS, (64, 48), "yuv420p") == ("yuv420p", None)


def test_odd_size_without_a_full_chroma_format_is_refused():
    with pytest.raises(ConfigError, match="no pixel format without chroma subsampling"):
        choose_pix_fmt(EncodeSettings(codec="mpeg4", crf=None), (99, 67), "yuv420p10le")


def test_reduction_note_says_what_was_lost():
    _, note = choose_pix_fmt(EncodeSettings(codec="mpeg4", crf=None), (64, 48), "yuv422p10le")
    assert note == ("mpeg4 cannot encode 10-bit 4:2:2 (yuv422p10le): writing yuv420p (8-bit 4:2:0)")


@pytest.mark.parametrize(
    ("codec", "pix_fmt", "notes"),
    [
        ("libx264", "yuv420p10le", 0),  # x264 keeps 10 bits: nothing to say
        ("mpeg4", "yuv420p10le", 1),  # MPEG-4 part 2 is 8-bit 4:2:0 only: one line
    ],
)
def test_output_notes(tmp_path, codec, pix_fmt, notes):
    video = probe(write_clip(tmp_path / "in.mkv", ClipSpec(pix_fmt=pix_fmt, frames=2))).video
    settings = EncodeSettings(codec=codec, crf=None if codec == "mpeg4" else 18)
    assert len(output_notes(settings, video, (128, 96))) == notes


@pytest.mark.parametrize("pix_fmt", ["yuv420p10le", "yuv422p10le", "yuv444p10le", "yuv422p"])
def test_crf0_is_lossless_at_the_source_layout(tmp_path, pix_fmt):
    """crf 0 with x264 is lossless at any depth (x264 needs qp 0 above 8 bits)."""
    source = probe(write_clip(tmp_path / "in.mkv", ClipSpec(pix_fmt=pix_fmt, frames=2))).video
    path = tmp_path / "seg.mp4"
    images = [frame_image(i, (64, 48)) for i in range(6)]
    with SegmentWriter(
        path, LOSSLESS, (64, 48), Fraction(1, 25), Fraction(25), source=source
    ) as writer:
        for i, image in enumerate(images):
            writer.write(image, i)
    assert probe(path).video.pix_fmt == pix_fmt
    colour = video_colour(source)
    for image, planes in zip(images, decoded(path), strict=True):
        expected = frame_planes(from_rgb(image, pix_fmt, colour))
        assert all(np.array_equal(a, b) for a, b in zip(planes, expected, strict=True))


def decoded(path):
    """Every frame's planes, in its own format (no conversion)."""
    with av.open(str(path)) as container:
        return [frame_planes(frame) for frame in container.decode(video=0)]


def test_ten_bit_output_is_the_same_in_any_number_of_segments(tmp_path):
    source = write_clip(tmp_path / "in.mkv", ClipSpec(pix_fmt="yuv420p10le", frames=20, gop=5))
    one, four = tmp_path / "one.mp4", tmp_path / "four.mp4"
    simulate_pipeline(source, one, segments=1, settings=LOSSLESS)
    simulate_pipeline(source, four, segments=4, settings=LOSSLESS)
    assert probe(one).video.bit_depth == probe(four).video.bit_depth == 10
    first, second = decoded(one), decoded(four)
    assert len(first) == len(second) == 20
    for a, b in zip(first, second, strict=True):
        assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


def test_explicit_yuvj_format_is_encoded_full_range(tmp_path):
    source = probe(write_clip(tmp_path / "in.mp4", ClipSpec(frames=2))).video
    path = tmp_path / "seg.mp4"
    settings = dataclasses.replace(LOSSLESS, pix_fmt="yuvj420p")
    with SegmentWriter(path, settings, (64, 48), Fraction(1, 25), None, source=source) as w:
        w.write(frame_image(0, (64, 48)), 0)
        assert w.colour.full_range
    assert probe(path).video.colour_tags.range == 2
