"""The results file: records, schema check, whole-line appends, torn-tail repair, reading."""

from __future__ import annotations

import copy
import errno
import json
import logging
import multiprocessing
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from vidshard.detection import jsonl
from vidshard.detection.jsonl import (
    JsonlSink,
    done_paths,
    frame_record,
    read_done,
    validate_record,
    video_record,
)
from vidshard.detection.rle import rle_to_mask
from vidshard.detection.types import Detections
from vidshard.errors import OutputError

INFO = {"width": 64, "height": 48, "fps": 25.0, "frames": 3, "duration": 0.12}


def dets(masks: bool = False, tracks: bool = True) -> Detections:
    m = np.zeros((2, 48, 64), bool)
    m[0, 10:20, 5:9] = True
    m[1, 0, 0] = True
    return Detections(
        boxes=[[1.23456, 2.0, 10.999, 20.5], [0, 0, 64, 48]],
        scores=[0.123456, 1.0],
        class_ids=[0, 2],
        class_names=("person", "dog"),
        track_ids=[7, 9] if tracks else None,
        masks=m if masks else None,
    )


def good_record(path: str = "a.mp4") -> dict[str, Any]:
    frames = [
        frame_record(0, 0.0, dets(masks=True), with_masks=True),
        frame_record(1, 0.04, dets(), with_masks=False),
        frame_record(2, 0.08, Detections.empty(), with_masks=True),
    ]
    return video_record(path, "person . dog", INFO, frames)


# -- records ---------------------------------------------------------------------------


def test_frame_record_rounds_and_names() -> None:
    rec = frame_record(5, 0.2, dets(), with_masks=True)  # no masks to write: none written
    assert rec == {
        "frame_index": 5,
        "pts_time": 0.2,
        "objects": [
            {
                "track_id": 7,
                "class": "person",
                "class_id": 0,
                "score": 0.1235,
                "box": [1.23, 2.0, 11.0, 20.5],
            },
            {"track_id": 9, "class": "dog", "class_id": 2, "score": 1.0, "box": [0, 0, 64, 48]},
        ],
    }
    json.dumps(rec, allow_nan=False)  # plain Python values only


def test_frame_record_masks_only_when_asked() -> None:
    d = dets(masks=True, tracks=False)
    without = frame_record(0, 0.0, d, with_masks=False)
    assert all("mask" not in o and o["track_id"] is None for o in without["objects"])
    with_masks = frame_record(0, 0.0, d, with_masks=True)
    assert d.masks is not None
    for obj, mask in zip(with_masks["objects"], d.masks, strict=True):
        np.testing.assert_array_equal(rle_to_mask(obj["mask"]), mask)


def test_video_record_and_failed_video() -> None:
    rec = good_record()
    assert set(rec) == {"video_path", "prompt", "video_info", "frames"}
    validate_record(rec)
    failed = video_record("b.mp4", None, {"width": 64}, [], error="cannot decode")
    assert failed["error"] == "cannot decode" and failed["frames"] == []
    validate_record(failed)  # a failed video may lack most of its info
    with pytest.raises(ValueError, match="must have no frames"):
        video_record("b.mp4", None, INFO, rec["frames"], error="boom")


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    """A mutation that sets ``path`` (dotted, with [i]) to ``value``; DELETE removes it."""

    def apply(rec: dict[str, Any]) -> None:
        keys = [
            int(k) if k.isdigit() else k for k in path.replace("[", ".").replace("]", "").split(".")
        ]
        target: Any = rec
        for k in keys[:-1]:
            target = target[k]
        if value is DELETE:
            del target[keys[-1]]
        else:
            target[keys[-1]] = value

    return apply


DELETE = object()


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        # a frame list at the top
        (None, "record: expected an object, got list"),
        # no frames key
        (_set("frames", DELETE), r"record: missing key(s) ['frames']"),
        # a stray key
        (_set("model", "yolo"), r"record: unknown key(s) ['model']"),
        # empty video path
        (_set("video_path", ""), "video_path: expected a non-empty string"),
        # a prompt that is not text
        (_set("prompt", 3), "prompt: expected a string or null"),
        # an empty error
        (_set("error", ""), "error: expected a non-empty string"),
        # a failed video that still has frames
        (_set("error", "boom"), "frames: expected [] on a failed video"),
        # a successful video without its frame count
        (_set("video_info.frames", DELETE), r"video_info: missing key(s) ['frames']"),
        # zero width
        (_set("video_info.width", 0), "video_info.width: expected an integer > 0 or null"),
        # fps as text
        (_set("video_info.fps", "25"), "video_info.fps: expected a number > 0"),
        # frames not a list
        (_set("frames", {}), "frames: expected a list, got dict"),
        # a frame without objects
        (_set("frames[1].objects", DELETE), r"frames[1]: missing key(s) ['objects']"),
        # a negative frame index
        (_set("frames[0].frame_index", -1), "frames[0].frame_index: expected an integer >= 0"),
        # frames out of order
        (_set("frames[2].frame_index", 1), "frames[2].frame_index: expected > 1"),
        # a NaN timestamp
        (_set("frames[1].pts_time", float("nan")), "frames[1].pts_time: expected a finite number"),
        # objects not a list
        (_set("frames[0].objects", None), "frames[0].objects: expected a list"),
        # a box with three numbers
        (
            _set("frames[1].objects[0].box", [1, 2, 3]),
            "frames[1].objects[0].box: expected 4 numbers",
        ),
        # a box with text
        (_set("frames[1].objects[1].box", [0, 0, "1", 1]), "frames[1].objects[1].box: expected 4"),
        # an inverted box
        (
            _set("frames[1].objects[0].box", [10, 0, 1, 1]),
            "frames[1].objects[0].box: expected x1 <= x2 and y1 <= y2",
        ),
        # a score above 1
        (
            _set("frames[0].objects[1].score", 1.2),
            "frames[0].objects[1].score: expected a number in [0, 1]",
        ),
        # a bool score
        (_set("frames[0].objects[1].score", True), "frames[0].objects[1].score"),
        # a negative class id
        (
            _set("frames[0].objects[0].class_id", -1),
            "frames[0].objects[0].class_id: expected an integer >= 0",
        ),
        # a class name that is not text
        (_set("frames[0].objects[0].class", 5), "frames[0].objects[0].class: expected a string"),
        # a track id that is not an integer
        (
            _set("frames[0].objects[0].track_id", "7"),
            "frames[0].objects[0].track_id: expected an integer or null",
        ),
        # the same track twice in one frame
        (
            _set("frames[1].objects[1].track_id", 7),
            "frames[1].objects[1].track_id: 7 appears twice",
        ),
        # a mask whose runs do not cover it
        (
            _set("frames[0].objects[0].mask.counts", [1, 2]),
            "frames[0].objects[0].mask: RLE counts: expected runs",
        ),
        # a stray object key
        (
            _set("frames[0].objects[0].colour", "red"),
            r"frames[0].objects[0]: unknown key(s) ['colour']",
        ),
    ],
)
def test_validate_record_names_the_key_path(
    mutate: Callable[[dict[str, Any]], None] | None, message: str
) -> None:
    rec: Any = good_record()
    if mutate is None:
        rec = rec["frames"]
    else:
        mutate(rec)
    with pytest.raises(ValueError) as info:
        validate_record(rec)
    assert str(info.value).startswith(message), str(info.value)


# -- the sink --------------------------------------------------------------------------


def lines_of(path: Path) -> list[dict[str, Any]]:
    data = path.read_bytes()
    assert data == b"" or data.endswith(b"\n"), "the file must end with a whole line"
    return [json.loads(line) for line in data.splitlines()]


def test_sink_appends_one_line_per_record(tmp_path: Path) -> None:
    out = tmp_path / "r.jsonl"
    with JsonlSink(out, validate=True) as sink:
        sink.write(good_record("a.mp4"))
        sink.write(good_record("b.mp4"))
    with JsonlSink(out) as sink:  # a second run appends
        sink.write(good_record("c.mp4"))
    assert [r["video_path"] for r in lines_of(out)] == ["a.mp4", "b.mp4", "c.mp4"]
    assert lines_of(out)[0] == good_record("a.mp4")
    with pytest.raises(ValueError, match="write after close"):
        sink.write(good_record())


def test_sink_refuses_a_bad_place(tmp_path: Path) -> None:
    with pytest.raises(OutputError, match="is not a directory"):
        JsonlSink(tmp_path / "missing" / "r.jsonl")
    with pytest.raises(OutputError, match="it is a directory"):
        JsonlSink(tmp_path)


def test_sink_writes_nothing_for_a_bad_record(tmp_path: Path) -> None:
    out = tmp_path / "r.jsonl"
    with JsonlSink(out, validate=True) as sink, pytest.raises(ValueError, match="video_path"):
        sink.write(video_record("", None, INFO, []))
    # NaN is not JSON (and the schema check is off here)
    with JsonlSink(out) as sink, pytest.raises(ValueError, match="Out of range float"):
        sink.write(video_record("a.mp4", None, {**INFO, "fps": float("nan")}, []))
    assert out.read_bytes() == b""


def _big_record(writer: str, i: int) -> dict[str, Any]:
    # ~200 KB: larger than a pipe buffer and than one page, so a non-atomic append shows
    return video_record(f"{writer}/{i}.mp4", writer * 50_000, INFO, [])


def test_sink_from_many_threads_gives_whole_lines(tmp_path: Path) -> None:
    out = tmp_path / "r.jsonl"
    with JsonlSink(out) as sink:

        def work(w: int) -> None:
            for i in range(15):
                sink.write(_big_record(f"t{w}", i))

        threads = [threading.Thread(target=work, args=(w,)) for w in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    records = lines_of(out)
    assert sorted(r["video_path"] for r in records) == sorted(
        f"t{w}/{i}.mp4" for w in range(8) for i in range(15)
    )
    assert all(r["prompt"] == r["video_path"].split("/")[0] * 50_000 for r in records)


def _process_writer(path: str, writer: str, count: int, go: Any) -> None:
    with JsonlSink(Path(path)) as sink:
        go.wait(60)  # all writers start together, so their appends contend
        for i in range(count):
            sink.write(_big_record(writer, i))


def test_sink_from_many_processes_gives_whole_lines(tmp_path: Path) -> None:
    out = tmp_path / "r.jsonl"
    ctx = multiprocessing.get_context("spawn")
    go = ctx.Event()
    procs = [
        ctx.Process(target=_process_writer, args=(str(out), f"p{w}", 25, go)) for w in range(4)
    ]
    for p in procs:
        p.start()
    go.set()
    for p in procs:
        p.join(timeout=120)
        assert p.exitcode == 0
    records = lines_of(out)
    assert sorted(r["video_path"] for r in records) == sorted(
        f"p{w}/{i}.mp4" for w in range(4) for i in range(25)
    )
    for r in records:
        validate_record(r)
        assert r["prompt"] == r["video_path"].split("/")[0] * 50_000


@pytest.mark.parametrize(
    ("before", "after"),
    [
        # a torn second line is cut back to the first
        (b'{"a":1}\n{"video_path": "x", "fra', b'{"a":1}\n'),
        # a file that is nothing but a torn line becomes empty
        (b'{"video_path": "x", "fr', b""),
        # a torn line longer than one read chunk
        (b'{"a":1}\n' + b'{"x": "' + b"y" * 200_000, b'{"a":1}\n'),
        # a whole record that only lost its newline keeps its data
        (b'{"a":1}\n{"b":2}', b'{"a":1}\n{"b":2}\n'),
        # not UTF-8 at all
        (b'{"a":1}\n\xff\xfe', b'{"a":1}\n'),
    ],
)
def test_torn_tail_is_repaired_before_appending(
    tmp_path: Path, before: bytes, after: bytes
) -> None:
    out = tmp_path / "r.jsonl"
    out.write_bytes(before)
    JsonlSink(out).close()
    assert out.read_bytes() == before  # opening alone changes nothing
    rec = good_record("z.mp4")
    with JsonlSink(out) as sink:
        sink.write(rec)
    assert out.read_bytes() == after + jsonl.encode_record(rec)


def test_a_tail_torn_while_the_sink_is_open_is_repaired_too(tmp_path: Path) -> None:
    # another writer crashed mid-line after this sink opened the file
    out = tmp_path / "r.jsonl"
    with JsonlSink(out) as sink:
        sink.write(good_record("a.mp4"))
        with out.open("ab") as other:
            other.write(b'{"video_path": "crashed", "fr')
        sink.write(good_record("b.mp4"))
    assert [r["video_path"] for r in lines_of(out)] == ["a.mp4", "b.mp4"]


def test_a_failed_write_leaves_no_partial_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "r.jsonl"
    sink = JsonlSink(out)
    sink.write(good_record("a.mp4"))
    real_write = os.write

    def disk_fills_up(fd: int, data: bytes) -> int:
        if fd == sink._fd:
            real_write(fd, data[: len(data) // 2])
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(jsonl.os, "write", disk_fills_up)
    with pytest.raises(OutputError, match="no space left on device"):
        sink.write(good_record("b.mp4"))
    monkeypatch.undo()
    sink.close()
    assert [r["video_path"] for r in lines_of(out)] == ["a.mp4"]


def test_a_short_write_is_finished(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "r.jsonl"
    sink = JsonlSink(out)
    real_write = os.write
    calls: list[int] = []

    def short(fd: int, data: bytes) -> int:
        if fd == sink._fd:
            calls.append(len(data))
            return real_write(fd, data[:1000])
        return real_write(fd, data)

    monkeypatch.setattr(jsonl.os, "write", short)
    sink.write(_big_record("s", 0))
    monkeypatch.undo()
    sink.close()
    assert len(calls) > 1  # it took several writes, and still one whole line
    assert [r["video_path"] for r in lines_of(out)] == ["s/0.mp4"]


# -- reading ---------------------------------------------------------------------------


def test_read_done_and_done_paths(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    out = tmp_path / "r.jsonl"
    failed = video_record("b.mp4", None, {}, [], error="cannot decode")
    with JsonlSink(out) as sink:
        sink.write(good_record("a.mp4"))
        sink.write(failed)
        sink.write(video_record("d.mp4", None, {}, [], error="out of memory"))
        sink.write(good_record("d.mp4"))  # retried and done
        sink.write(good_record("c.mp4"))
        sink.write(video_record("c.mp4", None, {}, [], error="later rerun failed"))
    with out.open("ab") as f:
        f.write(b'{"not": "a record"}\n')  # a valid JSON line that is not a record
        f.write(jsonl.encode_record(good_record("e.mp4"))[:-40])  # torn last line
    with caplog.at_level(logging.DEBUG, logger="vidshard.detection.jsonl"):
        done = read_done(out)
    # the bad middle line is reported; the torn last one (a crash) only at debug level
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and ":7: skipped an invalid line" in warnings[0]
    assert any(":8: skipped a torn last line" in r.getMessage() for r in caplog.records)
    assert set(done) == {"a.mp4", "c.mp4", "d.mp4"}
    assert done["d.mp4"] == good_record("d.mp4")
    assert done_paths(out) == {"a.mp4", "c.mp4", "d.mp4"}
    assert done_paths(out, include_failed=True) == {"a.mp4", "b.mp4", "c.mp4", "d.mp4"}


def test_reading_a_missing_file(tmp_path: Path) -> None:
    assert read_done(tmp_path / "none.jsonl") == {}
    assert done_paths(tmp_path / "none.jsonl", include_failed=True) == set()


def test_records_round_trip_through_the_file(tmp_path: Path) -> None:
    out = tmp_path / "r.jsonl"
    rec = good_record()
    with JsonlSink(out) as sink:
        sink.write(copy.deepcopy(rec))
    back = read_done(out)["a.mp4"]
    assert back == rec
    d = dets(masks=True)
    assert d.masks is not None
    for obj, mask in zip(back["frames"][0]["objects"], d.masks, strict=True):
        np.testing.assert_array_equal(rle_to_mask(obj["mask"]), mask)
