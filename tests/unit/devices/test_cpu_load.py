"""The CPU's load: measured from psutil's time counters between readings, the first
one included, whichever thread asks."""

from __future__ import annotations

import json
import threading
from collections import namedtuple

import pytest
from typer.testing import CliRunner

from vidshard.cli.app import app
from vidshard.devices.platform import CPU_SAMPLE_S, CpuLoad, busy_pct

# The fields psutil.cpu_times() has on Linux (seconds since boot, all cores summed).
Times = namedtuple("Times", "user nice system idle iowait irq softirq steal guest guest_nice")


def times(user=0.0, system=0.0, idle=0.0, iowait=0.0, guest=0.0) -> Times:
    return Times(user, 0.0, system, idle, iowait, 0.0, 0.0, 0.0, guest, 0.0)


@pytest.mark.parametrize(
    ("before", "after", "expected"),
    [
        # a quarter busy
        (times(user=10, idle=30), times(user=11, idle=33), 25.0),
        # user and system both count as busy
        (times(), times(user=1, system=1, idle=2), 50.0),
        # iowait is idle time
        (times(), times(user=1, idle=2, iowait=1), 25.0),
        # guest time is already inside user: not counted twice
        (times(), times(user=2, guest=2, idle=2), 50.0),
        # no time passed: 0, as psutil says
        (times(user=5, idle=5), times(user=5, idle=5), 0.0),
        # a counter that went back (a wrapped or reset counter) counts as no time
        (times(user=9, idle=0), times(user=1, idle=4), 0.0),
    ],
)
def test_busy_pct(before: Times, after: Times, expected: float) -> None:
    assert busy_pct(before, after) == expected


class Scripted:
    """A clock, a sleep that moves it, and cpu_times readings handed out in order."""

    def __init__(self, *readings: Times) -> None:
        self.now_s = 0.0
        self.readings = list(readings)
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now_s

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now_s += seconds

    def cpu_times(self) -> Times:
        return self.readings.pop(0)


def load(script: Scripted) -> CpuLoad:
    return CpuLoad(cpu_times=script.cpu_times, clock=script.clock, sleep=script.sleep, sample_s=0.1)


def test_the_first_reading_waits_for_a_sample_and_is_measured() -> None:
    script = Scripted(times(idle=0), times(user=3, idle=1))
    cpu = load(script)
    assert cpu.read_pct() == 75.0  # not None, not psutil's meaningless first 0.0
    assert script.slept == [pytest.approx(0.1)]


def test_later_readings_measure_since_the_previous_one() -> None:
    script = Scripted(times(), times(user=1, idle=1), times(user=1, idle=5))
    cpu = load(script)
    assert cpu.read_pct() == 50.0
    script.now_s += 0.05  # asked again too soon: the last figure, no wait
    assert cpu.read_pct() == 50.0 and len(script.slept) == 1
    script.now_s += 1.0
    assert cpu.read_pct() == 0.0  # the last interval only: all idle


def test_any_thread_gets_a_measured_reading() -> None:
    cpu = CpuLoad(sample_s=0.01)
    got: list[float] = []
    threads = [threading.Thread(target=lambda: got.append(cpu.read_pct())) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert len(got) == 3 and all(0.0 <= pct <= 100.0 for pct in got)


def test_vidshard_devices_shows_the_cpu_load() -> None:
    assert CPU_SAMPLE_S <= 0.5  # a one-shot command waits at most this long
    result = CliRunner().invoke(app, ["devices", "--json"])
    assert result.exit_code == 0, result.output
    (cpu,) = [d for d in json.loads(result.stdout)["devices"] if d["kind"] == "cpu"]
    assert isinstance(cpu["utilization_pct"], float) and 0 <= cpu["utilization_pct"] <= 100
    table = CliRunner().invoke(app, ["devices"])
    row = next(line for line in table.stdout.splitlines() if "│ cpu" in line)
    cells = [cell.strip() for cell in row.split("│")]
    assert cells[4].endswith("%")  # the util column: a figure, not "-"
