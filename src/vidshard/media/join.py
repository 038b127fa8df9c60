"""Join encoded segments into one file, copy the input's other streams, verify, publish.

The segments' video packets are remuxed in order (no re-encode) under the first
segment's stream parameters, which carry the colour tags the writer set; audio,
subtitle, data and attachment streams are copied packet for packet from the source
where the container holds them (:mod:`vidshard.media.streams`: others are dropped with
a warning, a timecode is carried as the video's tag); the display matrix (rotation) and
metadata come from the source. Everything is written to a hidden temp file next to the output,
verified by probing it, and only then renamed onto the output.
"""

from __future__ import annotations

import heapq
import logging
import os
import secrets
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import av.container
import av.format
import av.stream
import av.video.stream
import numpy as np
from av.sidedata.sidedata import Type as SideDataType

from vidshard.errors import MediaError, OutputError, write_failure

from .colour import MATRIX_NAMES, ColourTags, colour_rule, video_colour
from .output_check import NEGATIVE_TS_FORMATS, TS_NEGATIVE_FLAG, check_output_container
from .source import opened_source
from .streams import (
    TIMECODE_FORMATS,
    TIMECODE_TAG,
    TIMECODE_TRACK_FORMATS,
    is_timecode_track,
    plan_streams,
    pop_tag,
    tag_value,
    timecode_of,
)
from .types import MediaInfo, VideoStreamInfo
from .verify import verify_output
from .writer import MOV_FORMATS, muxer_options

logger = logging.getLogger(__name__)

__all__ = ["check_output_container", "join_segments", "next_dts", "verify_output"]

IDENTITY_MATRIX = (1 << 16, 0, 0, 0, 1 << 16, 0, 0, 0, 1 << 30)
# Metadata the muxer writes itself, or that described the input's encoding.
_DROPPED_TAGS = frozenset(
    {
        "major_brand",
        "minor_version",
        "compatible_brands",
        "encoder",
        "duration",
        "number_of_frames",
        "number_of_bytes",
        "bps",
        "_statistics_writing_app",
        "_statistics_writing_date_utc",
        "_statistics_tags",
    }
)


def join_segments(
    segment_paths: Sequence[Path],
    source: MediaInfo,
    output: Path,
    *,
    expected_pts: Sequence[int] | None = None,
    expected_size_wh: tuple[int, int] | None = None,
    decode: bool = True,
) -> None:
    """Remux ``segment_paths`` with ``source``'s other streams into ``output``, atomically.

    The output is verified by demuxing it (frame count, every frame's time, duration);
    with ``decode``, every frame is decoded too (the workers checked each piece's frames
    and times when they wrote it). Nothing is left at ``output`` (nor a temp file) when
    joining or verifying fails.
    """
    output = Path(output)
    paths = [Path(p) for p in segment_paths]
    if not paths:
        raise MediaError(f"{output.name}: expected at least one segment to join, got none")
    if not output.parent.is_dir():
        raise OutputError(f"{output}: the directory {output.parent} does not exist")
    tmp = output.with_name(f".{output.name}.partial-{secrets.token_hex(4)}{output.suffix}")
    try:
        notes = _remux_keeping_what_fits(paths, source, tmp)
        written = verify_output(
            tmp,
            source.video,
            expected_size_wh=expected_size_wh,
            expected_pts=expected_pts,
            decode=decode,
        )
        notes += _colour_lost(paths, written)
        _publish(tmp, output)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    for note in notes:  # once, for the output that was written
        logger.warning("%s: %s", source.path.name, note)
    logger.info("%s: joined %d segments", output, len(paths))


@dataclass(frozen=True)
class _Remuxed:
    format_name: str
    timecode: str | None  # the timecode the muxer was asked to make a track of
    dropped: tuple[str, ...]  # what the container could not hold, one line each


class _TimecodeRefused(Exception):
    """The muxer failed on a file with a timecode track: retried without one."""


def _remux_keeping_what_fits(segment_paths: list[Path], source: MediaInfo, tmp: Path) -> list[str]:
    """Remux into ``tmp``; a timecode the muxer refuses (its header or a packet fails) or
    skips is given up, never the job. Returns what the output could not keep."""
    try:
        done = _remux(segment_paths, source, tmp, timecode=True)
    except _TimecodeRefused as refused:
        tmp.unlink(missing_ok=True)
        done = _remux(segment_paths, source, tmp, timecode=False)
        return [*done.dropped, f"{refused}: not copied"]
    notes = list(done.dropped)
    if done.timecode is not None and not _has_timecode_track(tmp):  # skipped, unparsable
        notes.append(
            f"the {done.format_name} container cannot hold the timecode {done.timecode!r} at "
            f"{_rate_text(source)}: not copied"
        )
    return notes


def _colour_lost(segment_paths: list[Path], written: VideoStreamInfo) -> list[str]:
    """A line when players decode the output with another matrix or range than its
    segments were encoded with: the container and codec dropped the tags (MPEG-4 part 2
    in AVI has nowhere to put them) and the guess for its size differs."""
    for path in segment_paths:
        with av.open(str(path), mode="r") as segment:
            if segment.streams.video:
                tags = ColourTags.of(segment.streams.video[0].codec_context)
                break
    else:
        return []
    encoded = colour_rule(tags, written.size_wh, written.avg_rate, written.pix_fmt)
    shown = video_colour(written)
    if (shown.sws_matrix, shown.full_range) == (encoded.sws_matrix, encoded.full_range):
        return []
    return [
        "the output cannot carry its colour tags: players decode it with the "
        f"{_matrix_range(shown.matrix, shown.full_range)}, it was encoded with the "
        f"{_matrix_range(encoded.matrix, encoded.full_range)}"
    ]


def _matrix_range(matrix: int, full_range: bool) -> str:
    name = MATRIX_NAMES.get(matrix, f"#{matrix}")
    return f"{name} matrix, {'full' if full_range else 'limited'} range"


def _rate_text(source: MediaInfo) -> str:
    rate = source.video.avg_rate
    return f"{float(rate):g} fps" if rate else "an unknown frame rate"


def _publish(tmp: Path, output: Path) -> None:
    """Rename the verified temp file onto ``output``; a refusal is the output's problem."""
    try:
        os.replace(tmp, output)
    except OSError as exc:
        failure = write_failure(exc, str(output))
        raise failure or OutputError(f"cannot write {output}: {exc.strerror or exc}") from exc


def _remux(segment_paths: list[Path], source: MediaInfo, tmp: Path, *, timecode: bool) -> _Remuxed:
    """Write the output to ``tmp``, with the source's timecode when ``timecode``."""
    asked: str | None = None
    try:
        out = av.open(str(tmp), mode="w")
    except (av.FFmpegError, OSError, ValueError) as exc:
        raise OutputError(f"{tmp.parent}: cannot write the output here ({exc})") from exc
    try:
        with (
            out,
            opened_source(source.path, source.identity) as source_name,
            av.open(source_name, mode="r") as src,
        ):
            out_video = _add_video_from_segments(out, segment_paths, src, source)
            copied, dropped = _add_copied_streams(out, src, source)
            out.metadata.update(_kept_tags(src.metadata))
            asked = _place_timecode(out, out_video, src, source, keep=timecode)
            chapters = src.chapters()
            if chapters:
                out.set_chapters(chapters)
            out.container_options.update(muxer_options(out.format.name, source.video.time_base))
            if out.format.name in NEGATIVE_TS_FORMATS:
                out.container_options["avoid_negative_ts"] = "disabled"
            out.start_encoding()
            non_negative = not out.format.flags & TS_NEGATIVE_FLAG
            video = _video_packets(segment_paths, out_video, non_negative=non_negative)
            others = _source_packets(src, copied, out.format.name)
            for _, packet in heapq.merge(video, others, key=lambda item: item[0]):
                out.mux_one(packet)
    except (av.FFmpegError, ValueError) as exc:
        failure = write_failure(exc, f"the output in {tmp.parent}")
        if failure is None and asked is not None:
            logger.debug("%s: muxing with the timecode %r failed: %s", tmp.name, asked, exc)
            raise _TimecodeRefused(
                f"the {out.format.name} container cannot hold the timecode {asked!r} at "
                f"{_rate_text(source)}"
            ) from exc
        raise failure or MediaError(f"{tmp.name}: joining segments failed: {exc}") from exc
    return _Remuxed(out.format.name, asked, dropped)


def _add_video_from_segments(
    out: av.container.OutputContainer,
    segment_paths: list[Path],
    src: av.container.InputContainer,
    source: MediaInfo,
) -> av.stream.Stream:
    """The output video stream, templated on the first segment that holds video."""
    for path in segment_paths:
        with av.open(str(path), mode="r") as segment:
            if segment.streams.video:
                return _add_video_stream(out, segment.streams.video[0], src, source)
    raise MediaError(f"{source.path.name}: none of the {len(segment_paths)} segments holds video")


def _add_video_stream(
    out: av.container.OutputContainer,
    template: av.video.stream.VideoStream,
    src: av.container.InputContainer,
    source: MediaInfo,
) -> av.stream.Stream:
    # opaque: copy the template's codec as is (its decoder, e.g. libdav1d, has no encoder)
    stream = out.add_stream_from_template(template, opaque=True)
    stream.time_base = source.video.time_base
    src_video = _by_index(src, source.video.index)
    stream.metadata.update(_kept_tags(src_video.metadata))
    stream.disposition = src_video.disposition
    try:
        matrix = read_display_matrix(source.path, source.video.index)
    except av.FFmpegError as exc:
        logger.warning("%s: cannot read the display matrix: %s", source.path, exc)
        matrix = None
    if matrix is not None and matrix != IDENTITY_MATRIX:
        stream.set_display_matrix(matrix)  # type: ignore[attr-defined]
    elif matrix is None and source.video.rotation:
        stream.set_display_rotation(source.video.rotation)  # type: ignore[attr-defined]
    return stream


def _add_copied_streams(
    out: av.container.OutputContainer, src: av.container.InputContainer, source: MediaInfo
) -> tuple[dict[int, av.stream.Stream], tuple[str, ...]]:
    """Output streams for the source's other streams the container holds, by index, and
    a line for each one it cannot hold (dropped: data, attachments, timecodes)."""
    plan = plan_streams(src, source.video.index, out.format.name)
    if plan.refused is not None:
        raise OutputError(
            f"{source.path.name}: the {out.format.name} container cannot hold {plan.refused}"
        )
    dropped = tuple(
        f"the {out.format.name} container cannot hold {label}: not copied" for label in plan.dropped
    )
    copied: dict[int, av.stream.Stream] = {}
    for stream in (s for s in src.streams if s.index in plan.copied):
        new = out.add_stream_from_template(stream, opaque=True)  # copy, no encoder needed
        if stream.time_base:
            new.time_base = stream.time_base
        new.metadata.update(_kept_tags(stream.metadata))
        new.disposition = stream.disposition
        copied[stream.index] = new
    return copied, dropped


def _place_timecode(
    out: av.container.OutputContainer,
    out_video: av.stream.Stream,
    src: av.container.InputContainer,
    source: MediaInfo,
    *,
    keep: bool,
) -> str | None:
    """Tag the output video with the source's timecode (unless not ``keep``): MOV and MP4
    write their timecode track from it, at the video's frame rate; Matroska keeps the
    tag. Returns the timecode a track was asked for."""
    fmt = out.format.name
    value = timecode_of(src, source.video.index) if keep else None
    if fmt in MOV_FORMATS:  # the mov muxer makes a track of any timecode tag: only this one
        pop_tag(out.metadata, TIMECODE_TAG)
        pop_tag(out_video.metadata, TIMECODE_TAG)
    elif not keep:
        pop_tag(out_video.metadata, TIMECODE_TAG)
    if value is None or fmt not in TIMECODE_FORMATS:
        return None
    if tag_value(out_video.metadata, TIMECODE_TAG) is None:
        out_video.metadata[TIMECODE_TAG] = value
    if fmt not in TIMECODE_TRACK_FORMATS:
        return None
    if source.video.avg_rate and isinstance(out_video, av.VideoStream):
        out_video.codec_context.framerate = source.video.avg_rate  # the track counts frames
    return value


def _has_timecode_track(path: Path) -> bool:
    with av.open(str(path), mode="r") as written:
        return any(is_timecode_track(s) for s in written.streams)


def _by_index(container: av.container.Container, index: int) -> av.stream.Stream:
    for stream in container.streams:
        if stream.index == index:
            return stream
    raise MediaError(f"{container.name}: expected a stream #{index}, found none")


def _kept_tags(tags: dict[str, str]) -> dict[str, str]:
    """The tags to copy. MP4 reads a track's title back as ``name`` but writes ``title``."""
    kept = {k: v for k, v in tags.items() if k.lower().split("-")[0] not in _DROPPED_TAGS}
    if "name" in kept and "title" not in kept:
        kept["title"] = kept.pop("name")
    return kept


def read_display_matrix(path: Path, stream_index: int) -> tuple[int, ...] | None:
    """The video's display matrix (9 ints, FFmpeg layout), from its first decoded frame."""
    with av.open(str(path), mode="r") as container:
        stream = _by_index(container, stream_index)
        for frame in container.decode(stream):
            side_data: Any = getattr(frame, "side_data", {})
            side = side_data.get(SideDataType.DISPLAYMATRIX)
            if side is None:
                return None
            return tuple(int(v) for v in np.frombuffer(bytes(side), dtype=np.int32))
    return None


def next_dts(pts: int, dts: int | None, last_dts: int | None, *, non_negative: bool) -> int:
    """The dts to write for a packet: its own, raised just enough to stay increasing.

    Segments are encoded apart, so a segment's first dts (pulled back by the B-frame
    delay) can fall at or before the previous segment's last one. pts never changes;
    dts only moves up, and never past pts. ``non_negative`` also lifts dts to 0 (when
    pts allows) for containers that would otherwise shift every stream's timestamps.
    """
    value = pts if dts is None else dts
    floor = None if last_dts is None else last_dts + 1
    if non_negative and pts >= 0:
        floor = 0 if floor is None else max(floor, 0)
    if floor is not None and value < floor:
        value = floor
    if value > pts:
        raise MediaError(
            f"cannot keep decode timestamps increasing: packet at pts {pts} would need "
            f"dts {value} > pts (previous dts {last_dts})"
        )
    return value


def _rescale(ts: int, src_tb: Fraction, dst_tb: Fraction) -> int:
    """``ts`` from ``src_tb`` to ``dst_tb``, rounded half away from zero (as FFmpeg)."""
    exact = Fraction(ts) * src_tb / dst_tb
    whole = int(abs(exact) + Fraction(1, 2))
    return whole if exact >= 0 else -whole


def _video_packets(
    segment_paths: list[Path], out_stream: av.stream.Stream, *, non_negative: bool
) -> Iterator[tuple[float, av.Packet[Any]]]:
    """Every segment's video packets in order, in the output time base, dts fixed up."""
    out_tb = out_stream.time_base
    if out_tb is None:
        raise MediaError(f"{out_stream.container.name}: the output video has no time base")
    last_dts: int | None = None
    for path in segment_paths:
        with av.open(str(path), mode="r") as segment:
            if not segment.streams.video:
                continue  # an empty segment
            packets: Iterator[av.Packet[Any]] = segment.demux(segment.streams.video[0])
            for packet in packets:
                if packet.size == 0 or packet.pts is None:
                    continue
                src_tb = packet.time_base
                pts = _rescale(packet.pts, src_tb, out_tb)
                dts = None if packet.dts is None else _rescale(packet.dts, src_tb, out_tb)
                duration = _rescale(packet.duration or 0, src_tb, out_tb)
                last_dts = next_dts(pts, dts, last_dts, non_negative=non_negative)
                packet.time_base = out_tb
                packet.pts, packet.dts, packet.duration = pts, last_dts, duration
                packet.stream = out_stream
                yield float(last_dts * out_tb), packet


def _source_packets(
    src: av.container.InputContainer, copied: dict[int, av.stream.Stream], format_name: str
) -> Iterator[tuple[float, av.Packet[Any]]]:
    """The source's packets of the copied streams, in file order."""
    if not copied:
        return
    last_s = float("-inf")
    mov_muxer = format_name in MOV_FORMATS
    for packet in src.demux(*(_by_index(src, i) for i in copied)):
        if packet.size == 0:
            continue
        if mov_muxer and _is_mov_text_end(packet):
            continue  # the MP4 muxer writes each cue's end marker itself
        ts = packet.dts if packet.dts is not None else packet.pts
        if ts is not None:
            last_s = max(last_s, float(ts * packet.time_base))
        packet.stream = copied[packet.stream_index]
        yield last_s, packet


def _is_mov_text_end(packet: av.Packet[Any]) -> bool:
    """An empty mov_text sample: the marker that ends the previous cue."""
    ctx = packet.stream.codec_context
    return (
        packet.size == 2 and ctx is not None and ctx.name == "mov_text" and bytes(packet) == b"\0\0"
    )
