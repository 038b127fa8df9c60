"""Where a stream's frames come from: its URL read the way PyAV opens it, and what an
error while opening or reading means (worth another try, or never going to work).

Three kinds of source:

- ``file``: a path, or a ``file://`` URL. Played at its frame rate (``realtime``) or as
  fast as it decodes, and from the start again at its end with ``loop``.
- ``device``: a local capture device, ``v4l2:///dev/video0`` or a ``/dev/...`` path
  (FFmpeg's ``v4l2`` input).
- ``network``: any other URL FFmpeg has a protocol for (``rtsp://``, ``rtsps://``,
  ``rtmp://``, ``http(s)://`` including HLS, ``udp://``, ...). Opened with a short probe
  (``analyzeduration`` 0.2 s, ``probesize`` 64 KiB) so a camera starts in about 0.1 s;
  RTSP over the stream's ``transport`` (TCP or UDP).

Reasons never carry a URL's password: :func:`redact_url` is what logs and states show.
"""

from __future__ import annotations

import errno
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import unquote, urlsplit, urlunsplit

import av
import av.container

from vidshard.errors import InputError
from vidshard.pathnames import expand_user

SourceKind = Literal["file", "device", "network"]

NETWORK_OPTIONS = {"analyzeduration": "200000", "probesize": "65536"}
RTSP_SCHEMES = frozenset({"rtsp", "rtsps"})
DEVICE_FORMAT = "v4l2"
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*")


@dataclass(frozen=True)
class Source:
    """A stream's source as PyAV opens it."""

    target: str  # what ``av.open`` is given: a path or the URL
    kind: SourceKind
    scheme: str  # "file", "v4l2", "rtsp", "http", ...
    shown: str  # the URL without its password: what logs and reasons name
    format: str | None = None  # an FFmpeg input format to force ("v4l2")

    @property
    def is_file(self) -> bool:
        return self.kind == "file"


def redact_url(url: str) -> str:
    """``url`` with the password of its user info replaced by ``***``."""
    if "://" not in url:
        return url
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return url.split("://", 1)[0] + "://…"  # malformed: show no more than the scheme
    if password is None:
        return url
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))


def parse_source(url: str) -> Source:
    """What ``url`` names; :class:`InputError` for one that can never be opened (empty,
    malformed, a network URL without a host)."""
    text = url.strip()
    if not text:
        raise InputError("stream URL: expected a URL or a path, got an empty string")
    if any(ord(c) < 32 for c in text):
        raise InputError(f"stream URL {redact_url(text)!r}: control characters are not allowed")
    scheme, sep, _ = text.partition("://")
    if not sep:
        return _path_source(expand_user(text), text)
    if not _SCHEME.fullmatch(scheme):
        raise InputError(f"stream URL {redact_url(text)!r}: {scheme!r} is not a URL scheme")
    scheme = scheme.lower()
    try:
        parts = urlsplit(text)
        host = parts.hostname
        parts.port  # noqa: B018 - raises ValueError on a port that is not a number
    except ValueError as exc:
        raise InputError(f"stream URL {redact_url(text)!r} is malformed: {exc}") from None
    if scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise InputError(f"stream URL {text!r}: a file:// URL names no host (file:///path)")
        return _path_source(Path(unquote(parts.path)), text)
    if scheme == DEVICE_FORMAT:
        device = unquote(parts.netloc + parts.path)
        if not device.startswith("/"):
            raise InputError(f"stream URL {text!r}: expected v4l2:///dev/videoN")
        return Source(device, "device", DEVICE_FORMAT, text, DEVICE_FORMAT)
    if not host:
        raise InputError(f"stream URL {redact_url(text)!r}: expected a host after {scheme}://")
    return Source(text, "network", scheme, redact_url(text))


def _path_source(path: Path, text: str) -> Source:
    if path.parts[:2] == ("/", "dev"):
        return Source(str(path), "device", DEVICE_FORMAT, text, DEVICE_FORMAT)
    return Source(str(path), "file", "file", text)


def open_options(source: Source, transport: str) -> dict[str, str]:
    """The FFmpeg options ``source`` is opened with."""
    if source.kind != "network":
        return {}
    options = dict(NETWORK_OPTIONS)
    if source.scheme in RTSP_SCHEMES:
        options["rtsp_transport"] = transport
    return options


def open_container(
    source: Source, *, transport: str, open_timeout_s: float, read_timeout_s: float
) -> av.container.InputContainer:
    """``source`` opened for reading; a read that waits longer than ``read_timeout_s``
    for data fails (:class:`av.ExitError`), and so does an open past ``open_timeout_s``."""
    if source.kind != "network" and not Path(source.target).exists():
        what = "capture device" if source.kind == "device" else "file"
        raise InputError(f"no such {what}: {source.target}")
    if source.is_file and not Path(source.target).is_file():
        raise InputError(f"not a file: {source.target}")
    return av.open(
        source.target,
        mode="r",
        format=source.format,
        options=open_options(source, transport),
        timeout=(open_timeout_s, read_timeout_s),
    )


def describe_error(exc: BaseException) -> str:
    """One line for an error of PyAV or the system, naming no URL."""
    if isinstance(exc, InputError):
        return str(exc)
    if isinstance(exc, av.ExitError):
        return "timed out"
    if isinstance(exc, av.FFmpegError | OSError) and exc.strerror:
        return str(exc.strerror)
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def never_works(exc: BaseException, source: Source) -> bool:
    """Whether another try cannot help: an unknown protocol or input format, a malformed
    URL, a missing file, an HTTP 4xx answer (bar 429), a file that is not a video."""
    if isinstance(exc, InputError | av.ProtocolNotFoundError | av.DemuxerNotFoundError):
        return True
    if isinstance(exc, av.ArgumentError):
        return True  # FFmpeg's EINVAL on open: a malformed URL or option
    if isinstance(exc, av.HTTPClientError) and not isinstance(exc, av.HTTPTooManyRequestsError):
        return True  # 400, 401, 403, 404 ...: credentials or the path are wrong
    if source.kind == "device" and isinstance(exc, OSError) and exc.errno == errno.ENOTTY:
        return True  # a file under /dev that is no capture device
    # a local file or device that is not a video, or that we may not read
    return source.kind != "network" and isinstance(exc, av.InvalidDataError | PermissionError)


def open_failure(exc: BaseException, source: Source, open_timeout_s: float) -> str:
    """The reason an open failed, as a stream's state shows it."""
    if isinstance(exc, av.ProtocolNotFoundError):
        return f"unknown URL scheme {source.scheme!r}: FFmpeg has no such protocol"
    if isinstance(exc, av.DemuxerNotFoundError) and source.format:
        return f"this FFmpeg cannot read {source.format} devices"
    if isinstance(exc, av.ExitError):
        return f"cannot open: no answer within {open_timeout_s:g} s"
    if isinstance(exc, InputError):
        return str(exc)
    if source.kind != "network" and isinstance(exc, av.InvalidDataError):
        return f"cannot open {source.target}: not a video FFmpeg can read"
    return f"cannot open: {describe_error(exc)}"
