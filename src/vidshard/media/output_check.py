"""Refuse an output path before any work is done, with a message that says what to use.

The output's container must exist for its extension and must be able to hold every
video, audio and subtitle stream of the input (a SubRip track cannot go into MP4, a
mov_text track cannot go into Matroska) and the input's negative start times (AAC
priming) when the container would otherwise shift every timestamp. Data, attachments
and timecodes it cannot hold are no reason to refuse: the join drops them with a
warning (:mod:`vidshard.media.streams`).
"""

from __future__ import annotations

import logging
import os
import tempfile
from fractions import Fraction
from pathlib import Path
from typing import cast

import av
import av.container
import av.format
import av.stream

from vidshard.errors import OutputError, write_failure

from .source import opened_source
from .streams import COPIED_KINDS, muxable, plan_streams, stream_label
from .types import MediaInfo

logger = logging.getLogger(__name__)

SUGGESTED_SUFFIXES = (".mkv", ".mp4", ".mov")
# Muxers that store negative timestamps when asked to (instead of shifting every stream).
NEGATIVE_TS_FORMATS = frozenset({"matroska", "webm"})
# The muxer stores negative times (the stub types the value as Flags; it is an int).
TS_NEGATIVE_FLAG = cast(int, av.format.Flags.ts_negative.value)
MAX_START_PACKETS = 500  # packets read to find every stream's first timestamp


def check_output_container(
    source: MediaInfo, output: str | Path, *, video_codec: str | None = None
) -> None:
    """Raise :class:`OutputError` before any work when ``output`` cannot be written as asked."""
    output = Path(output)
    if output.exists() and output.resolve() == source.path.resolve():
        raise OutputError(f"{output}: is the input file, expected a different output path")
    if not output.parent.is_dir():
        raise OutputError(f"{output}: the directory {output.parent} does not exist")
    check_writable(output)
    format_name = _format_for(output)  # first: an unknown extension needs no scan
    negative = _negative_starts(source)

    def problem_with(format_name: str) -> str | None:
        return _first_unmuxable(source, format_name, video_codec) or _negative_problem(
            negative, format_name
        )

    problem = problem_with(format_name)
    if problem is None:
        return
    candidates = dict.fromkeys([source.path.suffix.lower(), *SUGGESTED_SUFFIXES])
    better = [
        s
        for s in candidates
        if s
        and s != output.suffix.lower()
        and problem_with(_format_for(output.with_suffix(s))) is None
    ]
    hint = f"; use {better[0]} instead" if better else ""
    raise OutputError(f"{output}: the {format_name} container cannot hold {problem}{hint}")


def check_writable(output: Path) -> None:
    """Create and remove an empty hidden file beside ``output``: ``os.access`` misses
    read-only mounts, ACLs and file systems that refuse new files even to root."""
    where = f"in {output.parent}"
    try:
        fd, name = tempfile.mkstemp(dir=output.parent, prefix=f".{output.name}.check-")
    except OSError as exc:
        failure = write_failure(exc, where)
        raise failure or OutputError(f"cannot write {where}: {exc.strerror or exc}") from exc
    os.close(fd)
    os.unlink(name)


def _negative_starts(source: MediaInfo) -> list[tuple[str, Fraction]]:
    """Streams (described) whose first packet is shown before time zero, e.g. AAC priming."""
    firsts: dict[int, Fraction] = {}
    labels: dict[int, str] = {}
    with opened_source(source.path, source.identity) as name, av.open(name, mode="r") as src:
        for stream in src.streams:
            if stream.type in COPIED_KINDS:
                labels[stream.index] = stream_label(stream)
        for count, packet in enumerate(src.demux()):
            if count >= MAX_START_PACKETS or len(firsts) == len(labels):
                break
            index = packet.stream_index
            if packet.size and packet.pts is not None and index in labels and index not in firsts:
                firsts[index] = packet.pts * packet.time_base
    return [(labels[i], start) for i, start in sorted(firsts.items()) if start < 0]


def _negative_problem(negative: list[tuple[str, Fraction]], format_name: str) -> str | None:
    if not negative:
        return None
    flags = av.ContainerFormat(format_name, "w").flags
    if flags & TS_NEGATIVE_FLAG or format_name in NEGATIVE_TS_FORMATS:
        return None
    label, start = negative[0]
    return f"the negative start time of {label}, which starts at {float(start):.3f} s"


def _format_for(output: Path) -> str:
    """The FFmpeg muxer for ``output``'s extension (no file is created)."""
    try:
        container = av.open(str(output), mode="w")
    except ValueError as exc:
        raise OutputError(
            f"{output}: FFmpeg knows no container for the extension {output.suffix!r}; "
            "use .mp4 or .mkv"
        ) from exc
    except (av.FFmpegError, OSError) as exc:
        raise OutputError(f"{output}: cannot be written ({exc})") from exc
    name = container.format.name
    container.close()
    return name


def _first_unmuxable(source: MediaInfo, format_name: str, video_codec: str | None) -> str | None:
    """A description of the first stream ``format_name`` cannot take and a job must keep
    (video, audio, subtitles), or None; data and attachments are dropped at the join."""
    if video_codec is not None and not muxable(format_name, video_codec=video_codec):
        return f"the {video_codec} video"
    with opened_source(source.path, source.identity) as name, av.open(name, mode="r") as src:
        refused = plan_streams(src, source.video.index, format_name).refused
    return None if refused is None else f"{refused} of {source.path.name}"
