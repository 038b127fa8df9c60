"""What the stream manager keeps per stream and per host, and the slot loads placement
reads from it. Plain objects, guarded by the manager's lock."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from vidshard.detection.pipeline import DetectRecipe
from vidshard.devices.types import DeviceStatus
from vidshard.executors.base import Executor, PinnedRun

from .options import StreamOptions
from .placement import SlotLoad
from .types import StreamSpec, StreamState, StreamStatus

RATE_SPAN_S = 1.0  # a stream's demand is measured over at least this much time
UP_STATES = ("idle", "busy", "loading")  # a slot in these has a worker that is up

_HOST_NUMBERS = itertools.count(1)


@dataclass(frozen=True)
class StreamView:
    """A stream as its host last reported it, and what the coordinator knows of it."""

    status: StreamStatus
    url: str
    options: StreamOptions
    created_at: float  # epoch seconds
    slot: str | None  # None: waiting for a slot
    failovers: int  # times it was moved off a slot that died
    placed_at: float | None  # epoch seconds it was last placed

    @property
    def stream_id(self) -> str:
        return self.status.stream_id

    @property
    def state(self) -> StreamState:
        return self.status.state


def host_key(recipe: DetectRecipe) -> tuple[object, ...]:
    """What streams must share to share a host: its detector (the host builds each
    stream's tracker apart, so streams with and without tracking batch together)."""
    return (recipe.detector, recipe.weights, recipe.options)


class Host:
    """One stream host: a long-lived unit pinned to a slot, and the streams it holds."""

    def __init__(self, slot: str, key: tuple[object, ...]) -> None:
        self.slot = slot
        self.key = key  # host_key of its streams' recipes
        self.number = next(_HOST_NUMBERS)
        self.streams: set[str] = set()
        self.closing = False  # its last stream was removed: it ends, nothing more goes to it
        self.reported = False  # it runs: a stream removed from it gets a final report
        self.run = PinnedRun(slot)  # replaced by the executor's once submitted


@dataclass(frozen=True)
class Counters:
    """What a stream counted on one host; a stream's view adds up its hosts'."""

    received: int = 0
    processed: int = 0
    dropped: int = 0
    reconnects: int = 0

    @staticmethod
    def of(status: StreamStatus | None) -> Counters:
        if status is None:
            return Counters()
        return Counters(
            status.frames_received,
            status.frames_processed,
            status.frames_dropped,
            status.reconnects,
        )

    def __add__(self, other: Counters) -> Counters:
        return Counters(
            self.received + other.received,
            self.processed + other.processed,
            self.dropped + other.dropped,
            self.reconnects + other.reconnects,
        )


class Stream:
    """One stream as the coordinator knows it."""

    def __init__(self, spec: StreamSpec, created_at: float, status: StreamStatus) -> None:
        self.spec = spec
        self.created_at = created_at
        self.status = status  # as shown: counters of every host it was on, added up
        self.raw: StreamStatus | None = None  # the current host's last report
        self.host: Host | None = None
        self.slot: str | None = None  # where it is (or was, once final)
        self.failovers = 0
        self.placed_at: float | None = None
        self.waiting = False
        self.removing = False
        self.final = False
        self.move_reason = ""  # shown until its new host has it live
        self.retired: set[int] = set()  # numbers of the hosts it left
        self.carried: dict[int, Counters] = {}  # what it counted on each of them
        self.final_report = threading.Event()  # the host it left sent its last counters
        self.demand_fps: float | None = None
        self._rate_sample: tuple[float, int] | None = None  # (monotonic s, frames received)

    def view(self) -> StreamView:
        return StreamView(
            status=self.status,
            url=self.spec.url,
            options=self.spec.options,
            created_at=self.created_at,
            slot=self.slot,
            failovers=self.failovers,
            placed_at=self.placed_at,
        )

    def _show(self, state: StreamState, reason: str, now: float, **fields: Any) -> None:
        since = self.status.state_since if state == self.status.state else now
        total = sum(self.carried.values(), Counters()) + Counters.of(self.raw)
        self.status = replace(
            self.status,
            **fields,
            state=state,
            reason=reason,
            state_since=since,
            frames_received=total.received,
            frames_processed=total.processed,
            frames_dropped=total.dropped,
            reconnects=total.reconnects,
            slot=self.slot,
        )

    def placed(self, host: Host, now: float) -> None:
        self.host, self.slot, self.placed_at, self.waiting = host, host.slot, now, False
        reason = self.move_reason or f"placed on {host.slot}"
        self._show(StreamState.CONNECTING, reason, now, fps=0.0)

    def wait(self, reason: str, now: float) -> None:
        self.host, self.slot, self.waiting = None, None, True
        self._show(StreamState.CONNECTING, reason, now, fps=0.0)

    def leave(self, host: Host) -> None:
        """It is off ``host`` now: keep what it counted there."""
        self.retired.add(host.number)
        self.carried[host.number] = Counters.of(self.raw)
        self.raw = None
        self.demand_fps, self._rate_sample = None, None

    def move(self, reason: str, now: float, *, failover: bool = False) -> None:
        """It goes to another slot: a new generation, its tracker starts over there."""
        self.spec = replace(self.spec, generation=self.spec.generation + 1)
        self.failovers += 1 if failover else 0
        self.move_reason = reason
        self._show(StreamState.CONNECTING, reason, now, fps=0.0)

    def report(self, status: StreamStatus, slot: str, monotonic_s: float) -> None:
        """Its host's report."""
        self.raw = status
        self.slot = slot
        self._measure(status, monotonic_s)
        if status.state == StreamState.LIVE:
            self.move_reason = ""
        self.final = status.state.is_final
        self._show(
            status.state,
            status.reason or self.move_reason,
            status.state_since,
            fps=status.fps,
            latency_p50_ms=status.latency_p50_ms,
            latency_p95_ms=status.latency_p95_ms,
            last_result_at=status.last_result_at,
        )

    def carry_final(self, host: Host, status: StreamStatus) -> None:
        """The last report of a host it left: its final counters there."""
        self.carried[host.number] = Counters.of(status)
        self.final_report.set()
        self._show(self.status.state, self.status.reason, self.status.state_since)

    def end(self, state: StreamState, reason: str, now: float) -> None:
        self.final, self.host = True, None
        self._show(state, reason, now, fps=0.0)

    def stop(self, reason: str, now: float) -> StreamView:
        """Its final view once removed: stopped, unless it had already ended (a failed
        stream stays failed, with its reason)."""
        ended = self.view().status.state.is_final
        self.final, self.host, self.waiting = True, None, False
        if not ended:
            self._show(StreamState.STOPPED, reason, now, fps=0.0)
        return self.view()

    def _measure(self, status: StreamStatus, monotonic_s: float) -> None:
        """Its demand: frames a second its source delivers (at most ``max_fps``)."""
        sample = self._rate_sample
        if sample is None or status.frames_received < sample[1]:
            self._rate_sample = (monotonic_s, status.frames_received)
            return
        span_s = monotonic_s - sample[0]
        if span_s < RATE_SPAN_S:
            return
        demand = (status.frames_received - sample[1]) / span_s
        max_fps = self.spec.options.max_fps
        self.demand_fps = min(demand, max_fps) if max_fps is not None else demand
        self._rate_sample = (monotonic_s, status.frames_received)


def slot_loads(
    executor: Executor,
    job_id: str,
    hosts: list[Host],
    streams: Mapping[str, Stream],
    readings: Mapping[str, DeviceStatus],
    exclude: frozenset[str] = frozenset(),
) -> list[SlotLoad]:
    """Every slot of the pool as placement sees it, in the pool's order."""
    quarantined = set(executor.quarantined())
    loads = []
    for state in executor.slot_states():
        label = state.label
        open_hosts = [h for h in hosts if h.slot == label and not h.closing]
        on_slot = [s for s in streams.values() if s.host is not None and s.host.slot == label]
        measured = [s for s in on_slot if s.demand_fps is not None and s.raw is not None]
        reading = readings.get(state.device)
        # a CPU reading's memory is the machine's RAM, not a device's: no memory term
        memory = reading if reading is not None and reading.device.kind != "cpu" else None
        loads.append(
            SlotLoad(
                label=label,
                device=state.device,
                available=state.state in UP_STATES
                and state.device not in quarantined
                and label not in exclude
                and not (state.pinned and state.job != job_id),  # another manager's host
                recipe=open_hosts[0].key if open_hosts else None,
                streams=len(on_slot),
                demand_fps=sum(s.demand_fps or 0.0 for s in measured) if measured else None,
                processed_fps=sum(s.raw.fps for s in measured if s.raw) if measured else None,
                busy_with_files=state.state in ("busy", "loading") and not state.pinned,
                utilization_pct=reading.utilization_pct if reading is not None else None,
                memory_free_bytes=memory.memory_free_bytes if memory is not None else None,
                memory_total_bytes=memory.memory_total_bytes if memory is not None else None,
            )
        )
    return loads
