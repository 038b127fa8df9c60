"""The live table of ``vidshard streams run``: its columns at any width, its numbers, and
the board that feeds it (which changes are shown, a failure that stays)."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from vidshard.cli.stream_table import (
    DROP_ORDER,
    MIN_REASON,
    StreamBoard,
    StreamRow,
    StreamTable,
    count_text,
    ms_text,
    render_lines,
    table_layout,
)
from vidshard.streams.manager import StreamView
from vidshard.streams.options import StreamOptions
from vidshard.streams.types import StreamState, StreamStatus

HEADERS = (
    "stream",
    "state",
    "slot",
    "fps",
    "processed",
    "dropped",
    "p50 ms",
    "p95 ms",
    "reconn",
    "failover",
)
LONG_REASON = "cannot open: Connection refused by 10.0.0.17 after the third try " * 3

ROWS = [
    StreamRow("s1", "live", "cpu#0", 24.96, 12345, 17, 41.2, 80.7, 0, 0),
    StreamRow("lobby", "reconnecting", "cuda#1", 0.0, 99, 3, None, None, 4, 1, LONG_REASON),
    StreamRow("s3", "failed", "cpu#1", 0.0, 0, 0, None, None, 10, 0, "no such file: x.mp4"),
]


def rendered(rows: list[StreamRow], width: int) -> list[str]:
    """The table as a console of ``width`` columns prints it (record=True)."""
    console = Console(width=width, record=True, file=io.StringIO(), color_system=None)
    console.print(StreamTable(lambda: rows))
    return console.export_text().splitlines()


@pytest.mark.parametrize("width", [120, 80])
def test_every_column_at_80_and_120(width: int) -> None:
    lines = rendered(ROWS, width)
    assert all(len(line) <= width for line in lines), lines
    header = lines[0].split()
    for name in HEADERS:  # every column is there, in order
        assert name.split()[0] in header
    positions = [lines[0].index(name) for name in HEADERS]
    assert positions == sorted(positions)
    row = next(line for line in lines if line.startswith("s1 "))
    for value in ("live", "cpu#0", "25.0", "12345", "17", "41", "81"):
        assert value in row.split()
    assert lines[-1] == "3 streams: 1 live, 1 reconnecting, 1 failed · 25.0 fps"


def test_reason_inline_when_wide_and_cut_with_an_ellipsis() -> None:
    lines = rendered(ROWS, 120)
    assert lines[0].rstrip().endswith("reason")
    lobby = next(line for line in lines if line.startswith("lobby"))
    assert "cannot open: Connection" in lobby
    assert lobby.endswith("…")  # cut to the line, never wrapped
    assert len(lines) == 1 + len(ROWS) + 1  # header, one line a row, the summary
    failed = next(line for line in lines if line.startswith("s3"))
    assert failed.endswith("no such file: x.mp4")
    assert failed.split()[3] == "-"  # a final stream has no rate


def test_reason_under_its_row_when_narrow() -> None:
    lines = rendered(ROWS, 80)
    assert "reason" not in lines[0]
    index = next(i for i, line in enumerate(lines) if line.startswith("lobby"))
    assert lines[index + 1].startswith("  cannot open: Connection refused")
    assert lines[index + 1].endswith("…")
    s1 = next(i for i, line in enumerate(lines) if line.startswith("s1 "))
    assert lines[s1 + 1].startswith("lobby")  # no reason: no line of its own


@pytest.mark.parametrize("width", [200, 120, 100, 90, 80, 70, 60, 50, 40, 30, 20, 8])
def test_no_line_is_wider_than_the_console(width: int) -> None:
    lines = rendered(ROWS, width)
    assert lines and all(len(line) <= width for line in lines), lines
    if width >= 40:  # the four columns that always stay
        for name in ("stream", "state", "fps", "processed"):
            assert name in lines[0]


def test_columns_go_in_order_as_the_line_narrows() -> None:
    # each narrower width keeps a subset of the wider one's columns, dropped in DROP_ORDER
    gone_before: list[str] = []
    for width in range(130, 30, -1):
        layout = table_layout(ROWS, width)
        kept = {c.key for c in layout.columns}
        gone = [key for key in DROP_ORDER if key not in kept]
        assert gone == list(DROP_ORDER[: len(gone)]), (width, gone)
        assert len(gone) >= len(gone_before)
        gone_before = gone
        assert layout.reason_width == 0 or layout.reason_width >= MIN_REASON
    assert gone_before  # 30 columns is too narrow for them all


def test_a_long_stream_name_is_cut() -> None:
    rows = [StreamRow("a-very-long-camera-name-at-the-gate", "live", "cpu#0", 5.0, 1)]
    lines = rendered(rows, 120)
    assert lines[1].startswith("a-very-long-camera-…")


@pytest.mark.parametrize(
    ("count", "width", "expected"),
    [
        (0, 7, "0"),  # zero
        (1234567, 7, "1234567"),  # fits exactly
        (12345678, 7, "12346k"),  # one digit too many: thousands, no decimals
        (123456789, 7, "123457k"),
        (1234567890, 7, "1234.6M"),
        (12, 1, "12"),  # too small to scale: as it is (the cell cuts it)
        (10**15, 7, "1000.0T"),  # past the last scale: in its largest unit
    ],
)
def test_count_text(count: int, width: int, expected: str) -> None:
    assert count_text(count, width) == expected


@pytest.mark.parametrize(
    ("value_ms", "expected"),
    [
        (None, "-"),  # not measured yet
        (0.54, "0.5"),  # under 10 ms: one decimal
        (41.6, "42"),  # whole milliseconds
        (99999.0, "99999"),
        (1_250_000.0, "1250k"),  # past five digits: thousands
    ],
)
def test_ms_text(value_ms: float | None, expected: str) -> None:
    assert ms_text(value_ms) == expected


def view(
    state: StreamState,
    reason: str = "",
    *,
    slot: str | None = "cpu#0",
    processed: int = 0,
    failovers: int = 0,
    stream_id: str = "s1",
) -> StreamView:
    status = StreamStatus(stream_id, state, reason, frames_processed=processed, slot=slot)
    return StreamView(
        status=status,
        url="rtsp://127.0.0.1/cam",
        options=StreamOptions(model="unused.py:Unused"),  # type: ignore[call-arg]
        created_at=0.0,
        slot=slot,
        failovers=failovers,
        placed_at=None,
    )


def test_board_shows_changes_not_counters() -> None:
    board = StreamBoard(clock=lambda: 5.0)
    board.update(view(StreamState.CONNECTING, "placed on cpu#0"))
    board.update(view(StreamState.LIVE))
    board.update(view(StreamState.LIVE, processed=10))  # counters alone: no change
    board.update(view(StreamState.LIVE, processed=20, slot="cpu#1", failovers=1))  # moved
    board.update(view(StreamState.RECONNECTING, "the source ended"))
    changes = board.take_changes()
    assert [(v.state, v.slot, v.failovers) for _, v in changes] == [
        (StreamState.CONNECTING, "cpu#0", 0),
        (StreamState.LIVE, "cpu#0", 0),
        (StreamState.LIVE, "cpu#1", 1),
        (StreamState.RECONNECTING, "cpu#0", 0),
    ]
    assert all(at == 5.0 for at, _ in changes)
    assert board.take_changes() == []  # taken once
    board.update(view(StreamState.RECONNECTING, "the source ended", processed=30))
    assert board.take_changes() == []
    assert board.rows()[0].frames_processed == 30  # the row has the latest counters


def test_board_keeps_a_failure_through_the_managers_close() -> None:
    board = StreamBoard()
    board.update(view(StreamState.FAILED, "no such file: x.mp4"))
    board.update(view(StreamState.STOPPED, "the stream manager closed"))
    assert board.rows()[0].state == "failed"
    assert board.rows()[0].reason == "no such file: x.mp4"
    assert [v.state for _, v in board.take_changes()] == [StreamState.FAILED]


def test_board_all_final() -> None:
    board = StreamBoard()
    assert not board.all_final()  # nothing added yet
    board.waiting(["s1", "s2"], "starting 2 worker(s)")
    assert [r.reason for r in board.rows()] == ["starting 2 worker(s)"] * 2
    assert not board.all_final()
    board.update(view(StreamState.FAILED, "bad", stream_id="s1"))
    board.update(view(StreamState.LIVE, stream_id="s2"))
    assert not board.all_final()
    board.update(view(StreamState.STOPPED, "the file ended", stream_id="s2"))
    assert board.all_final()
    assert [r.stream_id for r in board.rows()] == ["s1", "s2"]  # in the order given


def test_render_lines_without_rows() -> None:
    lines = render_lines([], 80, "0 streams: none")
    assert [line.plain.split()[0] for line in lines] == ["stream", "0"]
