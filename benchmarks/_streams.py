"""The streams benchmark's harness: a pool and a stream manager on it, what they hand over
(records, state changes), and small helpers. See ``streams.py``."""

from __future__ import annotations

import random
import statistics
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import _common  # noqa: E402

DETECTOR = f"{HERE / 'sleep_stream_detector.py'}:SleepBatchDetector"
WAIT_S = 60.0


def wait_for(predicate: Callable[[], Any], timeout_s: float, poll_s: float = 0.02) -> Any:
    """The predicate's first true value, or None after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll_s)
    return None


def all_started(bench: Bench, ids: list[str]) -> bool:
    """Whether every stream gave a result within :data:`WAIT_S`."""
    return bool(wait_for(lambda: all(bench.rec.first(i, 0) for i in ids), WAIT_S))


def pct(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


class Recorder:
    """What the manager hands over: (arrival time, record), thread-safe."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.records: list[tuple[float, Any]] = []
        self.states: list[tuple[str, str, float]] = []  # (stream, state, since), changes

    def on_status(self, view: Any) -> None:
        entry = (view.stream_id, view.status.state.value, view.status.state_since)
        with self.lock:
            if entry not in self.states[-64:]:
                self.states.append(entry)

    def state_at(self, stream_id: str, state: str, after: float) -> float | None:
        """When the stream first entered ``state`` after ``after`` (epoch s)."""
        with self.lock:
            times = [t for i, st, t in self.states if i == stream_id and st == state and t > after]
        return min(times, default=None)

    def on_record(self, record: Any) -> None:
        arrived = time.time()
        with self.lock:
            self.records.append((arrived, record))

    def clear(self) -> None:
        with self.lock:
            self.records.clear()
            self.states.clear()

    def where(self, keep: Callable[[Any], bool]) -> list[tuple[float, Any]]:
        with self.lock:
            return [(at, r) for at, r in self.records if keep(r)]

    def first(self, stream_id: str, after: float, slot: str | None = None) -> float | None:
        """Processing time of the stream's first record captured after ``after``."""
        with self.lock:
            for _, r in self.records:
                if (
                    r.stream_id == stream_id
                    and r.captured_at > after
                    and (slot is None or r.slot == slot)
                ):
                    return float(r.processed_at)
        return None


class Bench:
    """A pool on ``devices`` and a stream manager on it."""

    def __init__(self, slots: int, per_slot_limit: int) -> None:
        from vidshard.devices.spec import parse_device_spec
        from vidshard.devices.types import Device
        from vidshard.executors.local import LocalExecutor
        from vidshard.streams.manager import StreamManager

        self.slots = slots
        self.pool = LocalExecutor()  # default supervision, as the CLI and the service
        devices = parse_device_spec(f"cpu:{slots}", [Device("cpu", 0, name="cpu")])
        self.pool.start(devices, None, lambda _event: None)
        self.rec = Recorder()
        self.manager = StreamManager(
            self.pool,
            per_slot_limit=per_slot_limit,
            on_record=self.rec.on_record,
            on_status=self.rec.on_status,
        )
        self._count = 0

    def add(self, urls: Sequence[str], batch_size: int, rng: random.Random, **extra: Any) -> list:
        """Add a stream per URL, a random fraction of a frame apart (random phases)."""
        from vidshard.streams.options import StreamOptions, stream_recipe
        from vidshard.tasks.base import AnyModelFile

        options = StreamOptions(  # type: ignore[call-arg]
            model=DETECTOR,
            batch_size=batch_size,
            loop=True,
            realtime=True,
            snapshot_interval_s=0,
            **extra,
        )
        recipe = stream_recipe(options, AnyModelFile())
        ids = []
        for url in urls:
            self._count += 1
            ids.append(f"s{self._count}")
            self.manager.add(url, options, recipe, stream_id=ids[-1])
            time.sleep(rng.uniform(0.0, 0.04))
        return ids

    def remove_all(self) -> None:
        for view in self.manager.list():
            self.manager.remove(view.stream_id)
        wait_for(lambda: all(s.state == "idle" for s in self.pool.slot_states()), WAIT_S)
        self.rec.clear()

    def worker_cpu_s(self) -> float:
        import psutil

        total = 0.0
        for child in psutil.Process().children(recursive=True):
            try:
                if any("vidshard-worker-" in part for part in child.cmdline()):
                    times = child.cpu_times()
                    total += times.user + times.system
            except psutil.Error:
                continue
        return total

    def close(self) -> None:
        self.manager.close()
        self.pool.shutdown()


def read_calls(path: Path, t0: float, t1: float) -> tuple[int, int]:
    """(detector calls, frames in them) logged between t0 and t1."""
    calls = frames = 0
    if path.exists():
        for line in path.read_text().splitlines():
            at, _, n = line.partition(" ")
            if n and t0 <= float(at) < t1:
                calls += 1
                frames += int(n)
    return calls, frames


def since(times: list[float | None], start: float) -> list[float | None]:
    return [None if t is None else t - start for t in times]


def spread(values: list[float | None]) -> tuple[str, str, int]:
    got = [v for v in values if v is not None]
    missing = len(values) - len(got)
    if not got:
        return "-", "-", missing
    return f"{statistics.median(got):.2f}", f"{max(got):.2f}", missing


def rtsp_server(clip: Path, log_dir: Path) -> Any:
    """A started RTSP test server serving ``clip`` at /cam, or None where it cannot run."""
    sys.path.insert(0, str(_common.REPO / "tests"))
    from rtsp_fixtures import RtspServer, rtsp_server_missing

    missing = rtsp_server_missing()
    if missing is not None:
        print(f"skipping the RTSP parts: {missing}", flush=True)
        return None
    server = RtspServer({"cam": clip}, log_dir / "rtsp-server.log")
    server.start()
    return server


def decode_cost(clip: Path, rounds: int = 3) -> dict[str, float]:
    """CPU ms a frame of ``clip`` costs one thread: decoding (with the readers' two decoder
    threads), and decoding plus the RGB conversion every stream frame gets (``to_rgb``)."""
    import av

    from vidshard.media.colour import ColourTags, colour_rule, to_rgb
    from vidshard.streams.reader import DECODE_THREADS

    costs = {}
    for name, convert in (("decode_ms", False), ("decode_rgb_ms", True)):
        started, frames = time.process_time(), 0
        for _ in range(rounds):
            with av.open(str(clip)) as container:
                stream = container.streams.video[0]
                stream.codec_context.thread_type = "AUTO"
                stream.codec_context.thread_count = DECODE_THREADS
                colour = None
                for frame in container.decode(stream):
                    if convert:
                        if colour is None:
                            size_wh = (frame.width, frame.height)
                            tags = ColourTags.of(frame)
                            rate = stream.average_rate
                            colour = colour_rule(tags, size_wh, rate, frame.format.name)
                        to_rgb(frame, colour)
                    frames += 1
        costs[name] = (time.process_time() - started) / frames * 1000
    return costs
