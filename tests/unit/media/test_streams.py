"""The input's other streams in the output: copied where the container holds them,
timecodes carried, metadata a container cannot hold dropped with a warning (never a
failed job), audio and subtitles it cannot hold refused before any work."""

from __future__ import annotations

import dataclasses
import io
import logging
import shutil
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from clips import ClipSpec, packets_of, simulate_pipeline, variable_rate_pts, write_clip
from vidshard.errors import OutputError
from vidshard.media import EncodeSettings, check_output_container, join_segments, probe

LOSSLESS = EncodeSettings(crf=0, preset="ultrafast", threads=1)
TIMECODE = "01:00:00:00"
TMCD_ONE_HOUR_AT_25 = (90000).to_bytes(4, "big")  # a tmcd sample: the first frame's number


def timecode_clip(path: Path, **spec: object) -> Path:
    """A clip whose video carries a timecode: MOV and MP4 write a tmcd track for it."""
    return write_clip(path, ClipSpec(frames=10, video_metadata={"timecode": TIMECODE}, **spec))


def streams_of(path: Path) -> list[tuple[str, str | None]]:
    with av.open(str(path)) as container:
        return [
            (s.type, s.codec_context.name if s.codec_context else None) for s in container.streams
        ]


def video_timecode(path: Path) -> str | None:
    with av.open(str(path)) as container:
        tags = container.streams.video[0].metadata
        return next((v for k, v in tags.items() if k.lower() == "timecode"), None)


def tmcd_samples(path: Path) -> list[bytes]:
    return [payload for _, _, _, payload in packets_of(path, "data")]


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


@pytest.mark.parametrize(
    ("source", "output", "track"),
    [
        ("in.mov", "out.mov", True),  # the failing case: a tmcd track again
        ("in.mov", "out.mp4", True),  # MP4 holds a tmcd track too
        ("in.mp4", "out.mov", True),
        ("in.mov", "out.mkv", False),  # Matroska: the timecode as the video's tag
        ("in.mkv", "out.mov", True),  # a Matroska TIMECODE tag becomes a tmcd track
    ],
)
def test_timecode_is_carried(tmp_path, caplog, source, output, track):
    path = timecode_clip(tmp_path / source)
    out = tmp_path / output
    check_output_container(probe(path), out)
    simulate_pipeline(path, out, segments=2, settings=LOSSLESS)
    assert video_timecode(out) == TIMECODE
    if track:
        assert tmcd_samples(out) == [TMCD_ONE_HOUR_AT_25]
    assert streams_of(out)[0] == ("video", "h264")
    assert [kind for kind, _ in streams_of(out)] == ["video"] + (["data"] if track else [])
    assert not warnings_of(caplog)


def test_timecode_track_a_container_cannot_hold_is_dropped_with_a_warning(tmp_path, caplog):
    path = timecode_clip(tmp_path / "in.mov")
    out = tmp_path / "out.ts"
    check_output_container(probe(path), out)  # not refused: it is metadata
    simulate_pipeline(path, out, segments=2, settings=LOSSLESS)
    assert [kind for kind, _ in streams_of(out)] == ["video"]
    (warning,) = warnings_of(caplog)
    assert "mpegts container cannot hold stream #1 (timecode track 01:00:00:00)" in warning


@pytest.mark.parametrize(
    "timecode",
    [
        "01:00:00;00",  # drop-frame at 25 fps: QuickTime cannot count it
        "not a timecode",  # a tag that is no timecode
    ],
)
def test_a_timecode_the_muxer_refuses_is_dropped_with_a_warning(tmp_path, caplog, timecode):
    path = write_clip(
        tmp_path / "in.mkv", ClipSpec(frames=6, video_metadata={"timecode": timecode})
    )
    out = tmp_path / "out.mov"
    simulate_pipeline(path, out, segments=2, settings=LOSSLESS)
    assert video_timecode(out) is None
    assert tmcd_samples(out) == []
    (warning,) = warnings_of(caplog)
    assert f"cannot hold the timecode {timecode!r} at 25 fps: not copied" in warning


def test_variable_frame_rate_keeps_its_timecode(tmp_path):
    spec = ClipSpec(
        frames=20,
        time_base=Fraction(1, 1000),
        pts=variable_rate_pts(20),
        video_metadata={"timecode": TIMECODE},
    )
    path = write_clip(tmp_path / "in.mkv", spec)
    out = tmp_path / "out.mov"
    simulate_pipeline(path, out, segments=3, settings=LOSSLESS)
    assert video_timecode(out) == TIMECODE
    assert len(tmcd_samples(out)) == 1


def test_a_timecode_that_fails_the_muxer_is_dropped_and_the_join_retried(tmp_path, caplog):
    """Without a frame rate the MOV muxer counts the timecode in time-base ticks (12800
    a second) and fails the file: the join is redone without the timecode."""
    path = timecode_clip(tmp_path / "in.mov")
    info = probe(path)
    segment = tmp_path / "seg.mp4"
    simulate_pipeline(path, tmp_path / "first.mov", segments=1, settings=LOSSLESS)
    shutil.copy(tmp_path / "first.mov.segments" / "0000.mp4", segment)
    unknown_rate = dataclasses.replace(info, video=dataclasses.replace(info.video, avg_rate=None))
    caplog.clear()
    out = tmp_path / "out.mov"
    join_segments([segment], unknown_rate, out)
    assert video_timecode(out) is None and tmcd_samples(out) == []
    (warning,) = warnings_of(caplog)
    assert "cannot hold the timecode '01:00:00:00' at an unknown frame rate: not copied" in warning


@pytest.mark.parametrize(
    ("name", "spec", "output", "dropped"),
    [
        # KLV data: MP4 and Matroska cannot hold it
        ("in.ts", ClipSpec(data=True, audio_languages=("eng",)), "out.mp4", "stream #2 (data klv)"),
        ("in.ts", ClipSpec(data=True, audio_languages=("eng",)), "out.mkv", "stream #2 (data klv)"),
        # a font attachment: MP4 cannot hold attachments
        (
            "in.mkv",
            ClipSpec(attachment=True, audio_languages=("eng",)),
            "out.mp4",
            "stream #2 (attachment application/x-truetype-font)",
        ),
    ],
)
def test_metadata_a_container_cannot_hold_is_dropped_not_fatal(
    tmp_path, caplog, name, spec, output, dropped
):
    path = write_clip(tmp_path / name, spec)
    out = tmp_path / output
    check_output_container(probe(path), out)  # the job may start
    simulate_pipeline(path, out, segments=2, settings=LOSSLESS)
    assert [kind for kind, _ in streams_of(out)] == ["video", "audio"]  # audio kept
    copied, original = payloads(out, "audio"), payloads(path, "audio")
    assert len(copied) == len(original)  # every packet (the muxer may strip ADTS headers)
    assert all(a.endswith(b) for a, b in zip(original, copied, strict=True))
    (warning,) = warnings_of(caplog)
    assert f"container cannot hold {dropped}: not copied" in warning


def cover_art_clip(path: Path) -> Path:
    """An MP4 clip with a JPEG cover picture (an attached-picture video stream)."""
    picture = io.BytesIO()
    with av.open(picture, mode="w", format="mjpeg") as jpeg:
        stream = jpeg.add_stream("mjpeg", rate=1)
        stream.width, stream.height, stream.pix_fmt = 16, 16, "yuvj420p"
        frame = av.VideoFrame.from_ndarray(np.full((16, 16, 3), 200, np.uint8), format="rgb24")
        frame = frame.reformat(format="yuvj420p")
        frame.pts = 0
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            jpeg.mux(packet)
    with av.open(str(path), mode="w") as out:
        video = out.add_stream("libx264", rate=25)
        video.width, video.height, video.pix_fmt = 64, 48, "yuv420p"
        cover = out.add_stream("mjpeg")
        cover.width, cover.height, cover.pix_fmt = 16, 16, "yuvj420p"
        cover.disposition = av.stream.Disposition.attached_pic
        out.start_encoding()
        for i in range(10):
            image = av.VideoFrame.from_ndarray(np.zeros((48, 64, 3), np.uint8), format="rgb24")
            image.pts = i
            out.mux(video.encode(image))
        packet = av.Packet(picture.getvalue())
        packet.stream, packet.pts, packet.dts = cover, 0, 0
        packet.time_base = cover.time_base or video.time_base
        out.mux(packet)
        out.mux(video.encode(None))
    return path


def test_cover_art_a_container_cannot_hold_is_dropped_with_a_warning(tmp_path, caplog):
    path = cover_art_clip(tmp_path / "in.mp4")
    out = tmp_path / "out.webm"  # WebM: VP8/VP9/AV1 video only
    settings = EncodeSettings(codec="libvpx-vp9", crf=30, preset=None, threads=1)
    check_output_container(probe(path), out, video_codec=settings.codec)
    simulate_pipeline(path, out, segments=1, settings=settings)
    assert streams_of(out) == [("video", "vp9")]
    (warning,) = warnings_of(caplog)
    assert "webm container cannot hold stream #1 (cover art mjpeg): not copied" in warning


def payloads(path: Path, kind: str) -> list[bytes]:
    return [payload for _, _, _, payload in packets_of(path, kind)]


def flac_audio_clip(path: Path) -> Path:
    """A Matroska clip with FLAC audio, which QuickTime cannot hold."""
    with av.open(str(path), mode="w") as out:
        video = out.add_stream("libx264", rate=25)
        video.width, video.height, video.pix_fmt = 64, 48, "yuv420p"
        audio = out.add_stream("flac", rate=16000)
        audio.layout = "mono"
        for i in range(5):
            frame = av.VideoFrame.from_ndarray(np.zeros((48, 64, 3), np.uint8), format="rgb24")
            frame.pts = i
            out.mux(video.encode(frame))
            samples = av.AudioFrame.from_ndarray(
                np.zeros((1, 640), np.int16), format="s16", layout="mono"
            )
            samples.sample_rate, samples.pts = 16000, i * 640
            out.mux(audio.encode(samples))
        out.mux(video.encode(None))
        out.mux(audio.encode(None))
    return path


def test_audio_a_container_cannot_hold_is_still_refused(tmp_path):
    """Audio is not metadata: dropping it would lose what the viewer hears."""
    info = probe(flac_audio_clip(tmp_path / "in.mkv"))
    with pytest.raises(OutputError, match=r"stream #1 \(audio flac\).*use \.mkv instead"):
        check_output_container(info, tmp_path / "out.mov")
    check_output_container(info, tmp_path / "out.mp4")  # MP4 holds FLAC
