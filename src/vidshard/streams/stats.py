"""A stream's counters, its frame rate and its latency, in bounded memory.

The reader thread counts frames received and dropped, the host counts frames processed
and their latency (capture to result); a :class:`StreamStatus` is a snapshot of both.
The frame rate is over the last :data:`FPS_WINDOW_S` seconds of results, the latency
percentiles over the last :data:`LATENCY_WINDOW` results: nothing grows with a
stream's age.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable

import numpy as np

from .types import StreamState, StreamStatus

FPS_WINDOW_S = 3.0  # frames processed a second, over this long
LATENCY_WINDOW = 512  # results the latency percentiles are over
_FPS_SAMPLES = 4096  # most result times kept (a rate up to ~1300 fps over the window)


class StreamStats:
    """Thread-safe counters of one stream; ``clock`` gives epoch seconds."""

    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self.frames_received = 0
        self.frames_processed = 0
        self.frames_dropped = 0
        self.reconnects = 0
        self.last_result_at: float | None = None
        self._latencies_ms: deque[float] = deque(maxlen=LATENCY_WINDOW)
        self._result_times: deque[float] = deque(maxlen=_FPS_SAMPLES)

    def received(self) -> None:
        with self._lock:
            self.frames_received += 1

    def dropped(self, count: int = 1) -> None:
        with self._lock:
            self.frames_dropped += count

    def reconnected(self) -> None:
        with self._lock:
            self.reconnects += 1

    def processed(self, captured_at: float, processed_at: float) -> None:
        with self._lock:
            self.frames_processed += 1
            self.last_result_at = processed_at
            self._latencies_ms.append(max(0.0, processed_at - captured_at) * 1000.0)
            self._result_times.append(processed_at)

    def fps(self, now: float | None = None) -> float:
        """Results a second over the last :data:`FPS_WINDOW_S` seconds (0 without two)."""
        now = self._clock() if now is None else now
        with self._lock:
            times = self._result_times
            while times and times[0] < now - FPS_WINDOW_S:
                times.popleft()
            if len(times) < 2 or now <= times[0]:
                return 0.0
            return (len(times) - 1) / (now - times[0])

    def latency_ms(self) -> tuple[float | None, float | None]:
        """(p50, p95) of the latest results' latencies in ms; None before any."""
        with self._lock:
            if not self._latencies_ms:
                return None, None
            values = np.fromiter(self._latencies_ms, dtype=np.float64)
        p50, p95 = np.percentile(values, [50.0, 95.0])
        return round(float(p50), 2), round(float(p95), 2)

    def status(
        self,
        stream_id: str,
        state: StreamState,
        reason: str,
        state_since: float,
        slot: str | None,
    ) -> StreamStatus:
        """A snapshot of the counters with the stream's state."""
        fps = self.fps()
        p50, p95 = self.latency_ms()
        with self._lock:
            return StreamStatus(
                stream_id=stream_id,
                state=state,
                reason=reason,
                state_since=state_since,
                frames_received=self.frames_received,
                frames_processed=self.frames_processed,
                frames_dropped=self.frames_dropped,
                fps=round(fps, 2),
                latency_p50_ms=p50,
                latency_p95_ms=p95,
                reconnects=self.reconnects,
                last_result_at=self.last_result_at,
                slot=slot,
            )
