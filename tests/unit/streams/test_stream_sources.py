"""What a stream URL names, what opening it takes, and what its errors mean."""

from __future__ import annotations

from pathlib import Path

import av
import pytest

from stream_fixtures import closed_port
from vidshard.errors import InputError
from vidshard.streams.sources import (
    Source,
    never_works,
    open_container,
    open_failure,
    open_options,
    parse_source,
    redact_url,
)


@pytest.mark.parametrize(
    ("url", "target", "kind", "fmt"),
    [
        ("clips/a.mp4", "clips/a.mp4", "file", None),  # a relative path
        ("  /data/a.mp4 ", "/data/a.mp4", "file", None),  # blanks around it are ignored
        ("file:///data/a%20b.mp4", "/data/a b.mp4", "file", None),  # a file URL, unquoted
        ("file://localhost/data/a.mp4", "/data/a.mp4", "file", None),
        ("/dev/video0", "/dev/video0", "device", "v4l2"),  # a capture device by its path
        ("v4l2:///dev/video2", "/dev/video2", "device", "v4l2"),
        ("rtsp://cam.local:554/live", "rtsp://cam.local:554/live", "network", None),
        ("RTMP://host/app/key", "RTMP://host/app/key", "network", None),  # schemes any case
        ("https://host/live.m3u8", "https://host/live.m3u8", "network", None),  # HLS
        ("udp://127.0.0.1:5000", "udp://127.0.0.1:5000", "network", None),
    ],
)
def test_sources(url: str, target: str, kind: str, fmt: str | None) -> None:
    source = parse_source(url)
    assert (source.target, source.kind, source.format) == (target, kind, fmt)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("", "empty string"),  # nothing
        ("   ", "empty string"),  # blanks only
        ("rtsp://", "expected a host"),  # a network URL without a host
        ("http:///path", "expected a host"),
        ("http://[::1/x", "malformed"),  # an IPv6 address never closed
        ("rtsp://host:port/x", "malformed"),  # a port that is not a number
        ("1bad://host", "not a URL scheme"),  # a scheme must start with a letter
        ("file://server/share/a.mp4", "names no host"),  # a remote file URL
        ("v4l2://video0", "expected v4l2:///dev/videoN"),  # a device URL without a path
        ("rtsp://host/a\nb", "control characters"),  # a header injection attempt
    ],
)
def test_urls_that_can_never_work(url: str, message: str) -> None:
    with pytest.raises(InputError, match=message):
        parse_source(url)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("rtsp://admin:s3cret@cam/live", "rtsp://admin:***@cam/live"),  # the password hidden
        ("rtsp://admin@cam/live", "rtsp://admin@cam/live"),  # no password: as it is
        ("rtsp://cam/live", "rtsp://cam/live"),
        ("/data/a.mp4", "/data/a.mp4"),
        ("http://u:p@[::1/x", "http://…"),  # malformed: only the scheme is shown
    ],
)
def test_redact_url(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_a_reason_never_shows_the_password() -> None:
    with pytest.raises(InputError) as info:
        parse_source("rtsp://admin:s3cret@host:nan/x")
    assert "s3cret" not in str(info.value)


@pytest.mark.parametrize(
    ("url", "transport", "expected"),
    [
        # RTSP: a short probe and the transport asked for
        (
            "rtsp://h/x",
            "udp",
            {"analyzeduration": "200000", "probesize": "65536", "rtsp_transport": "udp"},
        ),
        (
            "rtsps://h/x",
            "tcp",
            {"analyzeduration": "200000", "probesize": "65536", "rtsp_transport": "tcp"},
        ),
        # another network source: the short probe only
        ("rtmp://h/app", "tcp", {"analyzeduration": "200000", "probesize": "65536"}),
        ("/data/a.mp4", "tcp", {}),  # a file is probed as FFmpeg likes
    ],
)
def test_open_options(url: str, transport: str, expected: dict[str, str]) -> None:
    assert open_options(parse_source(url), transport) == expected


def _open_error(source: Source) -> BaseException:
    try:
        open_container(source, transport="tcp", open_timeout_s=5, read_timeout_s=5).close()
    except Exception as exc:  # what opening raises, to classify
        return exc
    raise AssertionError(f"{source.target} opened")


def test_errors_that_never_work(tmp_path: Path) -> None:
    not_video = tmp_path / "notes.mp4"
    not_video.write_text("not a video")
    cases = {
        "foo://host/x": "unknown URL scheme 'foo'",  # FFmpeg has no such protocol
        str(tmp_path / "missing.mp4"): "no such file",
        str(not_video): "not a video FFmpeg can read",
        str(tmp_path): "not a file",  # a folder
        "/dev/video97": "no such capture device",
    }
    for url, reason in cases.items():
        source = parse_source(url)
        exc = _open_error(source)
        assert never_works(exc, source), url
        assert reason in open_failure(exc, source, 5.0), url


def test_a_refused_connection_is_worth_another_try() -> None:
    source = parse_source(f"rtsp://127.0.0.1:{closed_port()}/live")
    exc = _open_error(source)
    assert isinstance(exc, av.ConnectionRefusedError)
    assert not never_works(exc, source)
    assert open_failure(exc, source, 5.0) == "cannot open: Connection refused"
