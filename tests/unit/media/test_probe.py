from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from clips import CLIPS, ClipSpec, write_clip
from vidshard.errors import InputError
from vidshard.media import bit_depth, probe, probe_to_dict
from vidshard.media.probe import PacketRecord, frame_table


def _missing(tmp: Path) -> Path:
    return tmp / "nope.mp4"


def _directory(tmp: Path) -> Path:
    (tmp / "dir.mp4").mkdir()
    return tmp / "dir.mp4"


def _empty(tmp: Path) -> Path:
    (tmp / "empty.mp4").write_bytes(b"")
    return tmp / "empty.mp4"


def _text(tmp: Path) -> Path:
    (tmp / "notes.mp4").write_text("this is not a video\n" * 20)
    return tmp / "notes.mp4"


def _image(suffix: str):
    def make(tmp: Path) -> Path:
        path = tmp / f"still{suffix}"
        Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(path)
        return path

    return make


def _audio_only(tmp: Path) -> Path:
    path = tmp / "sound.m4a"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("aac", rate=16000)
        stream.codec_context.layout = "mono"
        samples = np.zeros((1, 1024), np.float32)
        for i in range(4):
            frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
            frame.sample_rate, frame.pts = 16000, i * 1024
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


def _no_frames(tmp: Path) -> Path:
    """A video track without a single frame, next to an audio track that has some."""
    path = tmp / "noframes.mkv"
    with av.open(str(path), "w") as out:
        video = out.add_stream("libx264", rate=25)
        video.width, video.height = 64, 48
        audio = out.add_stream("aac", rate=16000)
        audio.codec_context.layout = "mono"
        for i in range(4):
            samples = np.zeros((1, 1024), np.float32)
            frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
            frame.sample_rate, frame.pts = 16000, i * 1024
            out.mux(audio.encode(frame))
        out.mux(audio.encode(None))
    return path


def _raw_h264(tmp: Path) -> Path:
    path = tmp / "raw.h264"
    with av.open(str(path), "w", format="h264") as out:
        stream = out.add_stream("libx264", rate=25)
        stream.width, stream.height = 64, 48
        for i in range(3):
            frame = av.VideoFrame.from_ndarray(np.zeros((48, 64, 3), np.uint8), format="rgb24")
            frame.pts = i
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (_missing, "no such file"),  # path does not exist
        (_directory, "is a directory"),  # a directory named like a video
        (_empty, "is empty"),  # zero bytes
        (_text, "not a media file"),  # a text file named .mp4
        (_audio_only, "has no video stream"),  # audio only: names what it found
        (_image(".png"), "still image"),  # a single PNG
        (_image(".jpg"), "still image"),  # a single JPEG
        (_no_frames, "has no frames"),  # a video stream with no packets
        (_raw_h264, "have no timestamp"),  # raw H.264: frames without any timestamp
    ],
)
def test_bad_inputs_raise_input_error(tmp_path, make, message):
    path = make(tmp_path)
    with pytest.raises(InputError, match=message) as info:
        probe(path)
    text = str(info.value)
    assert "\n" not in text and path.name in text


@pytest.mark.parametrize(
    ("records", "pts", "keyframes", "durations"),
    [
        # in order, every packet timed and with a duration
        (
            [PacketRecord(0, 0, 10, True), PacketRecord(10, 10, 10, False)],
            (0, 10),
            (0,),
            (10, 10),
        ),
        # B-frames: decode order I P B B, presentation order I B B P
        (
            [
                PacketRecord(0, -20, 10, True),
                PacketRecord(30, -10, 10, False),
                PacketRecord(10, 0, 10, False),
                PacketRecord(20, 10, 10, False),
            ],
            (0, 10, 20, 30),
            (0,),
            (10, 10, 10, 10),
        ),
        # no pts: the dts stands in (AVI-like streams without reordering)
        (
            [PacketRecord(None, 0, 5, True), PacketRecord(None, 5, 5, False)],
            (0, 5),
            (0,),
            (5, 5),
        ),
        # no durations: the gap to the next frame, the last repeats the previous
        (
            [
                PacketRecord(0, 0, None, True),
                PacketRecord(7, 7, 0, False),
                PacketRecord(20, 20, None, True),
            ],
            (0, 7, 20),
            (0, 2),
            (7, 13, 13),
        ),
        # a single frame without duration: unknown (0)
        ([PacketRecord(100, None, None, True)], (100,), (0,), (0,)),
    ],
)
def test_frame_table(records, pts, keyframes, durations):
    table = frame_table(records, Path("x.mp4"))
    assert table.pts == pts
    assert table.keyframes == keyframes
    assert table.durations == durations


@pytest.mark.parametrize(
    ("records", "message"),
    [
        # neither pts nor dts on any packet
        ([PacketRecord(None, None, 1, True)] * 3, "3 of 3 video packets have no timestamp"),
        # no packets at all
        ([], "has no frames"),
        # two frames at the same time
        ([PacketRecord(0, 0, 1, True), PacketRecord(0, 1, 1, False)], "share a timestamp"),
    ],
)
def test_frame_table_rejects(records, message):
    with pytest.raises(InputError, match=message):
        frame_table(records, Path("x.mp4"))


@pytest.mark.parametrize(
    ("name", "bits", "rotation", "kinds"),
    [
        ("cfr_audio.mp4", 8, 0, [("audio", "aac", "eng")]),  # audio with its language
        (
            "vfr.mkv",  # two audio tracks and SRT
            8,
            0,
            [
                ("audio", "aac", "eng"),
                ("audio", "aac", "fra"),
                ("subtitle", "subrip", "eng"),
                ("attachment", "application/x-truetype-font", None),
            ],
        ),
        (
            "vfr_rotated.mp4",  # display matrix: 90° counter-clockwise
            8,
            90,
            [("audio", "aac", "fra"), ("subtitle", "mov_text", "eng")],
        ),
        ("ten_bit.mkv", 10, 0, []),  # yuv420p10le
        ("two_audio_rotated.mp4", 8, 270, [("audio", "aac", "eng"), ("audio", "aac", "spa")]),
        ("data.ts", 8, 0, [("audio", "aac", "eng"), ("data", "klv", None)]),  # KLV data
        ("single.mp4", 8, 0, []),  # one frame
    ],
)
def test_probe_generated_clips(clip, name, bits, rotation, kinds):
    spec = CLIPS[name]
    info = probe(clip(name))
    video = info.video
    assert video.frame_count == spec.frames
    assert video.size_wh == spec.size_wh
    assert video.bit_depth == bits
    assert video.rotation == rotation
    assert video.keyframes[0] == 0
    assert len(video.durations) == video.frame_count
    found = [(s.kind, s.codec, s.language) for s in info.streams]
    assert found == kinds
    assert all(s.packets for s in info.streams if s.kind != "attachment")
    assert info.size_bytes == clip(name).stat().st_size


@pytest.mark.parametrize(
    "name",
    [
        "vfr.mkv",  # Matroska keeps 1/1000 s: pts are the written values
        "vfr_rotated.mp4",  # MP4 keeps the 1/90000 time base
        "bframes.mp4",  # presentation order, not decode order
    ],
)
def test_pts_are_the_written_times(clip, name):
    spec = CLIPS[name]
    video = probe(clip(name)).video
    written = [p * spec.stream_time_base() for p in spec.frame_pts()]
    assert [p * video.time_base for p in video.pts] == written


def test_keyframes_follow_the_gop(clip):
    video = probe(clip("long_gop.mp4")).video
    assert video.keyframes == (0, 50)


@pytest.mark.parametrize(
    ("name", "frames", "fps", "audio"),
    [
        ("car-detection.mp4", 377, Fraction(25, 2), True),  # 12.5 fps with AAC
        ("bottle-detection.mp4", 1189, Fraction(179, 6), False),  # 29.83 fps, no audio
    ],
)
def test_probe_samples_right(sample, name, frames, fps, audio):
    path = sample(name)
    info = probe(path)  # how fast is a benchmark's question, not a test's
    assert info.video.frame_count == frames
    assert info.video.avg_rate == fps
    assert info.video.codec == "h264"
    assert list(info.video.pts) == sorted(set(info.video.pts))
    assert any(s.kind == "audio" for s in info.streams) == audio


def test_probe_to_dict_is_json(clip):
    info = probe(clip("vfr_rotated.mp4"))
    data = json.loads(json.dumps(probe_to_dict(info)))
    assert data["video"]["pts"] == list(info.video.pts)
    assert data["video"]["keyframes"] == list(info.video.keyframes)
    assert data["video"]["rotation"] == 90
    assert data["video"]["frame_count"] == 30
    assert [s["kind"] for s in data["streams"]] == ["audio", "subtitle"]


def test_probe_metadata(clip):
    info = probe(clip("cfr_audio.mp4"))
    assert info.metadata["title"] == "cfr clip"
    assert info.format_name.startswith("mov,mp4")
    assert info.duration_s == pytest.approx(30 / 25, abs=0.1)


@pytest.mark.parametrize(
    ("pix_fmt", "bits"),
    [
        ("yuv420p", 8),  # the common case
        ("yuv420p10le", 10),  # 10-bit
        ("yuv444p12le", 12),  # 12-bit
        ("gray16le", 16),  # 16-bit grey
        (None, 8),  # unknown
        ("not-a-format", 8),  # unknown to FFmpeg
    ],
)
def test_bit_depth(pix_fmt, bits):
    assert bit_depth(pix_fmt) == bits


def test_pts_none_packets_use_dts(tmp_path):
    # AVI stores one timestamp per packet; the probe must still time every frame
    path = write_clip(tmp_path / "clip.avi", ClipSpec(frames=10, codec="mpeg4"))
    video = probe(path).video
    assert video.frame_count == 10
    assert video.pts == tuple(range(10))
