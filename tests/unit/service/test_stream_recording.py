"""A live stream's window recorded to a file (``/process_video`` with a stream URL):
packets copied from the first keyframe for the window's stream time, a cancel that
returns at once and leaves no file, and a source that gives nothing as a clear error."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import av
import pytest

from stream_clips import write_squares_stream
from stream_fixtures import ClipServer, closed_port, write_ts_clip
from vidshard.errors import Cancelled, InputError
from vidshard.service.streams.recording import RECORDING_NAME, record_window


def frames_in(path: Path) -> int:
    with av.open(str(path)) as container:
        return sum(1 for _ in container.decode(video=0))


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("recording")
    return write_squares_stream(folder / "squares.mp4", frames=50, rate=25, gop=5)


def test_the_window_is_its_duration_of_stream_time(clip: Path, tmp_path: Path) -> None:
    path = record_window(str(clip), 1.0, tmp_path, threading.Event())
    assert path == tmp_path / RECORDING_NAME
    assert frames_in(path) == 25  # 1 s at 25 fps, not re-encoded
    with av.open(str(path)) as container:
        assert container.streams.video[0].codec_context.name == "h264"
        first = next(container.demux(video=0))
        assert first.is_keyframe and first.pts == 0  # it starts at a keyframe, at 0
    assert not list(tmp_path.glob(".*partial"))


def test_a_second_call_uses_the_recording(clip: Path, tmp_path: Path) -> None:
    first = record_window(str(clip), 1.0, tmp_path, threading.Event())
    stamp = first.stat().st_mtime_ns
    again = record_window("rtsp://127.0.0.1:9/never-opened", 1.0, tmp_path, threading.Event())
    assert again == first and again.stat().st_mtime_ns == stamp


def test_a_source_that_ends_early_keeps_what_came(clip: Path, tmp_path: Path) -> None:
    path = record_window(str(clip), 60.0, tmp_path, threading.Event())
    assert frames_in(path) == 50


def test_a_source_that_cannot_be_opened_is_an_input_error(tmp_path: Path) -> None:
    url = f"http://user:s3cret@127.0.0.1:{closed_port()}/cam.ts"
    with pytest.raises(InputError, match="cannot record") as caught:
        record_window(url, 1.0, tmp_path, threading.Event(), open_timeout_s=5)
    assert "s3cret" not in str(caught.value)
    assert not (tmp_path / RECORDING_NAME).exists()


def test_a_cancel_ends_a_stalled_recording_at_once(tmp_path: Path) -> None:
    source = ClipServer(write_ts_clip(tmp_path / "clip.ts"), plan=lambda n: "stall")
    cancel = threading.Event()
    threading.Timer(0.5, cancel.set).start()
    try:
        started = time.monotonic()
        with pytest.raises(Cancelled):
            record_window(source.url, 30.0, tmp_path / "job", cancel, read_timeout_s=20)
        assert time.monotonic() - started < 15  # well before the read timeout
    finally:
        source.close()
    assert not (tmp_path / "job" / RECORDING_NAME).exists()
