"""A window of a live stream recorded to a file, for ``/process_video`` with a stream URL.

The video stream's packets are copied as they come (no decoding, no re-encoding) into a
Matroska file, from the first keyframe on, their timestamps moved to start at 0, until
the window's ``duration_s`` of stream time is there. The source ending or stalling
earlier ends the recording with what it holds (a warning says so); nothing at all is an
:class:`~vidshard.errors.InputError`. Audio is not recorded.

PyAV cannot interrupt a read from outside, so the copy runs on a thread of its own and
the job's thread waits for it, looking at the job's cancel event every
:data:`TICK_S`: a cancel, or the whole recording's deadline (the window, plus the time to
connect and to wait for data), ends the job at once, and the copying thread, told to
stop, removes its partial file within a read timeout. The finished file is kept in the
job's folder, so a job resumed after a restart uses it again.
"""

from __future__ import annotations

import logging
import threading
import time
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import av.container

from vidshard.errors import Cancelled, InputError
from vidshard.streams.sources import describe_error, open_options, parse_source

from .checks import hide_credentials

logger = logging.getLogger(__name__)

TICK_S = 0.25
RECORDING_NAME = "recording.mkv"
DEADLINE_MARGIN_S = 5.0


class _Stop(Exception):
    """The job stopped waiting: the copy ends without a file."""


def record_window(
    url: str,
    duration_s: float,
    folder: Path,
    cancel: threading.Event,
    *,
    transport: str = "tcp",
    open_timeout_s: float = 10.0,
    read_timeout_s: float = 10.0,
) -> Path:
    """``duration_s`` of the live stream at ``url`` as ``folder/recording.mkv`` (kept
    there: a second call returns it at once); :class:`Cancelled` once ``cancel`` is set."""
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / RECORDING_NAME
    if target.exists():
        return target
    shown = hide_credentials(url)
    stop = threading.Event()
    outcome: list[BaseException | None] = []

    def copy() -> None:
        try:
            _copy(url, shown, duration_s, target, stop, transport, open_timeout_s, read_timeout_s)
            outcome.append(None)
        except BaseException as exc:  # handed to the waiting thread
            outcome.append(exc)

    thread = threading.Thread(target=copy, name="record-stream", daemon=True)
    thread.start()
    allowed_s = duration_s + open_timeout_s + read_timeout_s + DEADLINE_MARGIN_S
    deadline_s = time.monotonic() + allowed_s
    try:
        while thread.is_alive():
            thread.join(TICK_S)
            if cancel.is_set():
                raise Cancelled(f"the recording of {shown} was cancelled")
            if time.monotonic() > deadline_s:
                raise InputError(
                    f"video_path: the recording of {shown} did not end within {allowed_s:.0f} s"
                )
    finally:
        stop.set()
    failure = outcome[0] if outcome else None
    if failure is not None:
        raise failure
    return target


def _copy(
    url: str,
    shown: str,
    duration_s: float,
    target: Path,
    stop: threading.Event,
    transport: str,
    open_timeout_s: float,
    read_timeout_s: float,
) -> None:
    source = parse_source(url)
    partial = target.with_name(f".{target.name}.partial")
    try:
        container = av.open(
            source.target,
            options=open_options(source, transport),
            timeout=(open_timeout_s, read_timeout_s),
        )
    except (av.FFmpegError, OSError) as exc:
        raise InputError(f"video_path: cannot record {shown}: {describe_error(exc)}") from None
    try:
        if not container.streams.video:
            raise InputError(f"video_path: {shown} has no video stream")
        packets = _window(container, shown, duration_s, partial, stop)
    except _Stop:
        partial.unlink(missing_ok=True)
        return
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    finally:
        container.close()
    partial.replace(target)
    logger.info("recorded %d packets of %s", packets, shown)


def _window(
    container: av.container.InputContainer,
    shown: str,
    duration_s: float,
    partial: Path,
    stop: threading.Event,
) -> int:
    """Copy the window's packets into ``partial``; how many."""
    stream = container.streams.video[0]
    packets = 0
    first: int | None = None
    started_s = 0.0
    ended = ""
    with av.open(str(partial), "w", format="matroska") as out:
        copy = out.add_stream_from_template(stream)
        try:
            for packet in container.demux(stream):
                if stop.is_set():
                    raise _Stop
                stamp = packet.dts if packet.dts is not None else packet.pts
                if stamp is None or (first is None and not packet.is_keyframe):
                    continue  # a flush packet, or before the first keyframe
                if first is None:
                    first, started_s = stamp, time.monotonic()
                if _elapsed_s(packet, first, started_s) >= duration_s:
                    break
                _shift(packet, first)
                packet.stream = copy
                out.mux(packet)
                packets += 1
            else:
                ended = "the stream ended"
        except (av.FFmpegError, OSError) as exc:
            if stop.is_set():
                raise _Stop from None
            ended = describe_error(exc)
    if not packets:
        raise InputError(
            f"video_path: nothing recorded from {shown}: {ended or 'no keyframe came'}"
        )
    if ended:
        logger.warning("the recording of %s ended early (%s): %d packets", shown, ended, packets)
    return packets


def _elapsed_s(packet: av.Packet[Any], first: int, started_s: float) -> float:
    """Stream time since the window's first packet (wall time when it has none)."""
    if packet.pts is None or packet.time_base is None:
        return time.monotonic() - started_s
    return float((packet.pts - first) * Fraction(packet.time_base))


def _shift(packet: av.Packet[Any], first: int) -> None:
    if packet.pts is not None:
        packet.pts -= first
    if packet.dts is not None:
        packet.dts -= first
