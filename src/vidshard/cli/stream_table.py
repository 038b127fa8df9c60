"""The live table of ``vidshard streams run``: one row per stream, kept readable at any width.

A row reads ``stream  state  slot  fps  processed  dropped  p50 ms  p95 ms  reconn
failover  reason``. The reason takes what is left of the line, cut with an ellipsis; with
less than :data:`MIN_REASON` cells left it goes on a line of its own under its row. In a
narrower terminal the gaps shrink to one space, then columns go, in this order: p50,
failover, reconn, dropped, slot, p95; stream, state, fps and processed always stay (and
a line is cut, never wrapped, below that). Like the progress bar (:mod:`.display`), the
table is drawn from plain data (:class:`StreamRow`), so any source can feed it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from rich.console import Console, ConsoleOptions
from rich.text import Text

from vidshard.streams.types import StreamState

if TYPE_CHECKING:
    from vidshard.streams.manager import StreamView

MIN_REASON = 20  # fewer cells left than this: the reason goes under its row
MAX_STREAM = 20  # a longer stream id is cut
MAX_SLOT = 12
REASON_INDENT = 2
DROP_ORDER = ("p50", "failover", "reconn", "dropped", "slot", "p95")
FINAL_STATES = frozenset(state.value for state in StreamState if state.is_final)
STATE_STYLES = {
    StreamState.CONNECTING.value: "cyan",
    StreamState.LIVE.value: "green",
    StreamState.RECONNECTING.value: "yellow",
    StreamState.FAILED.value: "bold red",
    StreamState.STOPPED.value: "dim",
}


@dataclass(frozen=True)
class StreamRow:
    """What the table shows of one stream."""

    stream_id: str
    state: str  # a StreamState value
    slot: str | None = None
    fps: float = 0.0
    frames_processed: int = 0
    frames_dropped: int = 0
    latency_p50_ms: float | None = None
    latency_p95_ms: float | None = None
    reconnects: int = 0
    failovers: int = 0
    reason: str = ""

    @classmethod
    def of(cls, view: StreamView) -> StreamRow:
        status = view.status
        return cls(
            stream_id=view.stream_id,
            state=status.state.value,
            slot=view.slot,
            fps=status.fps,
            frames_processed=status.frames_processed,
            frames_dropped=status.frames_dropped,
            latency_p50_ms=status.latency_p50_ms,
            latency_p95_ms=status.latency_p95_ms,
            reconnects=status.reconnects,
            failovers=view.failovers,
            reason=" ".join(status.reason.split()),
        )


def count_text(count: int, width: int) -> str:
    """``1234``; past ``width`` digits ``12.3M``, ``4.6G``."""
    text = str(count)
    for scale, suffix in ((1e3, "k"), (1e6, "M"), (1e9, "G"), (1e12, "T")):
        if len(text) <= width or count < scale:
            break
        text = f"{count / scale:.1f}{suffix}"
        if len(text) > width:
            text = f"{count / scale:.0f}{suffix}"
    return text


def ms_text(value_ms: float | None) -> str:
    """``8.5``, ``41``, ``1234``; ``12k`` past five digits; ``-`` when not measured yet."""
    if value_ms is None:
        return "-"
    if value_ms < 10:
        return f"{value_ms:.1f}"
    if value_ms < 100_000:
        return f"{value_ms:.0f}"
    return f"{value_ms / 1000:.0f}k"


def fps_text(fps: float) -> str:
    return f"{fps:.1f}" if fps < 1000 else f"{fps:.0f}"


@dataclass(frozen=True)
class Column:
    key: str
    header: str
    width: int  # the widest a value may be (a header may be wider: the column takes that)
    right: bool = True  # numbers are right-aligned

    @property
    def cells(self) -> int:
        return max(self.width, len(self.header))


def _cells(row: StreamRow) -> dict[str, str]:
    return {
        "stream": row.stream_id,
        "state": row.state,
        "slot": row.slot or "-",
        "fps": "-" if row.state in FINAL_STATES else fps_text(row.fps),
        "processed": count_text(row.frames_processed, 9),
        "dropped": count_text(row.frames_dropped, 7),
        "p50": ms_text(row.latency_p50_ms),
        "p95": ms_text(row.latency_p95_ms),
        "reconn": count_text(row.reconnects, 6),
        "failover": count_text(row.failovers, 8),
    }


def columns_for(rows: Sequence[StreamRow]) -> list[Column]:
    """Every column but the reason, sized for ``rows``."""
    stream_w = min(MAX_STREAM, max((len(r.stream_id) for r in rows), default=0))
    slot_w = min(MAX_SLOT, max((len(r.slot or "-") for r in rows), default=0))
    return [
        Column("stream", "stream", stream_w, right=False),
        Column("state", "state", len(StreamState.RECONNECTING.value), right=False),
        Column("slot", "slot", slot_w, right=False),
        Column("fps", "fps", 5),
        Column("processed", "processed", 9),
        Column("dropped", "dropped", 7),
        Column("p50", "p50 ms", 6),
        Column("p95", "p95 ms", 6),
        Column("reconn", "reconn", 6),
        Column("failover", "failover", 8),
    ]


@dataclass(frozen=True)
class Layout:
    columns: tuple[Column, ...]
    gap: int
    reason_width: int  # 0: the reason goes on a line of its own


def table_layout(rows: Sequence[StreamRow], width: int) -> Layout:
    """The columns, the gap and the room for the reason in a line of ``width`` cells.

    Tried in order: everything with two-space gaps, then with one; then the reason under
    its row (two-space gaps, then one); then columns left out one by one
    (:data:`DROP_ORDER`), the reason under its row."""
    every = columns_for(rows)
    for dropped in range(len(DROP_ORDER) + 1):
        gone = DROP_ORDER[:dropped]
        kept = tuple(c for c in every if c.key not in gone)
        for gap in (2, 1):
            used = sum(c.cells for c in kept) + gap * (len(kept) - 1)
            room = width - used - gap
            if not gone and room >= MIN_REASON:
                return Layout(kept, gap, room)
        for gap in (2, 1):
            used = sum(c.cells for c in kept) + gap * (len(kept) - 1)
            if used <= width:
                return Layout(kept, gap, 0)
    return Layout(kept, 1, 0)  # too narrow even so: each line is cut


def _cell(text: str, column: Column, style: str = "") -> Text:
    cell = Text()
    cell.append(text, style)  # a span: the padding stays unstyled
    if column.right:
        cell.truncate(column.cells, overflow="ellipsis")
        cell.pad_left(column.cells - cell.cell_len)
    else:
        cell.truncate(column.cells, overflow="ellipsis", pad=True)
    return cell


def render_lines(rows: Sequence[StreamRow], width: int, footer: str = "") -> list[Text]:
    """The table as lines of at most ``width`` cells: a header, then each row (and its
    reason's own line where it goes under), then ``footer``."""
    layout = table_layout(rows, width)
    gap = Text(" " * layout.gap)
    headers = [_cell(c.header, c) for c in layout.columns]
    if layout.reason_width:
        headers.append(Text("reason"))
    lines = [gap.join(headers)]
    lines[0].stylize("bold")
    for row in rows:
        values = _cells(row)
        cells = [
            _cell(values[c.key], c, STATE_STYLES.get(row.state, "") if c.key == "state" else "")
            for c in layout.columns
        ]
        if layout.reason_width:
            reason = Text(row.reason, style="dim")
            reason.truncate(layout.reason_width, overflow="ellipsis")
            cells.append(reason)
        lines.append(gap.join(cells))
        if not layout.reason_width and row.reason:
            lines.append(Text(" " * REASON_INDENT + row.reason, style="dim"))
    if footer:
        lines.append(Text(footer, style="dim"))
    for line in lines:
        line.rstrip()
        line.truncate(width, overflow="ellipsis")
    return lines


def summary_text(rows: Sequence[StreamRow]) -> str:
    """``3 streams: 2 live, 1 reconnecting · 49.8 fps``."""
    counts: dict[str, int] = {}
    for row in rows:
        counts[row.state] = counts.get(row.state, 0) + 1
    states = ", ".join(f"{n} {state}" for state, n in counts.items())
    noun = "stream" if len(rows) == 1 else "streams"
    total_fps = sum(r.fps for r in rows)
    return f"{len(rows)} {noun}: {states or 'none'} · {fps_text(total_fps)} fps"


class StreamTable:
    """A rich renderable of the board's rows, laid out for the console's width."""

    def __init__(self, rows: Callable[[], list[StreamRow]]) -> None:
        self._rows = rows

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> Iterator[Text]:
        rows = self._rows()
        yield from render_lines(rows, options.max_width, summary_text(rows))


class StreamBoard:
    """The latest view of every stream (in the order added), and the status changes not
    shown yet; fed from the manager's threads, read by the command's (thread-safe).

    A status change is a new state, reason, slot or failover count (the counters change
    all the time and are not one). Once a stream is final (failed, or stopped) its first
    final view stays: the manager's closing ("stopped") does not hide why it failed."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._views: dict[str, StreamView] = {}
        self._rows: dict[str, StreamRow] = {}
        self._shown: dict[str, tuple[object, ...]] = {}
        self._changes: list[tuple[float, StreamView]] = []

    def waiting(self, stream_ids: Sequence[str], reason: str) -> None:
        """Rows for streams not added yet (their pool is starting)."""
        with self._lock:
            for stream_id in stream_ids:
                self._rows.setdefault(
                    stream_id, StreamRow(stream_id, StreamState.CONNECTING.value, reason=reason)
                )

    def update(self, view: StreamView) -> None:
        with self._lock:
            stream_id = view.stream_id
            before = self._views.get(stream_id)
            if before is not None and before.state.is_final:
                return
            self._views[stream_id] = view
            self._rows[stream_id] = StreamRow.of(view)
            key = (view.state, view.status.reason, view.slot, view.failovers)
            if self._shown.get(stream_id) != key:
                self._shown[stream_id] = key
                self._changes.append((self._clock(), view))

    def rows(self) -> list[StreamRow]:
        with self._lock:
            return list(self._rows.values())

    def views(self) -> list[StreamView]:
        with self._lock:
            return list(self._views.values())

    def take_changes(self) -> list[tuple[float, StreamView]]:
        """The status changes since the last call: (epoch seconds, view), in order."""
        with self._lock:
            changes, self._changes = self._changes, []
            return changes

    def all_final(self) -> bool:
        with self._lock:
            return bool(self._views) and all(v.state.is_final for v in self._views.values())
