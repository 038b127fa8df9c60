"""A stream's reader thread on real sources: files, loopback servers, bad URLs."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from clips import ClipSpec, decode_rgb, write_clip
from stream_fixtures import (
    ClipServer,
    SilentTcpServer,
    closed_port,
    stream_spec,
    wait_for,
    write_ts_clip,
)
from vidshard.streams.reader import CapturedFrame, FrameBuffer, StreamReader, _Sampler
from vidshard.streams.stats import StreamStats
from vidshard.streams.types import StreamSpec, StreamState


class Recorder:
    """A reader with every state it went through."""

    def __init__(self, spec: StreamSpec) -> None:
        self.states: list[tuple[StreamState, str]] = []
        self.stats = StreamStats()
        self.frames = 0
        self.reader = StreamReader(spec, self.stats, on_frame=self._frame, on_state=self._state)

    def _frame(self) -> None:
        self.frames += 1

    def _state(self, reader: StreamReader) -> None:
        state, reason, _ = reader.state_info()
        self.states.append((state, reason))

    def drain(self) -> list[CapturedFrame]:
        out = []
        while (frame := self.reader.buffer.pop()) is not None:
            out.append(frame)
        return out


@pytest.fixture
def started() -> Iterator[list[Recorder]]:
    """Readers to start; each is stopped at the end of the test."""
    made: list[Recorder] = []
    yield made
    for recorder in made:
        recorder.reader.stop()


def start(started: list[Recorder], spec: StreamSpec) -> Recorder:
    recorder = Recorder(spec)
    started.append(recorder)
    recorder.reader.start()
    return recorder


def ended(recorder: Recorder, timeout_s: float = 60.0) -> StreamState:
    wait_for(lambda: recorder.reader.state.is_final, timeout_s)
    return recorder.reader.state


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """2 s at 25 fps, 160x120."""
    return write_clip(
        tmp_path_factory.mktemp("reader") / "clip.mp4", ClipSpec(size_wh=(160, 120), frames=50)
    )


# -- the buffer and the sampler ---------------------------------------------------------


def _frame(index: int) -> CapturedFrame:
    return CapturedFrame(np.zeros((2, 2, 3), np.uint8), index, None, 0.0, 1)


def test_buffer_drops_the_oldest() -> None:
    buffer = FrameBuffer(2)
    assert [buffer.push(_frame(i)) for i in range(4)] == [False, False, True, True]
    assert [f.index for f in iter(buffer.pop, None)] == [2, 3]  # the newest two, oldest first
    assert buffer.pop() is None


@pytest.mark.parametrize(
    ("source_fps", "max_fps", "kept"),
    [
        (25, 10, 20),  # 2 s: 10 a second, evenly (no drift from 25 not dividing by 10)
        (25, 5, 10),
        (Fraction(30000, 1001), 30, 59),  # NTSC under a 30 limit: every frame of 2 s
        (25, 25, 50),  # the source's rate: every frame
        (25, 100, 50),  # above it: every frame
        (25, None, 50),  # no limit
    ],
)
def test_max_fps_sampling(source_fps: Fraction, max_fps: float | None, kept: int) -> None:
    sampler = _Sampler(max_fps)
    times = [float(i / Fraction(source_fps)) for i in range(int(2 * source_fps))]
    assert sum(sampler.keep(t) for t in times) == kept


def test_sampling_starts_over_when_time_goes_back() -> None:
    sampler = _Sampler(5.0)
    assert [sampler.keep(t) for t in (0.0, 0.1, 0.2, 0.3)] == [True, False, True, False]
    assert sampler.keep(0.0)  # a loop or a new connection: its first frame is kept
    assert not sampler.keep(0.1)


def test_sampling_after_a_gap() -> None:
    sampler = _Sampler(5.0)
    assert sampler.keep(0.0)
    assert sampler.keep(10.0)  # a gap: kept, and counted from here
    assert not sampler.keep(10.1)
    assert sampler.keep(10.2)


# -- files ------------------------------------------------------------------------------


def test_a_file_in_real_time_then_stopped(started: list[Recorder], clip: Path) -> None:
    spec = stream_spec(clip, buffer_frames=64)
    begun = time.monotonic()
    recorder = start(started, spec)
    assert ended(recorder) is StreamState.STOPPED
    took_s = time.monotonic() - begun
    frames = recorder.drain()
    assert recorder.reader.state_info()[1] == "the file ended"
    assert [s for s, _ in recorder.states] == [StreamState.LIVE, StreamState.STOPPED]
    assert [f.index for f in frames] == list(range(50))  # all kept for the host to process
    assert frames[10].pts_s == pytest.approx(0.4)
    assert took_s >= 1.8  # played at its rate: 2 s (a loaded machine only makes it longer)
    span_s = frames[-1].captured_at - frames[0].captured_at
    assert span_s >= 1.8
    assert recorder.stats.frames_received == 50
    assert recorder.stats.frames_dropped == 0


def test_a_file_as_fast_as_it_decodes(started: list[Recorder], clip: Path) -> None:
    recorder = start(started, stream_spec(clip, realtime=False, buffer_frames=64))
    assert ended(recorder) is StreamState.STOPPED
    frames = recorder.drain()
    assert len(frames) == 50
    assert frames[-1].captured_at - frames[0].captured_at < 1.5  # not paced: far below 2 s


def test_a_looped_file(started: list[Recorder], clip: Path) -> None:
    recorder = start(started, stream_spec(clip, loop=True, realtime=False, buffer_frames=64))
    frames: list[CapturedFrame] = []

    def enough() -> bool:
        frames.extend(recorder.drain())
        return len(frames) >= 120

    wait_for(enough)
    assert recorder.reader.state is StreamState.LIVE
    indices = [f.index for f in frames[:120]]
    assert indices == list(range(120))  # the count goes on across the loop
    pts = [f.pts_s for f in frames[:120]]
    assert pts[49] == pytest.approx(1.96) and pts[50] == pytest.approx(0.0)  # starts again
    assert {f.connection for f in frames} == {1}  # a loop is no reconnect
    assert recorder.stats.reconnects == 0


def test_a_looped_file_in_real_time_keeps_its_rate(started: list[Recorder], clip: Path) -> None:
    recorder = start(started, stream_spec(clip, loop=True, buffer_frames=64))
    frames: list[CapturedFrame] = []

    def enough() -> bool:
        frames.extend(recorder.drain())
        return len(frames) >= 60

    wait_for(enough)
    span_s = frames[59].captured_at - frames[0].captured_at
    assert span_s >= 59 / 25 - 0.1  # no burst at the loop point


def test_max_fps_on_a_file(started: list[Recorder], clip: Path) -> None:
    recorder = start(started, stream_spec(clip, realtime=False, max_fps=5, buffer_frames=64))
    assert ended(recorder) is StreamState.STOPPED
    frames = recorder.drain()
    assert [f.index for f in frames] == list(range(0, 50, 5))  # by the frames' own times
    assert recorder.stats.frames_received == 50
    assert recorder.stats.frames_dropped == 40


def test_drops_the_oldest_when_nobody_takes_frames(started: list[Recorder], clip: Path) -> None:
    recorder = start(started, stream_spec(clip, realtime=False, buffer_frames=3))
    assert ended(recorder) is StreamState.STOPPED
    assert [f.index for f in recorder.drain()] == [47, 48, 49]  # the newest won
    assert recorder.stats.frames_dropped == 47


@pytest.mark.parametrize(
    "spec",
    [
        ClipSpec(size_wh=(160, 120), frames=5),  # untagged SD: BT.601, limited range
        ClipSpec(size_wh=(1280, 720), frames=3),  # untagged HD: BT.709
        ClipSpec(size_wh=(99, 67), frames=5),  # odd size: yuv444p
        ClipSpec(size_wh=(64, 48), frames=5, pix_fmt="yuvj420p"),  # full range
    ],
)
def test_frames_read_as_the_file_jobs_read_them(
    started: list[Recorder], tmp_path: Path, spec: ClipSpec
) -> None:
    path = write_clip(tmp_path / "c.mp4", spec)
    recorder = start(started, stream_spec(path, realtime=False, buffer_frames=64))
    assert ended(recorder) is StreamState.STOPPED
    frames = recorder.drain()
    expected = decode_rgb(path)
    assert len(frames) == len(expected)
    for got, (_, image) in zip(frames, expected, strict=True):
        np.testing.assert_array_equal(got.image, image)


# -- sources that do not work -----------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("foo://camera/1", "unknown URL scheme 'foo'"),
        ("/no/such/clip.mp4", "no such file: /no/such/clip.mp4"),
        ("rtsp://", "expected a host"),
        ("http://[::1/live", "malformed"),
        ("", "empty string"),
        ("/dev/video97", "no such capture device"),  # no camera here: a clear failure
        ("v4l2:///dev/video98", "no such capture device"),
        ("/dev/null", "cannot open: Inappropriate ioctl for device"),  # not a camera
    ],
)
def test_urls_that_never_work_fail_at_once(started: list[Recorder], url: str, reason: str) -> None:
    recorder = start(started, stream_spec(url, max_reconnects=5))
    assert ended(recorder) is StreamState.FAILED
    assert reason in recorder.reader.state_info()[1]
    assert recorder.stats.reconnects == 0  # no retry can help


def test_not_a_video(started: list[Recorder], tmp_path: Path) -> None:
    audio = tmp_path / "tone.m4a"
    with av.open(str(audio), "w") as out:
        stream = out.add_stream("aac", rate=16000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), "fltp", "mono")
        frame.sample_rate = 16000
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            out.mux(packet)
    text = tmp_path / "notes.mp4"
    text.write_text("hello")
    for path, reason in ((audio, "no video stream"), (text, "not a video FFmpeg can read")):
        recorder = start(started, stream_spec(path))
        assert ended(recorder) is StreamState.FAILED
        assert reason in recorder.reader.state_info()[1]


def test_a_closed_port_fails_after_the_reconnect_limit(started: list[Recorder]) -> None:
    url = f"rtsp://admin:s3cret@127.0.0.1:{closed_port()}/live"
    recorder = start(started, stream_spec(url, max_reconnects=3, reconnect_delay_s=0.01))
    assert ended(recorder) is StreamState.FAILED
    reason = recorder.reader.state_info()[1]
    assert reason == "gave up after 3 reconnects in a row: cannot open: Connection refused"
    assert "s3cret" not in reason
    assert recorder.stats.reconnects == 3
    assert [s for s, _ in recorder.states] == [StreamState.RECONNECTING, StreamState.FAILED]


def test_no_reconnect_allowed(started: list[Recorder]) -> None:
    url = f"rtsp://127.0.0.1:{closed_port()}/live"
    recorder = start(started, stream_spec(url, max_reconnects=0))
    assert ended(recorder) is StreamState.FAILED
    reason = recorder.reader.state_info()[1]
    assert reason == "cannot open: Connection refused (reconnects are off: max_reconnects is 0)"
    assert recorder.stats.reconnects == 0


def test_reconnects_back_off_doubling_up_to_the_limit(started: list[Recorder]) -> None:
    server = SilentTcpServer(hang_up=True)  # every connection closed at once
    try:
        spec = stream_spec(
            f"http://127.0.0.1:{server.port}/live",
            max_reconnects=5,
            reconnect_delay_s=0.1,
            reconnect_max_delay_s=0.2,
        )
        recorder = start(started, spec)
        assert ended(recorder) is StreamState.FAILED
        times = server.accepted_at
        assert len(times) == 6  # the first attempt and 5 reconnects
        gaps = [b - a for a, b in itertools.pairwise(times)]
        assert gaps[0] >= 0.09 and gaps[1] >= 0.19  # 0.1 s, then doubled
        assert all(gap >= 0.19 for gap in gaps[2:])  # at most 0.2 s ...
        assert gaps[-1] < 1.0  # ... not 1.6 s: the limit holds
    finally:
        server.close()


# -- live sources ---------------------------------------------------------------------


def test_a_source_that_ends_is_a_disconnect(started: list[Recorder], tmp_path: Path) -> None:
    server = ClipServer(write_ts_clip(tmp_path / "clip.ts", frames=25))
    try:
        recorder = start(started, stream_spec(server.url, reconnect_delay_s=0.05, buffer_frames=64))
        frames: list[CapturedFrame] = []

        def two_connections() -> bool:
            frames.extend(recorder.drain())
            return any(f.connection == 2 for f in frames)

        wait_for(two_connections)
        assert (StreamState.RECONNECTING, "the source ended") in recorder.states
        first = [f.index for f in frames if f.connection == 1]
        second = [f.index for f in frames if f.connection == 2]
        assert first == list(range(25))
        assert second[0] == 0  # counted from the new connection
        assert recorder.stats.reconnects >= 1
        states = [s for s, _ in recorder.states]
        assert states[:3] == [StreamState.LIVE, StreamState.RECONNECTING, StreamState.LIVE]
    finally:
        server.close()


def test_a_stalled_source_reconnects_then_fails(started: list[Recorder], tmp_path: Path) -> None:
    clip = write_ts_clip(tmp_path / "clip.ts", frames=100)
    # the first connection sends part of the clip and then nothing; later ones hang
    server = ClipServer(clip, plan=lambda n: "stall" if n == 0 else "silent")
    try:
        spec = stream_spec(
            server.url,
            stall_timeout_s=1.0,
            open_timeout_s=1.0,
            max_reconnects=2,
            reconnect_delay_s=0.05,
        )
        recorder = start(started, spec)
        assert ended(recorder) is StreamState.FAILED
        states = recorder.states
        assert states[0] == (StreamState.LIVE, "")
        assert states[1][0] is StreamState.RECONNECTING
        assert states[1][1] in ("stalled: no data for 1 s", "stalled: no frame for 1 s")
        assert states[-1] == (
            StreamState.FAILED,
            "gave up after 2 reconnects in a row: cannot open: no answer within 1 s",
        )
        assert recorder.stats.reconnects == 2
        assert server.connections == 3
    finally:
        server.close()


def test_stop_returns_at_once_while_the_open_blocks(started: list[Recorder]) -> None:
    server = SilentTcpServer()
    try:
        spec = stream_spec(f"http://127.0.0.1:{server.port}/live", open_timeout_s=30.0)
        recorder = start(started, spec)
        wait_for(lambda: len(server.accepted_at) == 1)  # it is inside av.open now
        begun = time.monotonic()
        recorder.reader.stop("removed")
        assert time.monotonic() - begun < 5.0  # not the 30 s the open may take
        assert recorder.reader.state_info()[:2] == (StreamState.STOPPED, "removed")
        assert recorder.states == []  # nothing reported after the stop
    finally:
        server.close()  # the blocked open ends (the peer closed) and the thread with it
    assert recorder.reader.join(30.0)
    assert recorder.states == []


def test_stop_returns_at_once_while_a_read_blocks(started: list[Recorder], tmp_path: Path) -> None:
    clip = write_ts_clip(tmp_path / "clip.ts", frames=100)
    server = ClipServer(clip, plan=lambda n: "stall")  # some frames, then nothing
    try:
        recorder = start(started, stream_spec(server.url, stall_timeout_s=60.0))
        wait_for(lambda: recorder.reader.state is StreamState.LIVE)
        time.sleep(0.5)  # past the frames sent: the reader waits in a read now
        begun = time.monotonic()
        recorder.reader.stop("removed")
        assert time.monotonic() - begun < 5.0  # not the 60 s the read may wait
        assert recorder.reader.state_info()[:2] == (StreamState.STOPPED, "removed")
        assert len(recorder.reader.buffer) == 0  # its frames are let go (counted dropped)
        assert recorder.states == [(StreamState.LIVE, "")]
    finally:
        server.close()
    assert recorder.reader.join(30.0)
    assert recorder.states == [(StreamState.LIVE, "")]  # nothing after the stop
