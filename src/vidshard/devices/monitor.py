"""Monitoring: device readings on demand, and each slot's measured frame rate."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Sequence

from vidshard.devices.platform import Platform, default_platforms, discover_devices
from vidshard.devices.types import DeviceStatus


class DeviceMonitor:
    """Reads every device's memory, utilisation and temperature when asked.

    It keeps its platforms, so readings that need a previous one (CPU load) are right
    from the second snapshot on.
    """

    def __init__(self, platforms: Sequence[Platform] | None = None) -> None:
        self._platforms = list(default_platforms() if platforms is None else platforms)

    def snapshot(self) -> list[DeviceStatus]:
        return discover_devices(self._platforms)


def status_to_dict(status: DeviceStatus) -> dict[str, str | int | float | None]:
    """A JSON-ready record of one reading (for ``vidshard devices --json`` and the service)."""
    device = status.device
    return {
        "device": device.label,
        "kind": device.kind,
        "index": device.index,
        "name": device.name,
        "memory_total_bytes": status.memory_total_bytes,
        "memory_used_bytes": status.memory_used_bytes,
        "memory_free_bytes": status.memory_free_bytes,
        "utilization_pct": status.utilization_pct,
        "temperature_c": status.temperature_c,
        "cpu_cores": status.cpu_cores,
    }


class SlotRate:
    """Frames one slot produced: overall fps since start, and fps over a recent window."""

    def __init__(
        self, *, window_s: float = 10.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if window_s <= 0:
            raise ValueError(f"window_s must be positive, got {window_s}")
        self._clock = clock
        self._window_s = window_s
        self._started_s = clock()
        self._recent: deque[tuple[float, int]] = deque()  # (time_s, frames) inside the window
        self.frames = 0

    def add(self, frames: int) -> None:
        """Count ``frames`` finished now."""
        if frames < 0:
            raise ValueError(f"frames must be >= 0, got {frames}")
        self.frames += frames
        self._recent.append((self._clock(), frames))

    @property
    def elapsed_s(self) -> float:
        return max(0.0, self._clock() - self._started_s)

    @property
    def fps(self) -> float:
        elapsed_s = self.elapsed_s
        return self.frames / elapsed_s if elapsed_s > 0 else 0.0

    @property
    def recent_fps(self) -> float:
        """Frames over the last ``window_s`` (or since start, if that is shorter)."""
        now_s = self._clock()
        while self._recent and self._recent[0][0] <= now_s - self._window_s:
            self._recent.popleft()
        span_s = min(self._window_s, now_s - self._started_s)
        return sum(frames for _, frames in self._recent) / span_s if span_s > 0 else 0.0
