"""Join encoded segments into one file, copy the input's other streams, verify, publish.

The segments' video packets are remuxed in order (no re-encode) under the first
segment's stream parameters; audio, subtitle, data and attachment streams are copied
packet for packet from the source; the display matrix (rotation) and metadata come
from the source. Everything is written to a hidden temp file next to the output,
verified by probing it, and only then renamed onto the output.
"""

from __future__ import annotations

import heapq
import logging
import os
import secrets
from collections.abc import Iterator, Sequence
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

from .output_check import (
    COPIED_KINDS,
    NEGATIVE_TS_FORMATS,
    TS_NEGATIVE_FLAG,
    check_output_container,
)
from .types import MediaInfo
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
) -> None:
    """Remux ``segment_paths`` with ``source``'s other streams into ``output``, atomically.

    Nothing is left at ``output`` (nor a temp file) when joining or verifying fails.
    """
    output = Path(output)
    paths = [Path(p) for p in segment_paths]
    if not paths:
        raise MediaError(f"{output.name}: expected at least one segment to join, got none")
    if not output.parent.is_dir():
        raise OutputError(f"{output}: the directory {output.parent} does not exist")
    tmp = output.with_name(f".{output.name}.partial-{secrets.token_hex(4)}{output.suffix}")
    try:
        _remux(paths, source, tmp)
        verify_output(
            tmp, source.video, expected_size_wh=expected_size_wh, expected_pts=expected_pts
        )
        _publish(tmp, output)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    logger.info("%s: joined %d segments", output, len(paths))


def _publish(tmp: Path, output: Path) -> None:
    """Rename the verified temp file onto ``output``; a refusal is the output's problem."""
    try:
        os.replace(tmp, output)
    except OSError as exc:
        failure = write_failure(exc, str(output))
        raise failure or OutputError(f"cannot write {output}: {exc.strerror or exc}") from exc


def _remux(segment_paths: list[Path], source: MediaInfo, tmp: Path) -> None:
    try:
        out = av.open(str(tmp), mode="w")
    except (av.FFmpegError, OSError, ValueError) as exc:
        raise OutputError(f"{tmp.parent}: cannot write the output here ({exc})") from exc
    try:
        with out, av.open(str(source.path), mode="r") as src:
            out_video = _add_video_from_segments(out, segment_paths, src, source)
            copied = _add_copied_streams(out, src, source)
            out.metadata.update(_kept_tags(src.metadata))
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
        raise failure or MediaError(f"{tmp.name}: joining segments failed: {exc}") from exc


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
) -> dict[int, av.stream.Stream]:
    """Output streams for every source stream except the processed video, by index."""
    copied: dict[int, av.stream.Stream] = {}
    for stream in src.streams:
        if stream.index == source.video.index:
            continue
        if stream.type not in COPIED_KINDS:
            logger.warning(
                "%s: not copying stream #%d (%s)", source.path, stream.index, stream.type
            )
            continue
        new = out.add_stream_from_template(stream, opaque=True)  # copy, no encoder needed
        if stream.time_base:
            new.time_base = stream.time_base
        new.metadata.update(_kept_tags(stream.metadata))
        new.disposition = stream.disposition
        copied[stream.index] = new
    return copied


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
