"""The CLI's rich progress display: per-slot summary text and the bar's life cycle."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from vidshard.cli.display import JobDisplay, slot_summary
from vidshard.engine.progress import ProgressSnapshot, SlotStats


def snapshot(*slots: SlotStats, done: int = 30, total: int = 120) -> ProgressSnapshot:
    return ProgressSnapshot(
        frames_done=done, frames_total=total, elapsed_s=2.4, fps=12.5, eta_s=7.2, slots=slots
    )


@pytest.mark.parametrize(
    ("slots", "expected"),
    [
        # no slot has reported yet
        ((), ""),
        # one busy slot: its rate, rounded to whole frames per second
        ((SlotStats("cpu#0", frames=410, busy_seconds=10.0),), "cpu#0 41 fps"),
        # two slots, in the snapshot's order, joined by a middle dot
        (
            (
                SlotStats("cpu#0", frames=410, busy_seconds=10.0),
                SlotStats("cpu#1", frames=390, busy_seconds=10.0),
            ),
            "cpu#0 41 fps · cpu#1 39 fps",
        ),
        # an idle live slot (no frames yet) is left out
        (
            (SlotStats("cuda:0#0", frames=250, busy_seconds=10.0), SlotStats("cuda:1#1")),
            "cuda:0#0 25 fps",
        ),
        # a dead slot is always shown, marked down, with or without frames done
        (
            (
                SlotStats("npu:0#0", frames=100, busy_seconds=4.0, alive=False),
                SlotStats("npu:1#1", alive=False),
            ),
            "npu:0#0 25 fps (down) · npu:1#1 0 fps (down)",
        ),
    ],
)
def test_slot_summary(slots: tuple[SlotStats, ...], expected: str) -> None:
    assert slot_summary(snapshot(*slots)) == expected


def drive(display: JobDisplay) -> None:
    """What the CLI does: enter, name phases, feed snapshots, exit."""
    display.update(snapshot())  # before entering: ignored, no error
    with display:
        display.phase("upscaling x2 in 4 segment(s)")
        display.update(snapshot(SlotStats("cpu#0", frames=410, busy_seconds=10.0)))


def make_console() -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(file=out, width=160, force_terminal=False, color_system=None), out


def test_disabled_display_prints_nothing() -> None:
    console, out = make_console()
    drive(JobDisplay(console, "starting", enabled=False))
    assert out.getvalue() == ""


def test_enabled_display_shows_phase_counts_rate_and_slots() -> None:
    console, out = make_console()
    drive(JobDisplay(console, "starting"))
    text = out.getvalue()
    assert "upscaling x2 in 4 segment(s)" in text  # the latest phase, not the first label
    assert "30/120 frames" in text
    assert "12.5 fps" in text
    assert "cpu#0 41 fps" in text
