"""The RTSP test server (``tests/rtsp_server.py``) with PyAV as its client: the behaviour the
stream tests build on. Clips loop forever as one live stream, several clients share a
mount, a client that leaves disturbs no other, a SIGKILLed server ends its clients' decode
loops, and a restarted one serves on the same port again."""

from __future__ import annotations

import importlib.util
import itertools
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import av
import pytest

from rtsp_fixtures import (
    SERVER_SCRIPT,
    SQUARES_FRAMES,
    SYSTEM_PYTHON,
    RtspServer,
    open_rtsp,
    require_rtsp_server,
    rtsp_server_fixture,
    running_rtsp_server,
    server_env,
    squares_clip,
)
from stream_clips import STREAM_SIZE_WH, find_squares

WAIT_S = 60.0  # generous: CI's two cores are shared

rtsp_server = rtsp_server_fixture()  # /car and /squares, for the whole module


@dataclass
class Reading:
    """What one client saw: each frame's pts and red square's x (None: not found)."""

    pts: list[int | None] = field(default_factory=list)
    red_x: list[float | None] = field(default_factory=list)
    ended: str | None = None  # "eof", or the error that ended the decode loop
    stop: threading.Event = field(default_factory=threading.Event)  # set: leave now

    def add(self, frame: av.VideoFrame) -> None:
        self.pts.append(frame.pts)
        self.red_x.append(find_squares(frame.to_ndarray(format="rgb24")).get("red", (None,))[0])


def read(url: str, count: int | None, *, transport: str = "tcp", got: Reading | None = None):
    """Read ``count`` frames (None: until the stream ends) from ``url`` into a Reading."""
    got = got if got is not None else Reading()
    try:
        with open_rtsp(url, transport=transport) as container:
            for frame in container.decode(video=0):
                got.add(frame)
                if got.stop.is_set() or (count is not None and len(got.pts) >= count):
                    return got
        got.ended = "eof"
    except av.error.FFmpegError as exc:
        got.ended = type(exc).__name__
    return got


def in_thread(*args, **kwargs) -> tuple[threading.Thread, Reading]:
    got = Reading()
    thread = threading.Thread(target=read, args=args, kwargs={**kwargs, "got": got}, daemon=True)
    thread.start()
    return thread, got


def loop_restarts(red_x: list[float | None]) -> int:
    """How often the red square jumps back to the left: the clip started again. Any other
    step back is an error: between restarts it only moves right (or holds, a repeated
    frame)."""
    xs = [x for x in red_x if x is not None]
    restarts = 0
    for before, after in itertools.pairwise(xs):
        if after < before - STREAM_SIZE_WH[0] / 2:
            restarts += 1
        else:
            assert after >= before, f"red square moved back from {before} to {after}: {xs}"
    return restarts


def assert_one_stream(got: Reading) -> None:
    """Frames with rising timestamps (one continuous stream), nearly all intact."""
    pts = [p for p in got.pts if p is not None]
    assert all(b > a for a, b in itertools.pairwise(pts)), pts
    found = sum(x is not None for x in got.red_x)
    assert found >= 0.9 * len(got.red_x), got.red_x


@pytest.mark.parametrize(
    ("mount", "size_wh"),
    [
        ("car", (768, 432)),  # the bundled sample clip
        ("squares", STREAM_SIZE_WH),  # the generated clip for streams
    ],
)
def test_serves_each_clip_at_its_size(rtsp_server, mount, size_wh):
    with open_rtsp(rtsp_server.url(mount)) as container:
        assert container.streams.video[0].codec_context.name == "h264"
        frame = next(container.decode(video=0))
    assert (frame.width, frame.height) == size_wh


def test_a_client_reads_on_across_loop_points(rtsp_server):
    count = 2 * SQUARES_FRAMES + SQUARES_FRAMES // 2  # 2.5 times the clip
    got = read(rtsp_server.url("squares"), count)
    assert len(got.pts) == count, got.ended
    assert loop_restarts(got.red_x) >= 2
    assert_one_stream(got)


def test_udp_transport(rtsp_server):
    got = read(rtsp_server.url("squares"), SQUARES_FRAMES + 10, transport="udp")
    assert len(got.pts) == SQUARES_FRAMES + 10, got.ended
    assert loop_restarts(got.red_x) >= 1
    assert_one_stream(got)


def test_clients_share_a_mount_and_one_leaving_disturbs_no_other(rtsp_server):
    url = rtsp_server.url("squares")
    medias_before = rtsp_server.log.read_text().count("/squares: media ready")
    first, first_got = in_thread(url, None)  # reads until told to stop
    second, second_got = in_thread(url, 25)  # leaves after 1 s
    second.join(WAIT_S)
    assert len(second_got.pts) == 25, second_got.ended
    third_got = read(url, 25)  # joins after the second left, while the first still reads
    assert len(third_got.pts) == 25, third_got.ended
    wait_for(lambda: len(first_got.pts) >= 2 * SQUARES_FRAMES + 10 or not first.is_alive())
    first_got.stop.set()
    first.join(WAIT_S)
    assert first_got.ended is None  # it read on till told to stop
    assert loop_restarts(first_got.red_x) >= 2
    for got in (first_got, second_got, third_got):
        loop_restarts(got.red_x)
        assert_one_stream(got)
    # one shared media for all three (made when the first came, unless it was still there)
    assert rtsp_server.log.read_text().count("/squares: media ready") - medias_before <= 1


def wait_for(condition) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.05)


@pytest.mark.parametrize("transport", ["tcp", "udp"])
def test_a_killed_server_ends_its_clients_and_serves_again_when_restarted(tmp_path, transport):
    clips = {"squares": squares_clip(tmp_path / "squares.mp4")}
    with running_rtsp_server(clips, tmp_path) as server:
        url = server.url("squares")
        reader, got = in_thread(url, None, transport=transport)
        wait_for(lambda: len(got.pts) >= 10 or not reader.is_alive())
        assert len(got.pts) >= 10, got.ended
        server.kill()
        reader.join(WAIT_S)
        assert not reader.is_alive(), "the client's decode loop did not end"
        assert got.ended is not None
        port = server.port
        server.restart()
        assert server.port == port
        again = read(url, 30, transport=transport)
        assert len(again.pts) == 30, again.ended
        assert_one_stream(again)


def test_an_unknown_mount_is_refused(rtsp_server):
    with pytest.raises(av.error.FFmpegError):
        open_rtsp(f"rtsp://127.0.0.1:{rtsp_server.port}/nothing-here")


def test_a_taken_port_is_refused(rtsp_server, tmp_path):
    result = run_script(f"--port={rtsp_server.port}", f"car={rtsp_server.clips['car']}")
    assert result.returncode == 3
    assert f"cannot listen on 127.0.0.1:{rtsp_server.port}" in result.stderr
    other = RtspServer(dict(rtsp_server.clips), tmp_path / "other.log", port=rtsp_server.port)
    with pytest.raises(RuntimeError, match="cannot listen on"):
        other.start(ready_timeout_s=3)  # still taken after its retries


def test_stops_cleanly_and_when_its_stdin_closes(tmp_path):
    clips = {"squares": squares_clip(tmp_path / "squares.mp4")}
    with running_rtsp_server(clips, tmp_path) as server:
        assert server.stop() == 0  # SIGTERM
        server.restart()
        assert server.process is not None and server.process.stdin is not None
        server.process.stdin.close()  # what happens when the test run dies
        assert server.process.wait(WAIT_S) == 0


@pytest.mark.parametrize(
    ("clip", "status", "reason"),
    [
        # no NAME=
        ("{squares}", 2, "expected NAME=PATH"),
        # the clip is missing
        ("cam={tmp}/missing.mp4", 2, "the clip for /cam is not a file"),
        # not a video at all
        ("cam={tmp}/notes.mp4", 1, "cannot play"),
        # a mount name that is not a plain word
        ("a/b={squares}", 2, "expected NAME=PATH"),
    ],
)
def test_bad_clips_exit_with_a_reason(tmp_path, clip, status, reason):
    require_rtsp_server()
    squares = squares_clip(tmp_path / "squares.mp4")
    (tmp_path / "notes.mp4").write_text("not a video\n")
    result = run_script("--port=0", clip.format(squares=squares, tmp=tmp_path))
    assert result.returncode == status, result.stderr
    assert reason in result.stderr
    assert "Traceback" not in result.stderr


def test_check_names_the_missing_bindings():
    if importlib.util.find_spec("gi") is not None:
        pytest.skip("this Python has the GStreamer bindings too")
    result = subprocess.run(
        [sys.executable, str(SERVER_SCRIPT), "--check"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert "python3-gi and gir1.2-gst-rtsp-server-1.0" in result.stderr


def run_script(*args: str) -> subprocess.CompletedProcess[str]:
    require_rtsp_server()
    return subprocess.run(
        [SYSTEM_PYTHON, str(SERVER_SCRIPT), *args],
        capture_output=True,
        text=True,
        timeout=WAIT_S,
        check=False,
        env=server_env(),
        cwd=Path(__file__).parent,
    )
