from __future__ import annotations

import dataclasses
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from clips import (
    CLIPS,
    decode_planes,
    packets_of,
    segment_bounds,
    simulate_pipeline,
)
from vidshard.errors import MediaError, OutputError, VerificationError
from vidshard.media import (
    SEGMENT_SUFFIX,
    EncodeSettings,
    SegmentWriter,
    check_output_container,
    join_segments,
    next_dts,
    probe,
    read_frames,
    same_time,
    verify_output,
)

LOSSLESS = EncodeSettings(crf=0, preset="ultrafast")
WITH_BFRAMES = EncodeSettings(crf=30, preset="fast")
COPIED_KINDS = ("audio", "subtitle", "data")


def assert_same_times(source_video, output_video):
    """Invariant 1: every frame is there, at its input time (exact, or rounded to the
    output container's time base)."""
    assert output_video.frame_count == source_video.frame_count
    for src_pts, out_pts in zip(source_video.pts, output_video.pts, strict=True):
        assert same_time(src_pts, source_video.time_base, out_pts, output_video.time_base)


def assert_same_packets(source: Path, output: Path, tick: Fraction):
    """Invariant 2: every audio/subtitle/data packet is copied byte for byte, at its time."""
    for kind in COPIED_KINDS:
        want, got = packets_of(source, kind), packets_of(output, kind)
        assert [(p[0], p[3]) for p in got] == [(p[0], p[3]) for p in want], kind
        for (_, want_s, want_d, _), (_, got_s, got_d, _) in zip(want, got, strict=True):
            assert abs(got_s - want_s) < tick, kind
            assert got_d == 0 or abs(got_d - want_d) < tick, kind


def attachments(path: Path) -> list[tuple[str | None, bytes]]:
    with av.open(str(path)) as container:
        return [(s.mimetype, s.data) for s in container.streams if s.type == "attachment"]


def stream_tags(path: Path, key: str) -> list[tuple[str, str | None]]:
    """Every stream's ``key`` tag; MP4 reads titles back as ``name``, Matroska as ``title``."""
    with av.open(str(path)) as container:
        return [
            (s.type, s.metadata.get(key) or (s.metadata.get("name") if key == "title" else None))
            for s in container.streams
        ]


@pytest.mark.parametrize(
    ("name", "suffix", "segments"),
    [
        ("cfr_audio.mp4", ".mp4", 3),  # constant rate with AAC, MP4 out
        ("cfr_audio.mp4", ".mkv", 3),  # the same into Matroska (times rounded to 1 ms)
        ("vfr.mkv", ".mkv", 4),  # variable rate, two audio tracks, SRT subtitles
        ("vfr_rotated.mp4", ".mp4", 3),  # variable rate 1/90000, rotation, mov_text
        ("vfr_rotated.mp4", ".mov", 2),  # the same into QuickTime
        ("bframes.mp4", ".mp4", 5),  # B-frame source, segments start mid-GOP
        ("long_gop.mp4", ".mkv", 4),  # one keyframe every 50 frames
        ("odd.mp4", ".mp4", 3),  # 99x67: encoded 4:4:4, size kept
        ("single.mp4", ".mp4", 3),  # one frame: two of three segments are empty
        ("ten_bit.mkv", ".mp4", 3),  # 10-bit input, 8-bit output
        ("two_audio_rotated.mp4", ".mkv", 2),  # rotation into Matroska, two audio tracks
        ("data.ts", ".ts", 3),  # MPEG-TS with a KLV data stream, start after zero
    ],
)
def test_segmented_equals_single_run(clip, tmp_path, name, suffix, segments):
    path = clip(name)
    output = tmp_path / f"out{suffix}"
    info = simulate_pipeline(path, output, segments=segments, settings=LOSSLESS)
    out = probe(output)
    assert_same_times(info.video, out.video)
    assert out.video.size_wh == info.video.size_wh
    assert out.video.rotation == CLIPS[name].rotation
    tick = out.video.time_base if suffix in (".mkv", ".ts") else Fraction(1, 10**9)
    assert_same_packets(path, output, tick)
    assert stream_tags(output, "language")[1:] == stream_tags(path, "language")[1:]
    assert stream_tags(output, "title") == stream_tags(path, "title")
    assert attachments(output) == attachments(path)
    assert out.metadata.get("title") == CLIPS[name].metadata.get("title")
    # segmenting changes nothing: same pixels as one writer over the whole clip
    single = tmp_path / f"single{suffix}"
    simulate_pipeline(path, single, segments=1, settings=LOSSLESS)
    segmented_frames, single_frames = decode_planes(output), decode_planes(single)
    assert len(segmented_frames) == len(single_frames) == info.video.frame_count
    assert all(np.array_equal(a, b) for a, b in zip(segmented_frames, single_frames, strict=True))
    assert not [p for p in tmp_path.iterdir() if ".partial-" in p.name]


@pytest.mark.parametrize(
    ("name", "suffix"),
    [
        ("bframes.mp4", ".mp4"),  # B-frames in the segments, MP4 (negative dts allowed)
        ("vfr.mkv", ".mkv"),  # B-frames with irregular pts into Matroska
        ("data.ts", ".ts"),  # B-frames into MPEG-TS (no negative timestamps)
    ],
)
def test_bframe_segments_join_with_increasing_dts(clip, tmp_path, name, suffix):
    path = clip(name)
    output = tmp_path / f"out{suffix}"
    info = simulate_pipeline(path, output, segments=4, settings=WITH_BFRAMES)
    assert_same_times(info.video, probe(output).video)
    with av.open(str(output)) as container:
        packets = [(p.pts, p.dts) for p in container.demux(video=0) if p.size]
    assert packets != sorted(packets)  # really reordered
    dts = [d for _, d in packets if d is not None]
    assert dts == sorted(set(dts))
    assert all(d is None or d <= p for p, d in packets)


@pytest.mark.parametrize(
    ("settings", "suffix", "codec"),
    [
        (EncodeSettings(codec="libx265", crf=28, preset="ultrafast"), ".mp4", "hevc"),  # HEVC
        (
            EncodeSettings(  # VP9 in Matroska, fastest settings
                codec="libvpx-vp9",
                crf=40,
                preset=None,
                options=(("deadline", "realtime"), ("cpu-used", "8")),
            ),
            ".mkv",
            "vp9",
        ),
        (EncodeSettings(codec="mpeg4", crf=None, preset=None, bitrate=400_000), ".mkv", "mpeg4"),
    ],
)
def test_other_encoders_join(clip, tmp_path, settings, suffix, codec):
    if settings.codec not in av.codecs_available:
        pytest.skip(f"{settings.codec} is not in this FFmpeg build")
    path = clip("cfr_audio.mp4" if suffix == ".mp4" else "vfr.mkv")  # streams each can hold
    output = tmp_path / f"out{suffix}"
    info = simulate_pipeline(path, output, segments=3, settings=settings)
    out = probe(output)
    assert out.video.codec == codec
    assert_same_times(info.video, out.video)


def test_upscaled_segments_keep_times(clip, tmp_path):
    # a 2x model: the output is bigger, the times and the audio stay
    path = clip("cfr_audio.mp4")
    output = tmp_path / "x2.mp4"
    info = simulate_pipeline(path, output, segments=3, settings=LOSSLESS, scale=2)
    out = probe(output)
    assert out.video.size_wh == (128, 96)
    assert_same_times(info.video, out.video)
    assert_same_packets(path, output, Fraction(1, 10**9))


@pytest.mark.parametrize(
    ("name", "suffix"),
    [
        ("car-detection.mp4", ".mp4"),  # 12.5 fps with AAC audio
        ("bottle-detection.mp4", ".mkv"),  # 29.83 fps, time base 1/11456, into Matroska
    ],
)
def test_real_samples(sample, tmp_path, name, suffix):
    path = sample(name)
    output = tmp_path / f"out{suffix}"
    settings = EncodeSettings(crf=28, preset="ultrafast")
    info = simulate_pipeline(path, output, segments=4, settings=settings)
    out = probe(output)
    assert_same_times(info.video, out.video)
    tick = out.video.time_base if suffix == ".mkv" else Fraction(1, 10**9)
    assert_same_packets(path, output, tick)
    assert abs(out.video.duration_s - info.video.duration_s) <= 1 / float(info.video.avg_rate)


@pytest.fixture
def segments(clip, tmp_path):
    """cfr_audio.mp4 encoded as three segments; returns (source info, segment paths)."""
    path = clip("cfr_audio.mp4")
    info = probe(path)
    video = info.video
    paths = []
    for k, (start, end) in enumerate(segment_bounds(video.frame_count, 3)):
        seg = tmp_path / f"{k}{SEGMENT_SUFFIX}"
        with SegmentWriter(seg, LOSSLESS, video.size_wh, video.time_base, video.avg_rate) as w:
            for frame in read_frames(path, video, start, end):
                w.write(frame.image, frame.pts)
        paths.append(seg)
    return info, paths


def _not_a_segment(paths: list[Path]) -> list[Path]:
    paths[1].write_text("not a video")
    return paths


@pytest.mark.parametrize(
    ("arrange", "error", "message"),
    [
        (lambda p: [p[0], p[2]], VerificationError, "expected 30 frames"),  # a segment lost
        (lambda p: [p[0], p[1], p[1], p[2]], MediaError, "decode timestamps"),  # one twice
        (lambda p: [p[1], p[0], p[2]], MediaError, "decode timestamps"),  # out of order
        (_not_a_segment, MediaError, "joining segments failed"),  # a corrupt segment
        (lambda p: [], MediaError, "at least one segment"),  # nothing to join
    ],
)
def test_failed_join_leaves_nothing(segments, tmp_path, arrange, error, message):
    info, paths = segments
    output = tmp_path / "out" / "joined.mp4"
    output.parent.mkdir()
    with pytest.raises(error, match=message):
        join_segments(arrange(list(paths)), info, output)
    assert list(output.parent.iterdir()) == []


def test_failed_verification_leaves_a_previous_output_alone(segments, tmp_path):
    info, paths = segments
    output = tmp_path / "joined.mp4"
    output.write_bytes(b"previous result")
    with pytest.raises(VerificationError, match="expected 128x96, got 64x48"):
        join_segments(paths, info, output, expected_size_wh=(128, 96))
    assert output.read_bytes() == b"previous result"
    assert not [p for p in tmp_path.iterdir() if ".partial-" in p.name]


def test_join_then_verify_expected_pts(segments, tmp_path):
    info, paths = segments
    output = tmp_path / "joined.mkv"
    join_segments(paths, info, output, expected_pts=info.video.pts)
    shifted = [p + 512 for p in info.video.pts]  # one frame later (1/12800 time base)
    with pytest.raises(VerificationError, match="30 frames moved in time"):
        verify_output(output, info.video, expected_pts=shifted)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda v: {"pts": v.pts[:-1]}, "expected 29 frames .*, got 30"),  # a frame more
        (lambda v: {"pts": (*v.pts[:-1], v.pts[-1] + 5)}, "1 frames moved in time"),  # moved
        (lambda v: {"rotation": 90}, "expected rotation 90°, got 0°"),  # rotation lost
        (
            lambda v: {"durations": (*v.durations[:-1], v.durations[-1] * 4)},
            "expected a duration of",  # last frame far longer than in the output
        ),
    ],
)
def test_verify_output_rejects(clip, change, message):
    path = clip("cfr_audio.mp4")
    video = probe(path).video
    verify_output(path, video)  # the file matches itself
    claimed = dataclasses.replace(video, **change(video))
    with pytest.raises(VerificationError, match=message):
        verify_output(path, claimed)


@pytest.mark.parametrize(
    ("name", "output", "video_codec", "message"),
    [
        ("cfr_audio.mp4", "out.mkv", None, None),  # AAC fits Matroska
        ("cfr_audio.mp4", "out.mov", "libx264", None),  # and QuickTime, with H.264
        ("vfr.mkv", "out.mp4", None, r"stream #3 \(subtitle subrip\).*use \.mkv instead"),
        ("vfr_rotated.mp4", "out.mkv", None, r"subtitle mov_text.*use \.mp4 instead"),
        ("data.ts", "out.mp4", None, None),  # KLV data: dropped at the join, not refused
        ("cfr_audio.mp4", "out.webm", None, "cannot hold the libx264 video"),  # no H.264
        ("cfr_audio.mp4", "out.foo", None, "no container for the extension '.foo'"),
        ("cfr_audio.mp4", "no_extension", None, "no container for the extension ''"),
        ("cfr_audio.mp4", "missing/out.mp4", None, "does not exist"),  # no such directory
    ],
)
def test_check_output_container(clip, tmp_path, name, output, video_codec, message):
    info = probe(clip(name))
    target = tmp_path / output
    codec = video_codec or ("libx264" if output.endswith(".webm") else None)
    if message is None:
        check_output_container(info, target, video_codec=codec)
    else:
        with pytest.raises(OutputError, match=message):
            check_output_container(info, target, video_codec=codec)
    assert not target.exists()


def test_check_output_refuses_the_input(clip):
    info = probe(clip("cfr_audio.mp4"))
    with pytest.raises(OutputError, match="is the input file"):
        check_output_container(info, info.path)


@pytest.mark.parametrize(
    ("pts", "dts", "last_dts", "non_negative", "expected"),
    [
        (10, 8, 5, False, 8),  # already increasing: unchanged
        (10, 8, 8, False, 9),  # equal to the previous: one tick up
        (10, 3, 8, False, 9),  # behind the previous (segment boundary): lifted
        (10, None, 4, False, 10),  # no dts: the pts stands in
        (0, -2, None, False, -2),  # B-frame delay at the start: kept where allowed
        (0, -2, None, True, 0),  # ... lifted to 0 where negative times shift everything
        (40, -1, 0, True, 1),  # ... and the next packets stay above it
        (-5, -7, None, True, -7),  # negative pts: cannot be lifted, left alone
    ],
)
def test_next_dts(pts, dts, last_dts, non_negative, expected):
    assert next_dts(pts, dts, last_dts, non_negative=non_negative) == expected


def test_next_dts_never_passes_pts():
    with pytest.raises(MediaError, match="dts 10 > pts"):
        next_dts(9, 5, 9, non_negative=False)


@pytest.mark.parametrize(
    ("src", "out", "same"),
    [
        ((1, Fraction(1, 25)), (40, Fraction(1, 1000)), True),  # exact in another time base
        ((297 * 384, Fraction(1, 11456)), (9955, Fraction(1, 1000)), True),  # rounded to 1 ms
        ((297 * 384, Fraction(1, 11456)), (9954, Fraction(1, 1000)), False),  # a tick off
        ((3, Fraction(1, 25)), (3, Fraction(1, 30)), False),  # same number, other time
        ((1, Fraction(1, 3000)), (0, Fraction(1, 1000)), True),  # rounded down to the tick
        ((2, Fraction(1, 3000)), (0, Fraction(1, 1000)), False),  # nearer the next tick
    ],
)
def test_same_time(src, out, same):
    assert same_time(src[0], src[1], out[0], out[1]) == same


def test_check_output_refuses_negative_starts_a_container_would_shift(clip, tmp_path):
    # AAC in MP4 starts 1024 samples before zero (encoder priming); MPEG-TS cannot store
    # that and would move every stream, video included
    info = probe(clip("cfr_audio.mp4"))
    with pytest.raises(OutputError, match=r"negative start time of stream #1 \(audio aac\)"):
        check_output_container(info, tmp_path / "out.ts")
    check_output_container(info, tmp_path / "out.mkv")  # Matroska stores it


def _garble(source: Path, target: Path) -> Path:
    """``source``'s video with every packet after the first replaced by noise: the same
    timestamps and sizes (so it probes well), but it does not decode."""
    rng = np.random.default_rng(0)
    with av.open(str(source)) as src, av.open(str(target), "w") as out:
        stream = out.add_stream_from_template(src.streams.video[0], opaque=True)
        for n, packet in enumerate(p for p in src.demux(video=0) if p.size):
            noise = rng.integers(0, 255, packet.size, dtype=np.uint8).tobytes()
            garbled = av.Packet(bytes(packet) if n == 0 else noise)
            garbled.pts, garbled.dts = packet.pts, packet.dts
            garbled.time_base = packet.time_base
            garbled.stream = stream
            out.mux(garbled)
    return target


def test_verify_decodes_every_frame(clip, tmp_path):
    source = clip("long_gop.mp4")
    garbled = _garble(source, tmp_path / "garbled.mp4")
    video = probe(source).video
    verify_output(garbled, video, decode=False)  # timestamps alone look right
    with pytest.raises(VerificationError, match=r"does not decode|decodable frames"):
        verify_output(garbled, video)
