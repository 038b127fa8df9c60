"""A stream's counters, frame rate and latency percentiles (an injected clock)."""

from __future__ import annotations

import pytest

from vidshard.streams.stats import FPS_WINDOW_S, LATENCY_WINDOW, StreamStats
from vidshard.streams.types import StreamState


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_counters_and_status() -> None:
    clock = Clock()
    stats = StreamStats(clock=clock)
    for _ in range(5):
        stats.received()
    stats.dropped(2)
    stats.reconnected()
    stats.processed(captured_at=999.9, processed_at=1000.0)
    status = stats.status("cam", StreamState.LIVE, "", 990.0, "cpu#0")
    assert (status.frames_received, status.frames_dropped, status.frames_processed) == (5, 2, 1)
    assert status.reconnects == 1
    assert status.last_result_at == 1000.0
    assert (status.state, status.state_since, status.slot) == (StreamState.LIVE, 990.0, "cpu#0")
    assert status.latency_p50_ms == status.latency_p95_ms == pytest.approx(100.0)


def test_no_latency_before_a_result() -> None:
    status = StreamStats().status("cam", StreamState.CONNECTING, "opening", 0.0, None)
    assert (status.latency_p50_ms, status.latency_p95_ms, status.fps) == (None, None, 0.0)


@pytest.mark.parametrize(
    ("rate_fps", "seconds"),
    [
        (25.0, 10.0),  # a steady stream, longer than the window
        (10.0, 1.0),  # a stream younger than the window: its rate, not diluted
        (200.0, 4.0),  # a fast one
    ],
)
def test_fps_is_the_recent_rate(rate_fps: float, seconds: float) -> None:
    clock = Clock()
    stats = StreamStats(clock=clock)
    for i in range(int(rate_fps * seconds)):
        clock.now = 1000.0 + i / rate_fps
        stats.processed(clock.now - 0.01, clock.now)
    assert stats.fps() == pytest.approx(rate_fps, rel=0.1)


def test_fps_falls_to_zero_when_results_stop() -> None:
    clock = Clock()
    stats = StreamStats(clock=clock)
    for i in range(50):
        clock.now = 1000.0 + i * 0.04
        stats.processed(clock.now, clock.now)
    clock.now += FPS_WINDOW_S + 0.1
    assert stats.fps() == 0.0


def test_latency_percentiles_over_the_latest_results() -> None:
    clock = Clock()
    stats = StreamStats(clock=clock)
    for _ in range(LATENCY_WINDOW):  # old results: 1 s each
        stats.processed(clock.now - 1.0, clock.now)
    for i in range(LATENCY_WINDOW):  # the latest: 0..LATENCY_WINDOW-1 ms
        stats.processed(clock.now - i / 1000.0, clock.now)
    p50, p95 = stats.latency_ms()
    assert p50 is not None and p95 is not None
    assert p50 == pytest.approx((LATENCY_WINDOW - 1) / 2, abs=1.0)  # the old ones are gone
    assert p50 <= p95 < LATENCY_WINDOW


def test_memory_stays_flat() -> None:
    stats = StreamStats(clock=Clock())
    for i in range(20_000):
        stats.processed(float(i), float(i) + 0.01)
    assert len(stats._latencies_ms) <= LATENCY_WINDOW
    assert len(stats._result_times) <= 4096
