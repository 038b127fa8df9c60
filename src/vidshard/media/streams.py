"""Which of the input's other streams go into the output, and how.

Every audio, subtitle, data and attachment stream (and any other video) that the
output's container can hold is copied packet for packet; each is tried in a dry run, a
header written to memory. A timecode track (QuickTime/MP4 ``tmcd``) is not copied as
packets: the MOV and MP4 muxers write it again from the video's ``timecode`` tag, and
Matroska keeps that tag. Data, attachments, cover art and timecodes that the container
cannot hold are dropped with a warning naming each (a job never fails over metadata);
an audio, subtitle or video stream it cannot hold is refused before any work, by
:func:`~vidshard.media.output_check.check_output_container`.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass

import av
import av.container
import av.stream

logger = logging.getLogger(__name__)

COPIED_KINDS = frozenset({"audio", "subtitle", "data", "attachment", "video"})
# Kinds that describe the video rather than being watched or heard: dropped, not refused.
DROPPABLE_KINDS = frozenset({"data", "attachment"})
TIMECODE_TAG = "timecode"
# Muxers that write a timecode track from the video's tag, and those that keep the tag.
TIMECODE_TRACK_FORMATS = frozenset({"mov", "mp4"})
STREAM_TAG_FORMATS = frozenset({"matroska", "webm"})
TIMECODE_FORMATS = TIMECODE_TRACK_FORMATS | STREAM_TAG_FORMATS


@dataclass(frozen=True)
class StreamPlan:
    """What an output of ``format_name`` does with each of the source's other streams."""

    copied: tuple[int, ...]  # source stream indices, copied packet for packet
    dropped: tuple[str, ...]  # streams the container cannot hold and a job may lose
    refused: str | None  # the first stream the container cannot hold and a job must keep


def plan_streams(
    src: av.container.InputContainer, video_index: int, format_name: str
) -> StreamPlan:
    """Decide, for every stream of ``src`` but the processed video, copy, drop or refuse."""
    copied: list[int] = []
    dropped: list[str] = []
    refused: str | None = None
    keeps_timecode = format_name in TIMECODE_FORMATS
    for stream in src.streams:
        if stream.index == video_index:
            continue
        if is_timecode_track(stream):
            if not keeps_timecode:
                dropped.append(stream_label(stream))
            continue  # written again from the tag, never copied as packets
        if stream.type in COPIED_KINDS and muxable(format_name, template=stream):
            copied.append(stream.index)
        elif stream.type not in COPIED_KINDS or is_droppable(stream):
            dropped.append(stream_label(stream))
        elif refused is None:
            refused = stream_label(stream)
    return StreamPlan(copied=tuple(copied), dropped=tuple(dropped), refused=refused)


def is_timecode_track(stream: av.stream.Stream) -> bool:
    """A QuickTime/MP4 timecode track: a data stream the demuxer tags with its timecode."""
    return stream.type == "data" and tag_value(stream.metadata, TIMECODE_TAG) is not None


def tag_value(tags: dict[str, str], name: str) -> str | None:
    """A tag by name in any case (Matroska's are upper case, as FFmpeg matches them)."""
    for key, value in tags.items():
        if key.lower() == name and value:
            return str(value)
    return None


def pop_tag(tags: dict[str, str], name: str) -> None:
    """Remove a tag in every case it is spelled."""
    for key in [k for k in tags if k.lower() == name]:
        del tags[key]


def is_droppable(stream: av.stream.Stream) -> bool:
    """Data, attachments and cover art: what a job may lose when the container cannot
    hold it (with a warning), unlike audio, subtitles and video."""
    cover_art = stream.type == "video" and bool(
        stream.disposition & av.stream.Disposition.attached_pic
    )
    return stream.type in DROPPABLE_KINDS or cover_art


def timecode_of(src: av.container.InputContainer, video_index: int) -> str | None:
    """The source's timecode: the video's tag, else a timecode track's, else the file's."""
    tagged = [s for s in src.streams if s.index == video_index]
    tagged += [s for s in src.streams if is_timecode_track(s)]
    for stream in tagged:
        if value := tag_value(stream.metadata, TIMECODE_TAG):
            return value
    return tag_value(src.metadata, TIMECODE_TAG)


def stream_label(stream: av.stream.Stream) -> str:
    """``stream #2 (data klv)``: index, kind and codec, for one-line messages."""
    if is_timecode_track(stream):
        return f"stream #{stream.index} (timecode track {tag_value(stream.metadata, TIMECODE_TAG)})"
    kind = "cover art" if stream.type == "video" and is_droppable(stream) else stream.type
    return f"stream #{stream.index} ({kind} {codec_label(stream)})"


def codec_label(stream: av.stream.Stream) -> str:
    if stream.codec_context is not None:
        return str(stream.codec_context.codec.canonical_name)
    if stream.type == "attachment":
        return str(getattr(stream, "mimetype", None) or "unknown type")
    return str(getattr(stream, "name", None) or "unknown codec")


def muxable(
    format_name: str, *, template: av.stream.Stream | None = None, video_codec: str | None = None
) -> bool:
    """Dry run: can a ``format_name`` file take this stream (header written to memory)?"""
    try:
        out = av.open(io.BytesIO(), mode="w", format=format_name)
    except (av.FFmpegError, ValueError):
        return False
    try:
        if video_codec is not None:
            out.add_stream(video_codec)
            return True
        if template is None:
            raise ValueError("muxable: expected a template stream or a video codec")
        out.add_stream_from_template(template)
        out.start_encoding()
    except (av.FFmpegError, ValueError):
        return False
    finally:
        try:
            out.close()
        except (av.FFmpegError, ValueError):
            logger.debug("dry-run close failed", exc_info=True)
    return True
