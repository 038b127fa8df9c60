"""Device snapshots and per-slot frame rates."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from vidshard.devices.monitor import DeviceMonitor, SlotRate, status_to_dict
from vidshard.devices.platform import CpuPlatform, FakePlatform
from vidshard.devices.types import Device, DeviceStatus

GIB = 1 << 30


class FakeClock:
    def __init__(self) -> None:
        self.now_s = 100.0

    def __call__(self) -> float:
        return self.now_s


def test_snapshot_reads_each_time() -> None:
    npus = FakePlatform.of("npu", 2, memory_total_bytes=64 * GIB)
    monitor = DeviceMonitor([npus, CpuPlatform()])
    first = monitor.snapshot()
    assert [s.device.label for s in first] == ["npu:0", "npu:1", "cpu"]
    npus.devices = [DeviceStatus(Device("npu", 0), memory_used_bytes=GIB)]
    assert [s.device.label for s in monitor.snapshot()] == ["npu:0", "cpu"]
    # the CPU platform is kept, so its load reading is there from the second snapshot
    assert monitor.snapshot()[-1].utilization_pct is not None


def test_snapshot_skips_a_failing_platform() -> None:
    monitor = DeviceMonitor([FakePlatform("cuda", error=OSError("driver gone"))])
    assert [s.device.label for s in monitor.snapshot()] == ["cpu"]


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        # every reading known
        (
            DeviceStatus(
                Device("cuda", 1, name="NVIDIA H100", memory_total_bytes=80 * GIB),
                memory_total_bytes=80 * GIB,
                memory_used_bytes=20 * GIB,
                utilization_pct=97.0,
                temperature_c=61.0,
            ),
            {
                "device": "cuda:1",
                "kind": "cuda",
                "index": 1,
                "name": "NVIDIA H100",
                "memory_total_bytes": 80 * GIB,
                "memory_used_bytes": 20 * GIB,
                "memory_free_bytes": 60 * GIB,
                "utilization_pct": 97.0,
                "temperature_c": 61.0,
                "cpu_cores": None,
            },
        ),
        # nothing known but the device (torch_npu's count only)
        (
            DeviceStatus(Device("npu", 4, name="Ascend NPU")),
            {
                "device": "npu:4",
                "kind": "npu",
                "index": 4,
                "name": "Ascend NPU",
                "memory_total_bytes": None,
                "memory_used_bytes": None,
                "memory_free_bytes": None,
                "utilization_pct": None,
                "temperature_c": None,
                "cpu_cores": None,
            },
        ),
    ],
)
def test_status_to_dict(status: DeviceStatus, expected: dict[str, object]) -> None:
    record = status_to_dict(status)
    assert record == expected
    assert json.loads(json.dumps(record)) == expected  # JSON-ready as it is


@pytest.mark.parametrize(
    ("steps", "frames", "fps", "recent_fps"),
    [
        # nothing yet, no time passed
        ([], 0, 0.0, 0.0),
        # 30 frames per second for 4 s: both rates agree
        ([(1.0, 30), (1.0, 30), (1.0, 30), (1.0, 30)], 120, 30.0, 30.0),
        # fast for 10 s then stalled for 10 s: the window shows the stall, the mean halves
        ([(1.0, 50)] * 10 + [(10.0, 0)], 500, 25.0, 0.0),
        # 20 s at 10 fps then 5 s at 40 fps: the window (10 s) mixes both
        ([(1.0, 10)] * 20 + [(1.0, 40)] * 5, 400, 16.0, 25.0),
    ],
)
def test_slot_rate(
    steps: list[tuple[float, int]], frames: int, fps: float, recent_fps: float
) -> None:
    clock = FakeClock()
    rate = SlotRate(window_s=10.0, clock=clock)
    for advance_s, done in steps:
        clock.now_s += advance_s
        rate.add(done)
    assert rate.frames == frames
    assert rate.elapsed_s == pytest.approx(sum(s for s, _ in steps))
    assert rate.fps == pytest.approx(fps)
    assert rate.recent_fps == pytest.approx(recent_fps)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        # a window of no length
        (lambda: SlotRate(window_s=0), "window_s must be positive"),
        # negative frames
        (lambda: SlotRate().add(-1), "frames must be >= 0"),
    ],
)
def test_slot_rate_rejects(make: Callable[[], object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make()
