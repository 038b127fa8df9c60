"""A stream's JSONL files (rotated by size and by age) and its snapshot JPEG."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vidshard.detection.types import Detections
from vidshard.errors import ConfigError, OutputError
from vidshard.streams.sinks import JsonlRotator, SnapshotWriter, check_stream_id

T0 = 1_767_225_600.0  # 2026-01-01 00:00:00 UTC


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def line(n: int, pad: int = 0) -> bytes:
    return (json.dumps({"frame": n, "pad": "x" * pad}) + "\n").encode()


def read_lines(paths: list[Path]) -> list[int]:
    return [json.loads(text)["frame"] for p in paths for text in p.read_text().splitlines()]


def test_a_file_named_by_stream_and_time(tmp_path: Path) -> None:
    sink = JsonlRotator(tmp_path / "out", "cam-1", rotate_bytes=1 << 20, rotate_s=60, clock=Clock())
    sink.write(line(0))
    sink.write(line(1))
    assert sink.path == tmp_path / "out" / "cam-1-20260101-000000.jsonl"
    assert read_lines([sink.path]) == [0, 1]  # readable while it is open: a reader can tail it
    sink.close()


def test_rotates_by_size(tmp_path: Path) -> None:
    one = len(line(0, pad=80))
    clock = Clock()
    sink = JsonlRotator(tmp_path, "cam", rotate_bytes=3 * one, rotate_s=3600, clock=clock)
    for n in range(10):
        clock.now += 1.0  # a second apart: each file its own name
        sink.write(line(n, pad=80))
    sink.close()
    paths = list(sink.paths)
    assert len(paths) == 4  # 3 + 3 + 3 + 1 lines
    assert all(p.stat().st_size <= 3 * one for p in paths)  # never past the limit
    assert read_lines(paths) == list(range(10))  # nothing lost, in order
    assert paths == sorted(tmp_path.glob("cam-*.jsonl"))


def test_a_line_larger_than_the_limit_gets_a_file_of_its_own(tmp_path: Path) -> None:
    clock = Clock()
    sink = JsonlRotator(tmp_path, "cam", rotate_bytes=10, rotate_s=3600, clock=clock)
    sink.write(line(0, pad=50))
    clock.now += 1
    sink.write(line(1, pad=50))
    sink.close()
    assert [read_lines([p]) for p in sink.paths] == [[0], [1]]


def test_rotates_by_age(tmp_path: Path) -> None:
    clock = Clock()
    sink = JsonlRotator(tmp_path, "cam", rotate_bytes=1 << 30, rotate_s=60.0, clock=clock)
    for n in range(6):
        sink.write(line(n))
        clock.now += 25.0  # files of 60 s: lines at 0, 25, 50 | 75, 100, 125
    sink.close()
    names = [p.name for p in sink.paths]
    assert names == ["cam-20260101-000000.jsonl", "cam-20260101-000115.jsonl"]
    assert [read_lines([p]) for p in sink.paths] == [[0, 1, 2], [3, 4, 5]]


def test_files_opened_within_one_second_do_not_collide(tmp_path: Path) -> None:
    (tmp_path / "cam-20260101-000000.jsonl").write_text("")  # say, left by a restart
    sink = JsonlRotator(tmp_path, "cam", rotate_bytes=1, rotate_s=3600, clock=Clock())
    for n in range(3):
        sink.write(line(n))
    sink.close()
    names = [p.name for p in sink.paths]
    assert names == [
        "cam-20260101-000000_002.jsonl",
        "cam-20260101-000000_003.jsonl",
        "cam-20260101-000000_004.jsonl",
    ]
    assert sorted(p.name for p in tmp_path.iterdir())[1:] == names  # they sort in order
    assert (tmp_path / "cam-20260101-000000.jsonl").read_text() == ""  # untouched


def test_whole_lines_for_a_reader_tailing_the_file(tmp_path: Path) -> None:
    sink = JsonlRotator(tmp_path, "cam", rotate_bytes=1 << 30, rotate_s=3600, clock=Clock())
    sink.write(line(0))
    path = sink.path
    assert path is not None
    seen: list[bytes] = []
    done = threading.Event()

    def tail() -> None:
        with path.open("rb") as handle:
            while not done.is_set() or handle.peek(1):
                chunk = handle.readline()
                if chunk:
                    seen.append(chunk)

    reader = threading.Thread(target=tail)
    reader.start()
    for n in range(1, 300):
        sink.write(line(n, pad=n * 7))
    done.set()
    reader.join(30)
    sink.close()
    # readline may return a line in two pieces while it is written; joined, none is torn
    text = b"".join(seen)
    assert text.endswith(b"\n")
    assert [json.loads(t)["frame"] for t in text.splitlines()] == list(range(300))


def test_writes_after_close_are_ignored(tmp_path: Path) -> None:
    sink = JsonlRotator(tmp_path, "cam", rotate_bytes=1 << 20, rotate_s=60, clock=Clock())
    sink.write(line(0))
    sink.close()
    sink.write(line(1))
    assert read_lines(list(sink.paths)) == [0]


def test_a_folder_that_cannot_be_made(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(OutputError, match="cannot create stream folder"):
        JsonlRotator(tmp_path / "file" / "out", "cam", rotate_bytes=1, rotate_s=1)
    with pytest.raises(OutputError, match="cannot create stream folder"):
        SnapshotWriter(tmp_path / "file" / "out", "cam", interval_s=1)


def test_a_write_the_system_refuses(tmp_path: Path) -> None:
    sink = JsonlRotator(tmp_path, "cam", rotate_bytes=1 << 20, rotate_s=60, clock=Clock())
    sink.write(line(0))
    assert sink._fd is not None
    os.close(sink._fd)  # the descriptor is gone: writing fails like a dead disk
    sink._fd = os.open(os.devnull, os.O_RDONLY)
    with pytest.raises(OutputError, match="cannot write"):
        sink.write(line(1))
    sink.close()


@pytest.mark.parametrize(
    "stream_id",
    [
        "",  # empty
        "../etc",  # a path out of the folder
        "a/b",
        ".hidden",  # a hidden file, and "." or ".."
        "..",
        "x" * 129,  # too long
        "cam 1",  # a space
    ],
)
def test_stream_ids_that_cannot_name_files(stream_id: str) -> None:
    with pytest.raises(ConfigError, match="stream id"):
        check_stream_id(stream_id)


@pytest.mark.parametrize("stream_id", ["cam", "Cam_1", "a.b-c", "0" * 128, "f3b2c1d0"])
def test_stream_ids_that_can(stream_id: str) -> None:
    assert check_stream_id(stream_id) == stream_id


def box(x1: float, y1: float, x2: float, y2: float) -> Detections:
    return Detections(
        np.array([[x1, y1, x2, y2]], np.float32),
        np.array([0.9], np.float32),
        np.array([0], np.int32),
        ("thing",),
        track_ids=np.array([7]),
    )


def test_snapshot_drawn_written_and_replaced(tmp_path: Path) -> None:
    clock = Clock()
    snap = SnapshotWriter(tmp_path, "cam", interval_s=1.0, clock=clock)
    assert snap.due()
    black = np.zeros((120, 160, 3), np.uint8)
    snap.write(black, box(40, 30, 120, 90))
    first = np.asarray(Image.open(snap.path))
    assert first.shape == (120, 160, 3)
    assert first[30:90, 40].max() > 100  # the box's left edge is drawn
    assert first[100:, :20].max() < 30  # away from it, the frame
    assert not snap.due()  # at most once a second
    clock.now += 1.0
    assert snap.due()
    inode = snap.path.stat().st_ino
    snap.write(np.full((120, 160, 3), 255, np.uint8), Detections.empty())
    assert np.asarray(Image.open(snap.path)).min() > 200  # replaced by the new frame
    assert snap.path.stat().st_ino != inode  # by a rename: a reader never sees half a JPEG
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cam.jpg"]  # no temporary left


def test_no_snapshots_at_interval_zero(tmp_path: Path) -> None:
    assert not SnapshotWriter(tmp_path, "cam", interval_s=0).due()
