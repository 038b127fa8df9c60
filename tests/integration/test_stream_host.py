"""A worker's stream host on real sources: several streams batched through one fake
detector, their files, their trackers, and what goes wrong (slow, broken, bad URLs)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from clips import ClipSpec, write_clip
from rtsp_fixtures import running_rtsp_server, squares_clip
from squares import FAKE_DETECTOR
from stream_clips import write_squares_stream
from stream_fixtures import ClipServer, SilentTcpServer, stream_spec, wait_for, write_detectors
from vidshard.detection.pipeline import DetectorOptions, DetectRecipe
from vidshard.errors import ConfigError
from vidshard.streams.host import DETECTOR_FAILURE_LIMIT, StreamHost
from vidshard.streams.types import StreamRecord, StreamSpec, StreamState, StreamStatus


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("stream_host")
    (root / "squares_detector.py").write_text(FAKE_DETECTOR)
    return {
        "detectors": write_detectors(root),
        "squares_detector": root / "squares_detector.py",
        "small": write_clip(root / "small.mp4", ClipSpec(size_wh=(160, 120), frames=50, gop=5)),
        "large": write_clip(root / "large.mp4", ClipSpec(size_wh=(320, 240), frames=50, gop=5)),
        "squares": write_squares_stream(root / "squares.mp4", frames=50),
        "squares_ts": write_squares_stream(root / "squares.ts", frames=50),
    }


def recipe(
    media: dict[str, Path], cls: str = "Counting", *, batch_size: int = 8, track: bool = False
) -> DetectRecipe:
    weights = (
        f"{media['squares_detector']}:Squares"
        if cls == "Squares"
        else f"{media['detectors']}:{cls}"
    )
    return DetectRecipe(
        detector="class",
        weights=weights,
        options=DetectorOptions(batch_size=batch_size),
        tracker="bytetrack" if track else "none",
    )


class Running:
    """A host running on a thread, with every message it sent."""

    def __init__(self, recipe: DetectRecipe) -> None:
        self.messages: list[tuple[Any, ...]] = []
        self._lock = threading.Lock()
        self.host = StreamHost(recipe, "cpu", "cpu#0", self._emit)
        self.host.load()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.host.run, args=(self.stop,), daemon=True)
        self.thread.start()

    def _emit(self, message: tuple[Any, ...]) -> None:
        with self._lock:
            self.messages.append(message)

    def add(self, spec: StreamSpec) -> None:
        self.host.add(spec)

    def records(self, stream_id: str | None = None) -> list[StreamRecord]:
        with self._lock:
            batches = [m[1] for m in self.messages if m[0] == "stream_records"]
        return [r for batch in batches for r in batch if stream_id in (None, r.stream_id)]

    def statuses(self, stream_id: str) -> list[StreamStatus]:
        with self._lock:
            return [
                m[1]
                for m in self.messages
                if m[0] == "stream_status" and m[1].stream_id == stream_id
            ]

    def last(self, stream_id: str) -> StreamStatus:
        return self.statuses(stream_id)[-1]

    def state(self, stream_id: str) -> StreamState:
        found = self.statuses(stream_id)
        return found[-1].state if found else StreamState.CONNECTING

    def calls(self) -> list[tuple[int, int, int]]:
        detector: Any = getattr(self.host.detector, "inner", None)  # the class's instance
        with detector.lock:
            return list(detector.calls)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(60)
        assert not self.thread.is_alive()


@pytest.fixture
def run() -> Iterator[Callable[[DetectRecipe], Running]]:
    made: list[Running] = []

    def start(recipe: DetectRecipe) -> Running:
        made.append(Running(recipe))
        return made[-1]

    yield start
    for running in made:
        if running.thread.is_alive():
            running.close()


def test_streams_of_several_sizes_batched(
    run: Callable[[DetectRecipe], Running], media: dict[str, Path], tmp_path: Path
) -> None:
    host_recipe = recipe(media)
    running = run(host_recipe)
    out = tmp_path / "out"
    sources = {"a": media["small"], "b": media["small"], "c": media["large"]}
    for stream_id, path in sources.items():
        running.add(
            stream_spec(
                path,
                stream_id=stream_id,
                recipe=host_recipe,
                output_dir=out,
                loop=True,
                batch_wait_ms=200,
                snapshot_interval_s=0.2,
            )
        )
    wait_for(lambda: all(len(running.records(s)) >= 40 for s in sources), 120)
    running.close()

    calls = running.calls()
    assert {(h, w) for _, h, w in calls} == {(120, 160), (240, 320)}  # one size a call
    small_calls = [n for n, h, _ in calls if h == 120]
    assert max(small_calls) == 2  # a and b in one call: batched across streams
    assert sum(small_calls) / len(small_calls) > 1.5  # most of the time
    boxes = {"a": [40, 30, 120, 90], "b": [40, 30, 120, 90], "c": [80, 60, 240, 180]}
    for stream_id, box in boxes.items():
        records = running.records(stream_id)
        assert all(r.objects[0]["box"] == box for r in records)  # its own frame's result
        assert all(r.slot == "cpu#0" and r.processed_at >= r.captured_at for r in records)
        assert records[0].tracker_started is False  # no tracker: no ids to start over
        # the JSONL holds every record sent, as StreamRecord.to_json writes it
        (path,) = out.glob(f"{stream_id}-*.jsonl")
        lines = [json.loads(line) for line in path.read_text().splitlines()]
        assert lines == [r.to_json() for r in records]
        assert (out / f"{stream_id}.jpg").stat().st_size > 0
        live = [s for s in running.statuses(stream_id) if s.state is StreamState.LIVE]
        assert len(live) >= 2  # sent at the change and about twice a second
        last = live[-1]
        assert last.fps > 0 and last.slot == "cpu#0"
        assert last.latency_p50_ms is not None and last.latency_p95_ms is not None
        assert 0 <= last.latency_p50_ms <= last.latency_p95_ms
        final = running.last(stream_id)
        assert (final.state, final.reason) == (StreamState.STOPPED, "the host stopped")
        assert final.frames_processed == len(records)


def test_more_streams_than_a_batch_are_served_in_turn(
    run: Callable[[DetectRecipe], Running], media: dict[str, Path]
) -> None:
    host_recipe = recipe(media, "Slow", batch_size=2)  # slower than the streams: every
    running = run(host_recipe)  # stream has a frame waiting at every batch
    names = ["s0", "s1", "s2", "s3", "s4"]
    for name in names:
        running.add(stream_spec(media["small"], stream_id=name, recipe=host_recipe, loop=True))
    wait_for(lambda: all(running.host.statuses()[i].frames_received > 0 for i in range(5)), 60)
    wait_for(lambda: len(running.records()) >= 30, 120)
    running.close()
    assert max(n for n, _, _ in running.calls()) == 2  # never more than batch_size
    counts = [len(running.records(name)) for name in names]
    assert min(counts) >= max(counts) / 2  # each stream gets its turn, round-robin


def test_a_slow_detector_drops_the_oldest(
    run: Callable[[DetectRecipe], Running], media: dict[str, Path]
) -> None:
    host_recipe = recipe(media, "Slow")
    running = run(host_recipe)
    running.add(stream_spec(media["small"], recipe=host_recipe, loop=True, buffer_frames=2))
    wait_for(lambda: len(running.records()) >= 12, 120)  # about 4 s at 0.3 s a call
    running.close()
    final = running.last("cam")
    assert final.frames_dropped > final.frames_processed  # 25 fps in, ~3 fps out
    accounted = final.frames_processed + final.frames_dropped
    assert accounted <= final.frames_received <= accounted + 2  # every frame counted
    records = running.records()
    latencies_s = [r.processed_at - r.captured_at for r in records]
    # drop-oldest: a frame waits for at most the 2 before it, not for every frame since
    # the start (which would be seconds by now)
    assert max(latencies_s[5:]) < 2.5
    assert final.latency_p50_ms is not None and final.latency_p95_ms is not None
    assert final.latency_p50_ms <= final.latency_p95_ms


def test_max_fps(run: Callable[[DetectRecipe], Running], media: dict[str, Path]) -> None:
    host_recipe = recipe(media)
    running = run(host_recipe)
    running.add(stream_spec(media["small"], recipe=host_recipe, loop=True, max_fps=5))
    wait_for(lambda: len(running.records()) >= 12, 120)
    running.close()
    records = running.records()
    assert all(r.frame % 5 == 0 for r in records)  # 25 fps -> every 5th frame
    final = running.last("cam")
    assert final.frames_dropped >= 4 * final.frames_processed - 4


def test_a_file_that_ends_is_processed_to_its_last_frame(
    run: Callable[[DetectRecipe], Running], media: dict[str, Path], tmp_path: Path
) -> None:
    host_recipe = recipe(media)
    running = run(host_recipe)
    running.add(
        stream_spec(
            media["small"],
            recipe=host_recipe,
            realtime=False,
            buffer_frames=64,
            output_dir=tmp_path,
        )
    )
    wait_for(lambda: running.state("cam") is StreamState.STOPPED, 60)
    final = running.last("cam")
    # every frame is either processed or dropped (the newest wins when the detector is
    # busy), in order, and each processed one is a line
    assert final.frames_processed + final.frames_dropped == 50
    frames = [r.frame for r in running.records()]
    assert frames == sorted(set(frames)) and len(frames) == final.frames_processed
    assert final.reason == "the file ended"
    (path,) = tmp_path.glob("cam-*.jsonl")
    assert len(path.read_text().splitlines()) == final.frames_processed


def test_track_ids_on_moving_squares(
    run: Callable[[DetectRecipe], Running], media: dict[str, Path]
) -> None:
    host_recipe = recipe(media, "Squares", track=True)
    running = run(host_recipe)
    # in real time: the detector keeps up, so it sees (nearly) every frame of the 50
    running.add(stream_spec(media["squares"], recipe=host_recipe, realtime=True))
    wait_for(lambda: running.state("cam").is_final, 60)
    records = running.records()
    assert len(records) >= 25, len(records)
    assert records[0].tracker_started and not any(r.tracker_started for r in records[1:])
    ids: dict[str, set[int]] = {}
    for record in records:
        assert len(record.objects) == 3
        for obj in record.objects:
            ids.setdefault(obj["class"], set()).add(obj["track_id"])
    assert all(len(found) == 1 for found in ids.values())  # each square keeps its id
    assert len(set.union(*ids.values())) == 3  # and the ids differ


def test_the_tracker_starts_over_on_a_reconnect(
    run: Callable[[DetectRecipe], Running], media: dict[str, Path]
) -> None:
    server = ClipServer(media["squares_ts"])  # each connection: the clip, then the end
    try:
        host_recipe = recipe(media, "Squares", track=True)
        running = run(host_recipe)
        spec = stream_spec(
            server.url, recipe=host_recipe, track=True, buffer_frames=64, reconnect_delay_s=0.2
        )
        running.add(spec)
        wait_for(lambda: sum(r.tracker_started for r in running.records()) >= 2, 60)
        running.close()
    finally:
        server.close()
    records = running.records()
    starts = [i for i, r in enumerate(records) if r.tracker_started]
    assert starts[0] == 0
    second = records[starts[1]]
    assert second.frame == 0  # the first frame of the new connection
    assert {obj["track_id"] for obj in second.objects} == {1, 2, 3}  # ids from 1 again
    assert records[starts[1] - 1].frame > 0  # the old connection's frames came before
    assert running.last("cam").reconnects >= 1
    reasons = [s.reason for s in running.statuses("cam") if s.state is StreamState.RECONNECTING]
    assert "the source ended" in reasons


def test_bad_urls_fail_and_the_rest_go_on(
    run: Callable[[DetectRecipe], Running], media: dict[str, Path]
) -> None:
    host_recipe = recipe(media)
    running = run(host_recipe)
    running.add(stream_spec(media["small"], stream_id="good", recipe=host_recipe, loop=True))
    bad = {"scheme": "foo://camera", "missing": "/no/such.mp4", "malformed": "rtsp://"}
    for stream_id, url in bad.items():
        running.add(stream_spec(url, stream_id=stream_id, recipe=host_recipe))
    for stream_id in bad:
        wait_for(lambda s=stream_id: running.state(s) is StreamState.FAILED, 60)  # type: ignore[misc]
    assert "unknown URL scheme 'foo'" in running.last("scheme").reason
    assert running.last("missing").reason == "no such file: /no/such.mp4"
    assert "expected a host" in running.last("malformed").reason
    count = len(running.records("good"))
    wait_for(lambda: len(running.records("good")) > count + 10, 60)
    assert running.thread.is_alive()


def test_a_stream_the_host_cannot_take(
    run: Callable[[DetectRecipe], Running], media: dict[str, Path], tmp_path: Path
) -> None:
    running = run(recipe(media))
    running.add(stream_spec(media["small"], stream_id="other", recipe=recipe(media, "Slow")))
    assert running.state("other") is StreamState.FAILED
    assert "is not this host's" in running.last("other").reason
    (tmp_path / "file").write_text("")
    running.add(
        stream_spec(
            media["small"], stream_id="nodir", recipe=recipe(media), output_dir=tmp_path / "file"
        )
    )
    assert running.state("nodir") is StreamState.FAILED
    assert "cannot create stream folder" in running.last("nodir").reason
    running.add(
        stream_spec(media["small"], stream_id="../x", recipe=recipe(media), output_dir=tmp_path)
    )
    assert "stream id '../x'" in running.last("../x").reason
    with pytest.raises(ConfigError, match="already hosted"):
        running.add(stream_spec(media["small"], stream_id="other", recipe=recipe(media)))


def test_remove_returns_at_once_while_the_source_hangs(
    run: Callable[[DetectRecipe], Running], media: dict[str, Path]
) -> None:
    server = SilentTcpServer()
    try:
        host_recipe = recipe(media)
        running = run(host_recipe)
        url = f"http://127.0.0.1:{server.port}/live"
        running.add(stream_spec(url, recipe=host_recipe, open_timeout_s=60))
        wait_for(lambda: len(server.accepted_at) == 1)  # the reader is inside av.open
        begun = time.monotonic()
        running.host.remove("cam")
        assert time.monotonic() - begun < 5.0  # not the 60 s the open may take
        final = running.last("cam")
        assert (final.state, final.reason) == (StreamState.STOPPED, "removed")
        assert running.host.statuses() == []
        running.host.remove("cam")  # again: nothing to do
    finally:
        server.close()


@pytest.mark.parametrize(
    ("cls", "reason"),
    [
        ("Broken", "RuntimeError: this model is broken"),  # raises
        ("Short", "detector counting: expected 1 Detections, got 0"),  # a wrong count
    ],
)
def test_a_detector_that_keeps_failing_fails_the_streams(
    run: Callable[[DetectRecipe], Running], media: dict[str, Path], cls: str, reason: str
) -> None:
    host_recipe = recipe(media, cls)
    running = run(host_recipe)
    running.add(stream_spec(media["small"], recipe=host_recipe, loop=True))
    wait_for(lambda: running.state("cam") is StreamState.FAILED, 60)
    final = running.last("cam")
    assert final.reason == (
        f"the detector failed {DETECTOR_FAILURE_LIMIT} calls in a row: {reason}"
    )
    assert final.frames_processed == 0
    assert running.thread.is_alive()  # the host itself goes on
    assert running.records() == []


def test_a_detector_that_fails_now_and_then(
    run: Callable[[DetectRecipe], Running], media: dict[str, Path]
) -> None:
    host_recipe = recipe(media, "Flaky")
    running = run(host_recipe)
    running.add(stream_spec(media["small"], recipe=host_recipe, loop=True))
    wait_for(lambda: len(running.records()) >= 20, 60)
    assert running.state("cam") is StreamState.LIVE
    status = running.host.statuses()[0]
    assert status.frames_dropped >= 19  # a failed call before each good one: its frames
    reasons = {s.reason for s in running.statuses("cam") if s.state is StreamState.LIVE}
    assert reasons <= {"", "detector error: RuntimeError: a bad batch"}


def test_jsonl_rotated_and_snapshot_replaced(
    run: Callable[[DetectRecipe], Running], media: dict[str, Path], tmp_path: Path
) -> None:
    host_recipe = recipe(media)
    running = run(host_recipe)
    running.add(
        stream_spec(
            media["small"],
            recipe=host_recipe,
            loop=True,
            output_dir=tmp_path,
            rotate_mb=0.002,  # about 2 KB: a file every ~8 lines
            snapshot_interval_s=0.2,
        )
    )
    snapshot = tmp_path / "cam.jpg"
    wait_for(snapshot.exists, 60)
    first = snapshot.stat().st_ino
    wait_for(lambda: snapshot.stat().st_ino != first, 60)  # replaced by a rename
    wait_for(lambda: len(list(tmp_path.glob("cam-*.jsonl"))) >= 3, 60)
    running.close()
    paths = sorted(tmp_path.glob("cam-*.jsonl"))
    frames = [json.loads(line)["frame"] for p in paths for line in p.read_text().splitlines()]
    assert frames == [r.frame for r in running.records()]  # nothing lost across files
    assert all(p.stat().st_size <= 0.002 * 1024 * 1024 for p in paths)
    assert not list(tmp_path.glob(".*"))  # no temporary file left


def test_rtsp_killed_and_restarted_goes_live_again(
    run: Callable[[DetectRecipe], Running], media: dict[str, Path], tmp_path: Path
) -> None:
    clip = squares_clip(tmp_path / "squares.mp4")
    with running_rtsp_server({"squares": clip}, tmp_path) as server:
        host_recipe = recipe(media, "Squares", track=True)
        running = run(host_recipe)
        spec = stream_spec(
            server.url("squares"),
            recipe=host_recipe,
            track=True,
            open_timeout_s=5,
            stall_timeout_s=3,
            reconnect_delay_s=0.2,
            reconnect_max_delay_s=1.0,
            max_reconnects=1000,
        )
        running.add(spec)
        wait_for(lambda: len(running.records()) >= 10, 90)
        assert running.state("cam") is StreamState.LIVE
        server.kill()
        wait_for(lambda: running.state("cam") is StreamState.RECONNECTING, 60)
        before = len(running.records())
        server.restart()
        wait_for(lambda: len(running.records()) >= before + 10, 90)
        assert running.state("cam") is StreamState.LIVE
    records = running.records()
    after = records[before:]
    assert [r.tracker_started for r in records[:before]].count(True) == 1
    assert after[0].tracker_started  # ids start over on the new connection, and say so
    assert all(len(r.objects) == 3 for r in after[1:])  # the squares are found again
    assert running.last("cam").reconnects >= 1
    states = [s.state for s in running.statuses("cam")]
    live_again = states.index(StreamState.RECONNECTING)
    assert StreamState.LIVE in states[live_again:]


@pytest.mark.parametrize("transport", ["tcp", "udp"])
def test_rtsp_over_either_transport(
    run: Callable[[DetectRecipe], Running],
    media: dict[str, Path],
    tmp_path: Path,
    transport: str,
) -> None:
    clip = squares_clip(tmp_path / "squares.mp4")
    with running_rtsp_server({"squares": clip}, tmp_path) as server:
        host_recipe = recipe(media, "Squares")
        running = run(host_recipe)
        running.add(stream_spec(server.url("squares"), recipe=host_recipe, transport=transport))
        wait_for(lambda: len(running.records()) >= 10, 90)
        running.close()
    records = running.records()
    assert all(len(r.objects) == 3 for r in records[1:])
    pts = [r.pts_s for r in records[1:]]  # RTP gives the first frame no time of its own
    assert all(t is not None for t in pts)
    assert pts == sorted(pts)  # type: ignore[type-var]


def test_a_detector_call_that_never_returns_ends_the_worker(media: dict[str, Path]) -> None:
    """A stuck call cannot be interrupted: the host says so and the worker ends, so the
    coordinator moves the streams (it sees a dead worker)."""
    stuck: list[str] = []
    host = StreamHost(
        recipe(media, "Hanging"), "cpu", "cpu#0", lambda _m: None, on_stuck=stuck.append,
        stuck_after_s=1.0,
    )  # fmt: skip
    host.load()
    stop = threading.Event()
    thread = threading.Thread(target=host.run, args=(stop,), daemon=True)
    thread.start()
    try:
        host.add(stream_spec(media["small"], recipe=recipe(media, "Hanging"), loop=True))
        wait_for(lambda: bool(stuck), 60)
        assert "has not returned in 1 s" in stuck[0]
    finally:
        inner: Any = getattr(host.detector, "inner", None)
        type(inner).release.set()
        stop.set()
        thread.join(60)
