"""Probe a media file: a demux-only scan of every video packet, plus the other streams.

Reading packets is cheap (no decoding), so the probe knows every frame's timestamp and
which frames are keyframes; the planner and the frame-exact reader are built on that.
One frame is decoded, because the rotation lives in the stream's coded side data,
which PyAV exposes only on decoded frames.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import av.container
import av.stream
import av.video.stream

from vidshard.errors import InputError
from vidshard.pathnames import path_name_problem, shown

from .colour import ColourTags, colour_dict
from .source import FileIdentity, identified_source
from .types import MediaInfo, StreamInfo, VideoStreamInfo

logger = logging.getLogger(__name__)

# Demuxers that read a still image (or an image sequence), not a video.
_IMAGE_FORMAT_SUFFIX = "_pipe"
_IMAGE_FORMATS = frozenset({"image2", "png_pipe", "jpeg_pipe", "webp_pipe", "bmp_pipe"})
# Demuxers whose header declares the file's duration (Matroska's Segment Info), so a
# file whose packets end well before it has lost its tail.
_DECLARED_DURATION_FORMATS = frozenset({"matroska", "webm"})
# How far packets may end before the declared duration: more than a frame's or an audio
# packet's length (the last one's duration is not always stored), much less than a cut.
MIN_MISSING_TAIL_S = 1.0


@dataclass(frozen=True)
class PacketRecord:
    """What the scan keeps of one video packet (decode order)."""

    pts: int | None
    dts: int | None
    duration: int | None
    is_keyframe: bool


@dataclass(frozen=True)
class FrameTable:
    """The video's frames in presentation order."""

    pts: tuple[int, ...]
    keyframes: tuple[int, ...]
    durations: tuple[int, ...]


def probe(path: str | Path, expected: FileIdentity | None = None) -> MediaInfo:
    """Scan ``path`` and describe its video stream and every other stream.

    The result records the identity of the file read, so that later opens of the same
    job (workers, the join) read that file or refuse; with ``expected``, a file that is
    not that one is refused now (:class:`~vidshard.errors.InputChanged`).
    """
    file = Path(path)
    if expected is None:  # else the identity says whether it is still that file
        _check_file(file)
    with identified_source(file, expected) as (name, identity), _open(file, name) as container:
        _reject_image(container, file)
        video = _main_video_stream(container, file)
        scan = _scan(container, video, file)
        records, counts, first_key = scan.records, scan.counts, scan.first_key
        table = frame_table(records, file)
        _check_complete(container, scan, table, video, file)
        pix_fmt, rotation, colour_tags = _first_frame_props(video, first_key)
        video_info = _video_info(video, table, pix_fmt, rotation, colour_tags)
        duration_s = container.duration / 1_000_000 if container.duration else video_info.duration_s
        others = tuple(
            _stream_info(s, counts.get(s.index, 0)) for s in container.streams if s is not video
        )
        return MediaInfo(
            path=file,
            format_name=container.format.name,
            size_bytes=identity.size_bytes,
            duration_s=duration_s,
            video=video_info,
            streams=others,
            metadata=dict(container.metadata),
            identity=identity,
        )


def _check_file(file: Path) -> int:
    problem = path_name_problem(str(file))
    if problem is not None:
        raise InputError(f"{shown(str(file))} cannot name a file: {problem}")
    if not file.exists():
        raise InputError(f"{file}: no such file")
    if file.is_dir():
        raise InputError(f"{file}: is a directory, expected a video file")
    size_bytes = file.stat().st_size
    if size_bytes == 0:
        raise InputError(f"{file}: is empty (0 bytes), expected a video file")
    return size_bytes


def _open(file: Path, name: str) -> av.container.InputContainer:
    try:
        return av.open(name, mode="r", metadata_errors="replace")
    except av.FFmpegError as exc:
        raise InputError(
            f"{file}: not a media file FFmpeg can read, or truncated ({exc.strerror or exc})"
        ) from exc
    except OSError as exc:
        raise InputError(f"{file}: cannot be read ({exc.strerror or exc})") from exc


def _reject_image(container: av.container.InputContainer, file: Path) -> None:
    name = container.format.name
    if name in _IMAGE_FORMATS or name.endswith(_IMAGE_FORMAT_SUFFIX):
        codec = container.streams.video[0].codec_context.name if container.streams.video else "?"
        raise InputError(f"{file}: is a still image ({codec}), expected a video")


def _main_video_stream(
    container: av.container.InputContainer, file: Path
) -> av.video.stream.VideoStream:
    """The first video stream that is not cover art."""
    attached = av.stream.Disposition.attached_pic
    videos = [s for s in container.streams.video if not s.disposition & attached]
    for stream in videos:
        if stream.codec_context is not None:
            return stream
    if videos:  # FFmpeg demuxes it, but knows no decoder for its codec
        raise InputError(
            f"{file}: the video stream #{videos[0].index} has a codec FFmpeg cannot decode "
            "(unknown, or no decoder in this build); expected H.264, HEVC, AV1, VP9, ..."
        )
    if not container.streams:
        raise InputError(f"{file}: holds no streams (a truncated or unfinished file?)")
    found = ", ".join(f"{s.type} {_codec_name(s)}" for s in container.streams)
    raise InputError(f"{file}: has no video stream, expected one (found: {found})")


@dataclass
class _Scan:
    """What one pass over the packets found."""

    records: list[PacketRecord]  # the video's packets, decode order
    counts: dict[int, int]  # packets (with data) per stream index
    empty: dict[int, int]  # packets without data per stream index
    ends: dict[int, int]  # per stream, the latest pts + duration (stream time base)
    first_key: av.Packet[Any] | None


def _scan(
    container: av.container.InputContainer, video: av.video.stream.VideoStream, file: Path
) -> _Scan:
    """Read every packet once; keep the video packets' timing and count the others."""
    scan = _Scan(records=[], counts={}, empty={}, ends={}, first_key=None)
    records, counts, ends = scan.records, scan.counts, scan.ends
    video_index = video.index
    track_ends = container.format.name.split(",")[0] in _DECLARED_DURATION_FORMATS
    try:
        for packet in container.demux():
            index = packet.stream_index
            if packet.size == 0:
                scan.empty[index] = scan.empty.get(index, 0) + 1
                continue  # the demuxer's end-of-stream marker (or an empty sample)
            if index not in counts:
                _reject_encrypted(packet, file)
            counts[index] = counts.get(index, 0) + 1
            if track_ends and packet.pts is not None:
                end = packet.pts + (packet.duration or 0)
                if index not in ends or end > ends[index]:
                    ends[index] = end
            if index != video_index or packet.is_discard:
                continue  # discard: before an edit list's start, never shown
            is_key = packet.is_keyframe
            records.append(PacketRecord(packet.pts, packet.dts, packet.duration, is_key))
            if scan.first_key is None and is_key:
                scan.first_key = packet
    except av.FFmpegError as exc:
        raise InputError(
            f"{file}: is corrupt or truncated: reading stopped after {len(records)} video "
            f"frames ({exc.strerror or exc})"
        ) from exc
    return scan


def _reject_encrypted(packet: av.Packet[Any], file: Path) -> None:
    """Encrypted (CENC) samples carry their encryption info as packet side data."""
    has_sidedata = getattr(packet, "has_sidedata", None)  # PyAV 14.3+
    if has_sidedata is not None and has_sidedata("encryption_info"):
        raise InputError(
            f"{file}: stream #{packet.stream_index} ({packet.stream.type}) is encrypted "
            "(CENC/DRM) and vidshard cannot decrypt it; expected an unencrypted file"
        )


def _check_complete(
    container: av.container.InputContainer,
    scan: _Scan,
    table: FrameTable,
    video: av.video.stream.VideoStream,
    file: Path,
) -> None:
    """Refuse a file that has lost part of what its own header or index describes.

    MP4's index (read up front) lists every sample: a stream that yields fewer packets
    than its index is truncated. Matroska declares its duration in the header: packets
    that end more than :data:`MIN_MISSING_TAIL_S` (or two frames) before it mean a
    lost tail. Formats with neither (MPEG-TS) cannot tell a cut file from a short one.
    """
    for stream in container.streams:
        entries = getattr(stream, "index_entries", None)  # PyAV 14.3+
        listed = len(entries) if entries is not None else 0
        held = scan.counts.get(stream.index, 0)
        if listed > held + scan.empty.get(stream.index, 0):
            raise InputError(
                f"{file}: is truncated: its index lists {listed} packets of stream "
                f"#{stream.index} ({stream.type}), the file holds {held}"
            )
    if not scan.ends or not container.duration:
        return
    start_s = (container.start_time or 0) / av.time_base
    declared_s = start_s + container.duration / av.time_base
    streams = {s.index: s for s in container.streams}
    read_s = max(float(end * (streams[i].time_base or Fraction(1))) for i, end in scan.ends.items())
    tb = video.time_base or Fraction(1)
    longest_frame_s = float(max(table.durations, default=0) * tb)
    if declared_s - read_s > max(MIN_MISSING_TAIL_S, 2 * longest_frame_s):
        raise InputError(
            f"{file}: is truncated: its header declares {declared_s:.3f} s, "
            f"its packets end at {read_s:.3f} s"
        )


def frame_table(records: Iterable[PacketRecord], file: Path) -> FrameTable:
    """Turn packets (decode order) into frames (presentation order).

    A packet without pts uses its dts (streams without reordering store only one).
    """
    timed: list[tuple[int, int | None, bool]] = []
    untimed = 0
    for rec in records:
        ts = rec.pts if rec.pts is not None else rec.dts
        if ts is None:
            untimed += 1
            continue
        timed.append((ts, rec.duration, rec.is_keyframe))
    if not timed and not untimed:
        raise InputError(f"{file}: the video stream has no frames")
    if untimed:
        raise InputError(
            f"{file}: {untimed} of {untimed + len(timed)} video packets have no timestamp, "
            "expected every frame timed (a raw elementary stream? remux it into .mkv or .mp4)"
        )
    timed.sort(key=lambda item: item[0])
    pts = tuple(item[0] for item in timed)
    duplicates = len(pts) - len(set(pts))
    if duplicates:
        raise InputError(
            f"{file}: {duplicates} video frames share a timestamp with another, "
            "expected distinct timestamps"
        )
    keyframes = tuple(i for i, item in enumerate(timed) if item[2])
    return FrameTable(pts=pts, keyframes=keyframes, durations=_durations(timed))


def _durations(timed: list[tuple[int, int | None, bool]]) -> tuple[int, ...]:
    """The packet's own duration, else the gap to the next frame, else the previous one."""
    out: list[int] = []
    for i, (ts, duration, _) in enumerate(timed):
        if duration:
            out.append(duration)
        elif i + 1 < len(timed):
            out.append(timed[i + 1][0] - ts)
        else:
            out.append(out[-1] if out else 0)
    return tuple(out)


def _first_frame_props(
    video: av.video.stream.VideoStream, first_key: av.Packet[Any] | None
) -> tuple[str | None, int, ColourTags]:
    """Decode the first keyframe for the pixel format, the display rotation and the
    colour tags (the bitstream's, else the container's)."""
    pix_fmt = video.codec_context.pix_fmt
    tags = ColourTags.of(video.codec_context)
    if first_key is None:
        return pix_fmt, 0, tags
    try:
        frames = list(video.codec_context.decode(first_key))
        frames += video.codec_context.decode(None)
    except av.FFmpegError as exc:
        logger.warning("%s: could not decode the first keyframe: %s", video.container.name, exc)
        return pix_fmt, 0, tags
    if not frames:
        return pix_fmt, 0, tags
    frame = frames[0]
    return frame.format.name, _normalise_rotation(frame.rotation), ColourTags.of(frame)


def _normalise_rotation(degrees: float) -> int:
    """Counter-clockwise degrees in [0, 360), rounded to whole degrees."""
    return round(degrees) % 360


def _video_info(
    video: av.video.stream.VideoStream,
    table: FrameTable,
    pix_fmt: str | None,
    rotation: int,
    colour_tags: ColourTags,
) -> VideoStreamInfo:
    time_base = video.time_base or Fraction(1, 1)
    return VideoStreamInfo(
        index=video.index,
        codec=video.codec_context.codec.canonical_name,  # "av1", not the decoder "libdav1d"
        width=video.codec_context.width,
        height=video.codec_context.height,
        pix_fmt=pix_fmt,
        time_base=time_base,
        pts=table.pts,
        keyframes=table.keyframes,
        durations=table.durations,
        avg_rate=_avg_rate(video.average_rate, table, time_base),
        rotation=rotation,
        bit_depth=bit_depth(pix_fmt),
        colour_tags=colour_tags,
    )


def _avg_rate(
    stream_rate: Fraction | None, table: FrameTable, time_base: Fraction
) -> Fraction | None:
    if stream_rate:
        return stream_rate
    span = table.pts[-1] - table.pts[0]
    if len(table.pts) < 2 or span <= 0:
        return None
    return Fraction(len(table.pts) - 1) / (span * time_base)


def bit_depth(pix_fmt: str | None) -> int:
    """Bits per component of ``pix_fmt`` (8 when unknown)."""
    if not pix_fmt:
        return 8
    try:
        components = av.VideoFormat(pix_fmt).components
    except (ValueError, av.FFmpegError):
        return 8
    return max((c.bits for c in components), default=8)


def _codec_name(stream: av.stream.Stream) -> str | None:
    """The codec's name; an attachment's MIME type (its ``name`` is a file name)."""
    ctx = stream.codec_context
    if ctx is not None:
        return str(ctx.codec.canonical_name)
    name = getattr(stream, "mimetype" if stream.type == "attachment" else "name", None)
    return str(name) if name else None


def _stream_info(stream: av.stream.Stream, packets: int) -> StreamInfo:
    language = stream.metadata.get("language")
    return StreamInfo(
        index=stream.index,
        kind=stream.type,
        codec=_codec_name(stream),
        language=None if language in (None, "", "und") else language,
        packets=packets,
    )


def probe_to_dict(info: MediaInfo) -> dict[str, Any]:
    """A JSON-friendly view of ``info`` (``vidshard probe --json``)."""
    video = info.video
    return {
        "path": str(info.path),
        "format": info.format_name,
        "size_bytes": info.size_bytes,
        "duration_s": info.duration_s,
        "metadata": dict(info.metadata),
        "video": {
            "index": video.index,
            "codec": video.codec,
            "width": video.width,
            "height": video.height,
            "pix_fmt": video.pix_fmt,
            "bit_depth": video.bit_depth,
            "colour": colour_dict(video),
            "rotation": video.rotation,
            "time_base": str(video.time_base),
            "avg_rate": None if video.avg_rate is None else str(video.avg_rate),
            "avg_fps": None if video.avg_rate is None else float(video.avg_rate),
            "frame_count": video.frame_count,
            "duration_s": video.duration_s,
            "pts": list(video.pts),
            "keyframes": list(video.keyframes),
            "durations": list(video.durations),
        },
        "streams": [
            {
                "index": s.index,
                "kind": s.kind,
                "codec": s.codec,
                "language": s.language,
                "packets": s.packets,
            }
            for s in info.streams
        ],
    }
