from __future__ import annotations

from fractions import Fraction

import av
import numpy as np
import pytest

from clips import decode_planes, decode_rgb, frame_image, variable_rate_pts, yuv_of
from vidshard.errors import ConfigError, MediaError
from vidshard.media import EncodeSettings, SegmentWriter, probe, resolve_pix_fmt
from vidshard.media.writer import muxer_options

LOSSLESS = EncodeSettings(crf=0, preset="ultrafast")


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (EncodeSettings(codec="nope264"), "unknown 'nope264'"),  # not an FFmpeg encoder
        (EncodeSettings(codec="aac", crf=None), "expected a video encoder"),  # audio encoder
        (EncodeSettings(crf=-1), r"takes 0\.\.51, got -1"),  # crf below range
        (EncodeSettings(crf=52), r"takes 0\.\.51, got 52"),  # crf above range
        (EncodeSettings(codec="libx265", crf=60), r"takes 0\.\.51"),  # x265 range too
        (EncodeSettings(codec="mpeg4"), "has no crf option"),  # crf on a codec without one
        (EncodeSettings(bitrate=1_000_000), "expected one of them"),  # crf and bitrate
        (EncodeSettings(crf=None, bitrate=0), "expected > 0"),  # zero bitrate
        (EncodeSettings(preset="warp"), "preset: expected one of"),  # unknown x264 preset
        (EncodeSettings(pix_fmt="rgb48le"), "pix_fmt: libx264 takes"),  # format x264 lacks
        (EncodeSettings(threads=-2), "threads: expected >= 0"),  # negative threads
        (EncodeSettings(options=(("", "1"),)), "options: expected"),  # empty option name
    ],
)
def test_validate_rejects(settings, message):
    with pytest.raises(ConfigError, match=message):
        settings.validate()


@pytest.mark.parametrize(
    "settings",
    [
        EncodeSettings(),  # the defaults
        EncodeSettings(crf=0, preset="ultrafast"),  # lossless
        EncodeSettings(codec="libx265", crf=28, pix_fmt="yuv420p10le"),  # 10-bit HEVC
        EncodeSettings(codec="mpeg4", crf=None, preset=None, bitrate=500_000),  # bitrate only
        EncodeSettings(codec="libvpx-vp9", crf=40, preset=None),  # VP9 crf range
        EncodeSettings(options=(("tune", "film"),), threads=2),  # extra options
    ],
)
def test_validate_accepts(settings):
    settings.validate()


@pytest.mark.parametrize(
    ("settings", "size_wh", "expected"),
    [
        (EncodeSettings(), (64, 48), "yuv420p"),  # even size: the x264 default
        (EncodeSettings(), (99, 48), "yuv444p"),  # odd width: no chroma subsampling
        (EncodeSettings(), (64, 67), "yuv444p"),  # odd height
        (EncodeSettings(codec="libx265"), (99, 67), "yuv444p"),  # x265 the same
        (EncodeSettings(pix_fmt="yuv444p"), (99, 67), "yuv444p"),  # explicit 4:4:4 is kept
        (EncodeSettings(pix_fmt="yuv420p10le"), (64, 48), "yuv420p10le"),  # explicit 10-bit
    ],
)
def test_resolve_pix_fmt(settings, size_wh, expected):
    assert resolve_pix_fmt(settings, size_wh) == expected


@pytest.mark.parametrize(
    ("settings", "size_wh", "message"),
    [
        (EncodeSettings(pix_fmt="yuv420p"), (99, 67), "needs a size divisible by 2x2"),
        (EncodeSettings(pix_fmt="yuv422p"), (99, 68), "needs a size divisible by 2x1"),
        (EncodeSettings(codec="mpeg4", crf=None), (99, 67), "no pixel format without chroma"),
    ],
)
def test_resolve_pix_fmt_rejects(settings, size_wh, message):
    with pytest.raises(ConfigError, match=message):
        resolve_pix_fmt(settings, size_wh)


def _write(path, settings, size_wh, pts, time_base=Fraction(1, 25), rate=Fraction(25)):
    images = [frame_image(i, size_wh) for i in range(len(pts))]
    with SegmentWriter(path, settings, size_wh, time_base, rate) as writer:
        for image, p in zip(images, pts, strict=True):
            writer.write(image, p)
    return images


@pytest.mark.parametrize(
    ("size_wh", "pix_fmt"),
    [
        ((64, 48), "yuv420p"),  # even size: 4:2:0
        ((99, 67), "yuv444p"),  # odd size: 4:4:4, size unchanged
        ((33, 20), "yuv444p"),  # odd width only
    ],
)
def test_crf0_is_lossless_in_yuv(tmp_path, size_wh, pix_fmt):
    path = tmp_path / "seg.mp4"
    images = _write(path, LOSSLESS, size_wh, list(range(12)))
    decoded = decode_planes(path)
    assert probe(path).video.size_wh == size_wh
    assert probe(path).video.pix_fmt == pix_fmt
    assert len(decoded) == len(images)
    for image, planes in zip(images, decoded, strict=True):
        assert np.array_equal(planes, yuv_of(image, pix_fmt))


@pytest.mark.parametrize(
    ("time_base", "pts"),
    [
        (Fraction(1, 1000), variable_rate_pts(25)),  # variable frame rate in ms
        (Fraction(1, 90000), tuple(p * 90 for p in variable_rate_pts(25))),  # MPEG ticks
        (Fraction(1, 11456), tuple(1000 + 384 * i for i in range(25))),  # odd tb, late start
        (Fraction(1, 25), tuple(range(100, 125))),  # coarse tb, starting at 4 s
    ],
)
@pytest.mark.parametrize(
    "settings",
    [
        LOSSLESS,  # no B-frames
        EncodeSettings(crf=30, preset="fast"),  # B-frames reorder packets
    ],
)
def test_pts_are_kept_exactly(tmp_path, time_base, pts, settings):
    path = tmp_path / "seg.mp4"
    _write(path, settings, (64, 48), pts, time_base=time_base)
    video = probe(path).video
    assert video.frame_count == len(pts)
    assert [p * video.time_base for p in video.pts] == [p * time_base for p in pts]
    # and decoding gives them in order, none dropped or repeated
    assert [p * video.time_base for p, _ in decode_rgb(path)] == [p * time_base for p in pts]
    with av.open(str(path)) as container:
        decode_order = [p.pts for p in container.demux(video=0) if p.size]
    assert (decode_order != sorted(decode_order)) == bool(settings.crf)  # B-frames or not


def test_ten_bit_output(tmp_path):
    path = tmp_path / "seg.mp4"
    _write(path, EncodeSettings(pix_fmt="yuv420p10le", preset="ultrafast"), (64, 48), [0, 1, 2])
    video = probe(path).video
    assert (video.pix_fmt, video.bit_depth, video.frame_count) == ("yuv420p10le", 10, 3)


@pytest.mark.parametrize(
    ("image", "pts", "message"),
    [
        (np.zeros((48, 64), np.uint8), 1, r"expected a \(48, 64, 3\) uint8 image, got \(48, 64\)"),
        (np.zeros((48, 64, 3), np.float32), 1, "uint8 image, got .* float32"),  # wrong dtype
        (np.zeros((64, 48, 3), np.uint8), 1, r"got \(64, 48, 3\)"),  # transposed size
        (np.zeros((48, 64, 3), np.uint8), 0, "expected pts > 0"),  # pts not increasing
    ],
)
def test_write_rejects(tmp_path, image, pts, message):
    with SegmentWriter(tmp_path / "s.mp4", LOSSLESS, (64, 48), Fraction(1, 25), None) as writer:
        writer.write(np.zeros((48, 64, 3), np.uint8), 0)
        with pytest.raises(MediaError, match=message):
            writer.write(image, pts)


def test_failure_inside_context_removes_the_file(tmp_path):
    path = tmp_path / "s.mp4"
    writer = SegmentWriter(path, LOSSLESS, (64, 48), Fraction(1, 25), None)
    with pytest.raises(RuntimeError, match="model failed"), writer:
        writer.write(np.zeros((48, 64, 3), np.uint8), 0)
        raise RuntimeError("model failed")
    assert not path.exists()


def test_empty_segment_is_a_valid_file(tmp_path):
    path = tmp_path / "s.mp4"
    with SegmentWriter(path, LOSSLESS, (64, 48), Fraction(1, 25), None):
        pass
    with av.open(str(path)) as container:
        assert sum(s.frames for s in container.streams.video) == 0


def test_invalid_settings_fail_before_creating_a_file(tmp_path):
    path = tmp_path / "s.mp4"
    with pytest.raises(ConfigError):
        SegmentWriter(path, EncodeSettings(crf=99), (64, 48), Fraction(1, 25), None)
    assert not path.exists()


@pytest.mark.parametrize(
    ("format_name", "time_base", "expected"),
    [
        ("mp4", Fraction(1, 11456), {"movie_timescale": "11456"}),  # fine time base as is
        ("mov", Fraction(1, 25), {"movie_timescale": "12800"}),  # coarse: doubled to >= 10000
        ("matroska", Fraction(1, 1000), {}),  # not the mov muxer
    ],
)
def test_muxer_options(format_name, time_base, expected):
    options = muxer_options(format_name, time_base)
    assert {k: v for k, v in options.items() if k == "movie_timescale"} == expected


@pytest.mark.parametrize(
    ("pix_fmt", "max_error"),
    [
        ("yuv444p", 3),  # full chroma: only rounding through YUV
        ("yuv420p", 80),  # chroma shared by 2x2 pixels: edges blur, colours stay
    ],
)
def test_colours_survive_write_then_read(tmp_path, pix_fmt, max_error):
    path = tmp_path / "seg.mp4"
    images = _write(
        path, EncodeSettings(crf=0, preset="ultrafast", pix_fmt=pix_fmt), (64, 48), [0, 1]
    )
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert (stream.codec_context.colorspace, stream.codec_context.color_range) == (1, 1)
    decoded = decode_rgb(path)
    for image, (_, rgb) in zip(images, decoded, strict=True):
        error = np.abs(image.astype(int) - rgb.astype(int))
        assert error.max() <= max_error
        assert error.mean() < 3  # no colour shift overall


@pytest.mark.parametrize(
    ("suffix", "time_base", "pts", "fails"),
    [
        (".mkv", Fraction(1, 11456), 384, True),  # 33.52 ms: Matroska would round to 34 ms
        (".mkv", Fraction(1, 25), 1, False),  # 40 ms: Matroska keeps it
        (".mp4", Fraction(1, 11456), 384, False),  # MP4 keeps the time base
    ],
)
def test_refuses_a_container_that_would_move_frames(tmp_path, suffix, time_base, pts, fails):
    path = tmp_path / f"seg{suffix}"
    with SegmentWriter(path, LOSSLESS, (64, 48), time_base, None) as writer:
        writer.write(frame_image(0, (64, 48)), 0)
        if fails:
            with pytest.raises(MediaError, match=r"would move the frame at pts 384.*\.mp4"):
                writer.write(frame_image(1, (64, 48)), pts)
        else:
            writer.write(frame_image(1, (64, 48)), pts)


def test_encoder_rejecting_options_is_a_config_error(tmp_path):
    settings = EncodeSettings(options=(("tune", "nonsense"),))  # x264 refuses it on open
    with pytest.raises(ConfigError, match="refused the settings"):
        SegmentWriter(tmp_path / "s.mp4", settings, (64, 48), Fraction(1, 25), None)
    assert not (tmp_path / "s.mp4").exists()
