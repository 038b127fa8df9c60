"""``vidshard streams probe``: open a stream's source the way a stream reader does, decode
its first frame, and say what it is."""

from __future__ import annotations

import time
from typing import Any

import av

from vidshard.errors import InputError
from vidshard.streams.sources import describe_error, open_container, open_failure, parse_source


def probe_source(url: str, *, transport: str, timeout_s: float) -> dict[str, Any]:
    """What ``url`` gives: its container format, video codec, size, frame rate and pixel
    format, and how long its first frame took; :class:`InputError` when it gives none."""
    source = parse_source(url)
    started_s = time.monotonic()
    try:
        container = open_container(
            source, transport=transport, open_timeout_s=timeout_s, read_timeout_s=timeout_s
        )
    except InputError:
        raise
    except (av.FFmpegError, OSError) as exc:
        raise InputError(f"{source.shown}: {open_failure(exc, source, timeout_s)}") from None
    with container:
        if not container.streams.video:
            raise InputError(f"{source.shown}: no video stream")
        stream = container.streams.video[0]
        try:
            frame = next(container.decode(stream), None)
        except (av.FFmpegError, OSError) as exc:
            raise InputError(f"{source.shown}: cannot read: {describe_error(exc)}") from None
        if frame is None:
            raise InputError(f"{source.shown}: the source ended before its first frame")
        rate = stream.average_rate or stream.guessed_rate
        return {
            "url": source.shown,
            "kind": source.kind,
            "format": container.format.name,
            "codec": stream.codec_context.name,
            "width": frame.width,
            "height": frame.height,
            "fps": round(float(rate), 3) if rate else None,
            "pix_fmt": frame.format.name,
            "first_frame_s": round(time.monotonic() - started_s, 3),
        }
