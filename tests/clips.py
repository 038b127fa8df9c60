"""Small test clips written with PyAV: what the media tests (and others) run on.

``write_clip(path, ClipSpec(...))`` writes a tiny deterministic video with whatever
the test needs: variable frame rate, B-frames, a long GOP, odd sizes, 10-bit, rotation,
audio tracks, a subtitle track, a data stream, metadata. The container follows the
path's extension.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from vidshard.media import (
    SEGMENT_SUFFIX,
    EncodeSettings,
    MediaInfo,
    SegmentWriter,
    check_output_container,
    join_segments,
    probe,
    read_frames,
)
from vidshard.media.colour import BT709_LIMITED, to_rgb, video_colour
from vidshard.media.types import VideoStreamInfo
from vidshard.media.writer import to_encoder_frame

AUDIO_RATE_HZ = 16000
AUDIO_FRAME_SAMPLES = 1024


def stream_info(frames: int, *, gop: int = 60) -> VideoStreamInfo:
    """What a probe finds in a 1080p30 H.264 stream of ``frames`` frames with a keyframe
    every ``gop``, without a file: for planning and bookkeeping at any length."""
    return VideoStreamInfo(
        index=0,
        codec="h264",
        width=1920,
        height=1080,
        pix_fmt="yuv420p",
        time_base=Fraction(1, 15360),
        pts=tuple(i * 512 for i in range(frames)),
        keyframes=tuple(range(0, frames, gop)),
        durations=(512,) * frames,
        avg_rate=Fraction(30),
    )


@dataclass(frozen=True)
class ClipSpec:
    size_wh: tuple[int, int] = (64, 48)
    frames: int = 24
    rate: Fraction = Fraction(25)
    time_base: Fraction | None = None  # None: 1/rate
    pts: tuple[int, ...] | None = None  # explicit pts (variable frame rate); default i
    codec: str = "libx264"
    pix_fmt: str | None = None  # None: yuv420p, or yuv444p when the size is odd
    gop: int = 12  # frames between keyframes
    bframes: int = 0
    audio_languages: tuple[str, ...] = ()  # one AAC track per entry
    subtitle: str | None = None  # "subrip" (mkv) or "mov_text" (mp4)
    data: bool = False  # a KLV data stream (MPEG-TS only)
    attachment: bool = False  # a font attachment (Matroska only)
    rotation: int = 0  # degrees counter-clockwise
    metadata: dict[str, str] = field(default_factory=dict)  # container tags
    video_metadata: dict[str, str] = field(default_factory=dict)

    def frame_pts(self) -> list[int]:
        if self.pts is not None:
            return list(self.pts)
        return list(range(self.frames))

    def stream_time_base(self) -> Fraction:
        return self.time_base or 1 / self.rate


def frame_image(index: int, size_wh: tuple[int, int]) -> np.ndarray:
    """A deterministic (H, W, 3) uint8 picture that differs from frame to frame."""
    width, height = size_wh
    y, x = np.mgrid[0:height, 0:width]
    image = np.empty((height, width, 3), np.uint8)
    image[..., 0] = (x * 3 + index * 5) % 256
    image[..., 1] = (y * 4 + index * 3) % 256
    image[..., 2] = ((x + y) * 2 + index * 11) % 256
    # A small square that walks over the picture marks each frame.
    size = max(2, min(width, height) // 6)
    left = (index * 3) % max(1, width - size)
    top = (index * 2) % max(1, height - size)
    image[top : top + size, left : left + size] = 255 - image[top : top + size, left : left + size]
    return image


def write_clip(path: Path, spec: ClipSpec) -> Path:
    """Write a clip described by ``spec`` to ``path`` and return the path."""
    path = Path(path)
    out = av.open(str(path), mode="w")
    with out:
        out.metadata.update(spec.metadata)
        video = _add_video(out, spec)
        audios = [_add_audio(out, lang, i) for i, lang in enumerate(spec.audio_languages)]
        subtitle = _add_mux_stream(out, spec.subtitle, Fraction(1, 1000), "eng")
        data = _add_mux_stream(out, "klv" if spec.data else None, Fraction(1, 90000), None)
        if spec.attachment:
            out.add_attachment("font.ttf", "application/x-truetype-font", b"not a real font")
        tb = spec.stream_time_base()
        for i, pts in enumerate(spec.frame_pts()):
            frame = av.VideoFrame.from_ndarray(frame_image(i, spec.size_wh), format="rgb24")
            frame.pts = pts
            frame.time_base = tb
            out.mux(video.encode(frame))
            if data is not None:
                _mux_bytes(out, data, bytes([i % 256]) * 16, _rescale(pts, tb, data), None)
        out.mux(video.encode(None))
        end_s = (spec.frame_pts()[-1] + 1) * tb if spec.frame_pts() else Fraction(0)
        for stream in audios:
            _write_tone(out, stream, end_s)
        if subtitle is not None:
            _write_subtitles(out, subtitle, spec.subtitle or "", end_s)
    return path


def _add_video(out: av.container.OutputContainer, spec: ClipSpec) -> av.VideoStream:
    video = out.add_stream(spec.codec, rate=spec.rate)
    ctx = video.codec_context
    ctx.width, ctx.height = spec.size_wh
    ctx.pix_fmt = spec.pix_fmt or (
        "yuv420p" if not (ctx.width % 2 or ctx.height % 2) else "yuv444p"
    )
    ctx.time_base = spec.stream_time_base()
    video.time_base = spec.stream_time_base()
    params = f"keyint={spec.gop}:min-keyint={spec.gop}:scenecut=0:bframes={spec.bframes}"
    if spec.codec == "libx264":
        ctx.options = {"x264-params": params, "preset": "fast" if spec.bframes else "ultrafast"}
    elif spec.codec == "libx265":
        ctx.options = {"x265-params": params + ":log-level=error", "preset": "ultrafast"}
    else:
        ctx.gop_size = spec.gop
    if spec.rotation:
        video.set_display_rotation(spec.rotation)
    video.metadata.update(spec.video_metadata)
    return video


def _add_audio(out: av.container.OutputContainer, language: str, n: int) -> av.AudioStream:
    stream = out.add_stream("aac", rate=AUDIO_RATE_HZ)
    stream.codec_context.layout = "mono"
    stream.metadata["language"] = language
    stream.metadata["title"] = f"track {n}"
    return stream


def _add_mux_stream(
    out: av.container.OutputContainer, codec: str | None, tb: Fraction, language: str | None
) -> av.stream.Stream | None:
    if codec is None:
        return None
    stream = out.add_mux_stream(codec)
    stream.time_base = tb
    if language:
        stream.metadata["language"] = language
    return stream


def _rescale(pts: int, src: Fraction, stream: av.stream.Stream) -> int:
    return round(pts * src / (stream.time_base or Fraction(1, 1)))


def _mux_bytes(
    out: av.container.OutputContainer,
    stream: av.stream.Stream,
    payload: bytes,
    pts: int,
    duration: int | None,
) -> None:
    packet = av.Packet(payload)
    packet.stream = stream
    packet.time_base = stream.time_base
    packet.pts = packet.dts = pts
    if duration is not None:
        packet.duration = duration
    out.mux(packet)


def _tone_frames(end_s: Fraction, freq_hz: float) -> Iterator[av.AudioFrame]:
    total = int(end_s * AUDIO_RATE_HZ)
    for start in range(0, max(total, 1), AUDIO_FRAME_SAMPLES):
        t = (np.arange(start, start + AUDIO_FRAME_SAMPLES) / AUDIO_RATE_HZ).astype(np.float32)
        samples = (0.3 * np.sin(2 * np.pi * freq_hz * t)).reshape(1, -1).astype(np.float32)
        frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
        frame.sample_rate = AUDIO_RATE_HZ
        frame.pts = start
        frame.time_base = Fraction(1, AUDIO_RATE_HZ)
        yield frame


def _write_tone(out: av.container.OutputContainer, stream: av.AudioStream, end_s: Fraction) -> None:
    freq_hz = 440.0 + 220.0 * stream.index
    for frame in _tone_frames(end_s, freq_hz):
        out.mux(stream.encode(frame))
    out.mux(stream.encode(None))


def _write_subtitles(
    out: av.container.OutputContainer, stream: av.stream.Stream, codec: str, end_s: Fraction
) -> None:
    """One cue every 200 ms, each shown for 100 ms."""
    step_ms = 200
    for n, start_ms in enumerate(range(0, int(end_s * 1000), step_ms)):
        text = f"cue {n}".encode()
        if codec == "mov_text":
            text = len(text).to_bytes(2, "big") + text
        _mux_bytes(out, stream, text, start_ms, 100)


def long_gop(path: Path) -> Path:
    """60 frames, one keyframe every 50: reads must decode mid-GOP."""
    return write_clip(path, ClipSpec(frames=60, gop=50))


def with_bframes(path: Path) -> Path:
    """40 frames with 3 B-frames between references: decode order differs from display."""
    return write_clip(path, ClipSpec(frames=40, gop=16, bframes=3))


def variable_rate_pts(frames: int) -> tuple[int, ...]:
    """Irregular gaps (1/1000 s units): 30, 45, 60, 33, ... ms."""
    gaps = [30, 45, 60, 33, 41, 90, 20]
    pts = [0]
    for i in range(frames - 1):
        pts.append(pts[-1] + gaps[i % len(gaps)])
    return tuple(pts)


def decode_rgb(path: Path, keep: range | None = None) -> list[tuple[int, np.ndarray]]:
    """Every frame (pts, RGB image) by plain sequential decoding, converted as the reader
    converts; ``keep`` limits indices."""
    frames: list[tuple[int, np.ndarray]] = []
    colour = video_colour(probe(path).video)
    with av.open(str(path)) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if keep is not None and i >= keep.stop:
                break
            if keep is None or i in keep:
                frames.append((frame.pts, to_rgb(frame, colour)))
    return frames


def decode_planes(path: Path) -> list[np.ndarray]:
    """Every frame's pixels in its own pixel format (no colour conversion)."""
    with av.open(str(path)) as container:
        return [frame.to_ndarray() for frame in container.decode(video=0)]


def yuv_of(image: np.ndarray, pix_fmt: str, source: VideoStreamInfo | None = None) -> np.ndarray:
    """``image`` (RGB) converted to ``pix_fmt`` the way the segment writer converts it
    (with ``source``'s colour, as for frames of that video)."""
    colour = BT709_LIMITED if source is None else video_colour(source)
    return to_encoder_frame(image, pix_fmt, colour).to_ndarray()


def packets_of(path: Path, kind: str) -> list[tuple[int, Fraction | None, Fraction, bytes]]:
    """(stream position, time of pts, duration, payload) of every packet of ``kind`` streams."""
    out = []
    with av.open(str(path)) as container:
        streams = [s for s in container.streams if s.type == kind]
        if not streams:
            return out
        for packet in container.demux(*streams):
            if packet.size == 0:
                continue
            tb = packet.time_base
            time = None if packet.pts is None else packet.pts * tb
            duration = (packet.duration or 0) * tb
            out.append((streams.index(packet.stream), time, duration, bytes(packet)))
    return out


def segment_bounds(frame_count: int, segments: int) -> list[tuple[int, int]]:
    """``segments`` near-equal frame ranges covering ``[0, frame_count)`` (some may be empty)."""
    cuts = [round(frame_count * k / segments) for k in range(segments + 1)]
    return list(itertools.pairwise(cuts))


def simulate_pipeline(
    source: Path,
    output: Path,
    *,
    segments: int,
    settings: EncodeSettings,
    scale: int = 1,
) -> MediaInfo:
    """What a job does with a trivial model (identity, or nearest-neighbour upscaling by
    ``scale``): read each segment frame-exactly, encode it alone, then join the
    segments; returns the source's probe."""
    info = probe(source)
    video = info.video
    check_output_container(info, output)
    work = output.parent / f"{output.name}.segments"
    work.mkdir(exist_ok=True)
    paths = []
    for k, (start, end) in enumerate(segment_bounds(video.frame_count, segments)):
        path = work / f"{k:04d}{SEGMENT_SUFFIX}"
        size_wh = (video.width * scale, video.height * scale)
        with SegmentWriter(
            path, settings, size_wh, video.time_base, video.avg_rate, source=video
        ) as writer:
            for frame in read_frames(source, video, start, end):
                image = frame.image
                if scale != 1:
                    image = image.repeat(scale, axis=0).repeat(scale, axis=1)
                writer.write(image, frame.pts)
        paths.append(path)
    size_wh = (video.width * scale, video.height * scale)
    join_segments(paths, info, output, expected_size_wh=size_wh)
    return info


# Every generated clip the media tests use, by file name (the extension picks the container).
CLIPS: dict[str, ClipSpec] = {
    # constant 25 fps, AAC audio, titles on the file and on the video stream
    "cfr_audio.mp4": ClipSpec(
        frames=30,
        audio_languages=("eng",),
        metadata={"title": "cfr clip", "comment": "kept"},
        video_metadata={"title": "main video"},
    ),
    # irregular pts in 1/1000 s, two audio tracks, an SRT subtitle track, a font
    "vfr.mkv": ClipSpec(
        frames=30,
        time_base=Fraction(1, 1000),
        pts=variable_rate_pts(30),
        audio_languages=("eng", "fra"),
        subtitle="subrip",
        attachment=True,
        metadata={"title": "vfr clip"},
    ),
    # irregular pts in 1/90000 s, rotated 90°, mov_text subtitles, audio
    "vfr_rotated.mp4": ClipSpec(
        frames=30,
        time_base=Fraction(1, 90000),
        pts=tuple(p * 90 for p in variable_rate_pts(30)),
        rotation=90,
        subtitle="mov_text",
        audio_languages=("fra",),  # a language QuickTime (.mov) can store as well
    ),
    # 3 B-frames between references: decode order differs from presentation order
    "bframes.mp4": ClipSpec(frames=40, gop=16, bframes=3),
    # one keyframe every 50 frames: reads start mid-GOP
    "long_gop.mp4": ClipSpec(frames=60, gop=50),
    # odd size; yuv420p cannot hold it, so the source is 4:4:4
    "odd.mp4": ClipSpec(size_wh=(99, 67), frames=20),
    # a single frame
    "single.mp4": ClipSpec(frames=1),
    # 10-bit H.264 (High 10) with B-frames, in Matroska
    "ten_bit.mkv": ClipSpec(pix_fmt="yuv420p10le", frames=20, bframes=2),
    # rotated 270° with two audio tracks
    "two_audio_rotated.mp4": ClipSpec(frames=20, audio_languages=("eng", "spa"), rotation=270),
    # MPEG-TS with audio and a KLV data stream (its timestamps start after zero)
    "data.ts": ClipSpec(frames=24, audio_languages=("eng",), data=True),
}
