"""The CLI's rich progress display: per-slot summary text and the bar's life cycle."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from vidshard.cli.display import (
    BarState,
    JobDisplay,
    LiveLine,
    ProgressLine,
    clock_text,
    slot_summary,
)
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


# -- the line at a terminal's width ------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now_s = 50.0

    def __call__(self) -> float:
        return self.now_s


def render(state: BarState, width: int, elapsed_s: float = 12.0) -> list[str]:
    """The line as a terminal of ``width`` columns shows it, ``elapsed_s`` after it started."""
    clock = FakeClock()
    line = ProgressLine("starting", clock=clock)
    line.update(state)
    clock.now_s += elapsed_s
    console = Console(width=width, record=True, file=io.StringIO(), color_system=None)
    console.print(line)
    return console.export_text().splitlines()


UPSCALE = BarState(
    "upscaling x2 in 12 segment(s)",
    done=1234,
    total=11310,
    fps=102.8,
    eta_s=98.0,
    detail="cpu#0 51 fps · cpu#1 52 fps",
)
DETECT = BarState("3/12 videos", done=480, total=2400, fps=40.0, eta_s=48.0)


@pytest.mark.parametrize("width", [60, 80, 120])
@pytest.mark.parametrize("state", [UPSCALE, DETECT], ids=["upscale", "detect"])
def test_counts_and_eta_fit_every_width(state: BarState, width: int) -> None:
    first, *rest = render(state, width)
    assert len(first) <= width and all(len(line) <= width for line in rest)
    assert f"{state.done}/{state.total} frames" in first  # the count, whole
    assert f"eta {clock_text(state.eta_s)}" in first  # the ETA, labelled
    if state is DETECT:
        assert first.startswith("3/12 videos")  # N/M videos: the phase, whole


@pytest.mark.parametrize(
    ("width", "state", "shown", "left_out"),
    [
        # 120 columns: everything, the phase whole, elapsed labelled
        (120, UPSCALE, ["upscaling x2 in 12 segment(s)", "102.8 fps", "elapsed 0:12", "━"], []),
        # 80 columns, a short phase: still everything
        (80, DETECT, ["3/12 videos", "40.0 fps", "elapsed 0:12", "━"], []),
        # 80 columns, a long phase: elapsed goes first, the rate and a bar stay
        (80, UPSCALE, ["upscaling x2 in", "102.8 fps", "━"], ["elapsed"]),
        # 60 columns: the rate goes too, and the phase is cut (to no less than 16 cells)
        (60, UPSCALE, ["upscaling x2 in 1…", "━"], ["elapsed", "fps"]),
        # 40 columns: no room for a bar; counts and ETA still whole
        (40, UPSCALE, ["1234/11310 frames", "eta 1:38"], ["elapsed", "fps", "━"]),
    ],
)
def test_what_goes_first_when_narrow(
    width: int, state: BarState, shown: list[str], left_out: list[str]
) -> None:
    first = render(state, width)[0]
    for text in shown:
        assert text in first
    for text in left_out:
        assert text not in first


def test_slot_rates_on_a_second_line_cut_to_the_width() -> None:
    detail = " · ".join(f"cuda:{i}#0 {100 + i} fps" for i in range(8))
    lines = render(BarState("upscaling", 10, 100, 5.0, 18.0, detail=detail), 80)
    assert len(lines) == 2 and lines[1].startswith("  cuda:0#0 100 fps")
    assert len(lines[1]) == 80 and lines[1].endswith("…")


@pytest.mark.parametrize(
    ("state", "count", "eta"),
    [
        # nothing known yet: no total, no speed
        (BarState("starting"), "0/? frames", "eta --:--"),
        # finished: the ETA is zero whatever the last estimate was
        (BarState("done", 50, 50, 9.0, 3.0), "50/50 frames", "eta 0:00"),
        # over an hour left: hours shown
        (BarState("upscaling", 1, 100_000, 20.0, 4999.0), "1/100000 frames", "eta 1:23:19"),
    ],
)
def test_unknown_finished_and_long(state: BarState, count: str, eta: str) -> None:
    flat = " ".join(render(state, 120)[0].split())  # the count is padded to its total's width
    assert count in flat and eta in flat


def test_the_line_never_shows_fewer_frames_than_it_did() -> None:
    line = ProgressLine("upscaling")
    line.update(BarState("upscaling", done=70, total=100))
    line.update(BarState("upscaling", done=40, total=100))  # a late, stale reading
    assert line.state.done == 70


@pytest.mark.parametrize("width", [60, 80, 120])
def test_job_display_keeps_counts_and_eta(width: int) -> None:
    out = io.StringIO()
    console = Console(file=out, width=width, color_system=None)
    slots = (SlotStats("cpu#0", 600, 1, 6.0), SlotStats("cpu#1", 634, 1, 6.0))
    with JobDisplay(console, "starting") as display:
        display.phase("upscaling x2 in 12 segment(s)")
        display.update(ProgressSnapshot(1234, 11310, 12.0, 102.8, 98.0, slots))
    first, *_ = out.getvalue().splitlines()
    assert "1234/11310 frames" in first and "eta 1:38" in first and len(first) <= width


def test_log_lines_go_above_the_live_line() -> None:
    import logging
    import sys

    out = io.StringIO()
    console = Console(file=out, width=80, force_terminal=True, color_system=None)
    handler = logging.StreamHandler(sys.stderr)  # as logging.basicConfig makes it
    original = handler.stream
    logging.getLogger().addHandler(handler)
    try:
        with LiveLine(console, "detecting"):
            logging.getLogger("vidshard.test").warning("a worker said something")
        assert handler.stream is original  # given back
    finally:
        logging.getLogger().removeHandler(handler)
    assert "a worker said something" in out.getvalue()  # printed by the live console
