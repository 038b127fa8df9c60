"""Live streams over a pool of slots: the API the CLI and the service use.

The manager keeps what the coordinator knows of each stream (its spec, the slot it is on,
how often it moved) and places streams on the pool's slots (:mod:`.placement`). The
streams of one recipe on one slot share a stream host, a long-lived unit pinned to that
slot (``StreamHostUnit``); later streams reach a running host as commands. When a host's
worker dies or its device is quarantined, its streams are placed again at once on the
other slots (generation + 1, ``failovers`` + 1); a stream its host reports failed or
stopped stays where it is, final.

Two threads do the manager's own work: one takes what the hosts report (statuses,
records) and calls ``on_status`` / ``on_record``; the other places streams again after a
host ended, and every half second places the streams waiting for a slot. Callbacks run
on those threads and should return quickly (hand the work to a queue of your own).
"""

from __future__ import annotations

import builtins
import logging
import queue
import re
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import CancelledError
from dataclasses import replace
from pathlib import Path
from typing import Any

from vidshard import errors
from vidshard.detection.pipeline import DetectRecipe
from vidshard.devices.monitor import DeviceMonitor
from vidshard.devices.types import DeviceStatus
from vidshard.engine.units import StreamHostUnit
from vidshard.executors.base import Executor, WorkerLost
from vidshard.executors.local import LocalExecutor

from .bookkeeping import Host, Stream, StreamView, host_key, slot_loads
from .options import StreamOptions
from .placement import SlotLoad, choose_slot, rebalance_moves, why_unplaced
from .types import StreamRecord, StreamSpec, StreamState, StreamStatus

logger = logging.getLogger(__name__)

STOP_WAIT_S = 3.0  # a removed stream's host reports its final counters within this
TICK_S = 0.5  # waiting streams are placed this often
READINGS_MAX_AGE_S = 2.0  # device readings older than this are read again
STREAM_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class StreamNotFound(KeyError):
    """No stream has this id (never added, or removed)."""


class StreamExists(errors.ConfigError):
    """A stream with this id is already there."""


__all__ = ["StreamExists", "StreamManager", "StreamNotFound", "StreamView"]


class StreamManager:
    """Add, watch, move and remove live streams on a pool (thread-safe).

    ``pool`` is a started :class:`LocalExecutor`: one started for streams alone (the
    CLI), or the service's shared pool, where file jobs' units and stream hosts share
    the slots through the fair queue (the streams are one job there: each host holds a
    slot as a running unit does). Start it with ``model=None``: a host builds its own
    detector, so a worker holding another model is restarted empty first.
    """

    def __init__(
        self,
        pool: LocalExecutor,
        *,
        per_slot_limit: int = 8,
        on_record: Callable[[StreamRecord], None] | None = None,
        on_status: Callable[[StreamView], None] | None = None,
        monitor: DeviceMonitor | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if per_slot_limit < 1:
            raise errors.ConfigError(f"per_slot_limit must be 1 or more, got {per_slot_limit}")
        self.per_slot_limit = per_slot_limit
        self._pool = pool
        self._job_id = f"streams-{uuid.uuid4().hex[:8]}"
        self._executor: Executor = pool.job(self._job_id, None)
        self._on_record = on_record
        self._on_status = on_status
        self._monitor = monitor if monitor is not None else DeviceMonitor()
        self._clock = clock
        self._lock = threading.Lock()
        self._streams: dict[str, Stream] = {}
        self._hosts: list[Host] = []
        self._readings: dict[str, DeviceStatus] = {}  # by device label
        self._readings_at = float("-inf")
        self._reports: queue.Queue[tuple[Host, tuple[Any, ...]] | None] = queue.Queue()
        self._ended: queue.Queue[Host | None] = queue.Queue()
        self._closed = False
        self._threads = [
            threading.Thread(target=self._report_loop, name="streams-reports", daemon=True),
            threading.Thread(target=self._control_loop, name="streams-control", daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    # --- the API ------------------------------------------------------------------------

    def add(
        self,
        url: str,
        options: StreamOptions,
        recipe: DetectRecipe,
        *,
        stream_id: str | None = None,
        output_dir: Path | None = None,
    ) -> StreamView:
        """Place a new stream on the slot with the most headroom (or let it wait for one)."""
        stream_id = stream_id if stream_id is not None else uuid.uuid4().hex[:12]
        if not STREAM_ID.match(stream_id):
            raise errors.ConfigError(
                f"stream id {stream_id!r}: expected 1 to 64 letters, digits, '.', '_' or '-'"
            )
        now = self._clock()
        spec = StreamSpec(stream_id, url, options, recipe, output_dir)
        with self._lock:
            if self._closed:
                raise errors.ConfigError("the stream manager is closed")
            if stream_id in self._streams:
                raise StreamExists(f"stream {stream_id!r} exists already")
            stream = Stream(spec, now, StreamStatus(stream_id, StreamState.CONNECTING, "", now))
            self._streams[stream_id] = stream
            self._place(stream)
            view = stream.view()
        self._tell(view)
        return view

    def remove(self, stream_id: str) -> StreamView:
        """Stop a stream and forget it; its final view is returned (state stopped, or failed
        with its reason when it had failed before)."""
        with self._lock:
            stream = self._find(stream_id)
            stream.removing = True
            host = self._detach(stream)
        if (
            host is not None
            and host.reported
            and threading.current_thread() is not self._threads[0]
        ):
            stream.final_report.wait(STOP_WAIT_S)  # its host's last counters
        with self._lock:
            self._streams.pop(stream_id, None)
            view = stream.stop("removed", self._clock())
        self._tell(view)
        return view

    def get(self, stream_id: str) -> StreamView:
        with self._lock:
            return self._find(stream_id).view()

    def list(self) -> builtins.list[StreamView]:
        with self._lock:
            streams = sorted(self._streams.values(), key=lambda s: s.created_at)
            return [stream.view() for stream in streams]

    def rebalance(self) -> builtins.list[tuple[str, str, str]]:
        """Move streams from the fullest slots to the emptiest until their counts differ
        by one at most; returns the moves as (stream, from slot, to slot)."""
        moved: list[tuple[str, str, str]] = []
        views = []
        with self._lock:
            loads = self._loads()
            for source, target in rebalance_moves(loads, self.per_slot_limit):
                stream = self._youngest_on(source)
                if stream is None:
                    continue
                self._detach(stream)
                stream.move(f"moved from {source}: rebalance", self._clock())
                self._attach(stream, target)
                moved.append((stream.spec.stream_id, source, target))
                views.append(stream.view())
        for view in views:
            self._tell(view)
        return moved

    def close(self) -> None:
        """Stop every stream (each ends stopped), end their hosts, and stop the manager."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            streams = list(self._streams.values())
            hosted = [s for s in streams if (h := self._detach(s)) is not None and h.reported]
        deadline = time.monotonic() + STOP_WAIT_S
        for stream in hosted:
            stream.final_report.wait(max(0.0, deadline - time.monotonic()))
        now = self._clock()
        with self._lock:
            views = [stream.stop("the stream manager closed", now) for stream in streams]
            self._streams.clear()
        for view in views:
            self._tell(view)
        self._executor.shutdown()  # ends a host that is still there
        self._pool.release_job(self._job_id)
        self._reports.put(None)
        self._ended.put(None)
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(timeout=5)

    # --- placement (under the lock) --------------------------------------------------

    def _find(self, stream_id: str) -> Stream:
        stream = self._streams.get(stream_id)
        if stream is None or stream.removing:
            raise StreamNotFound(stream_id)
        return stream

    def _loads(self, exclude: frozenset[str] = frozenset()) -> builtins.list[SlotLoad]:
        return slot_loads(
            self._executor, self._job_id, self._hosts, self._streams, self._readings, exclude
        )

    def _place(self, stream: Stream, exclude: frozenset[str] = frozenset()) -> bool:
        """Put ``stream`` on the slot with the most headroom; False: it waits (with why)."""
        loads = self._loads(exclude)
        key = host_key(stream.spec.recipe)
        best = choose_slot(loads, key, self.per_slot_limit)
        if best is None:
            stream.wait(why_unplaced(loads, key, self.per_slot_limit), self._clock())
            return False
        self._attach(stream, best.label)
        return True

    def _attach(self, stream: Stream, slot: str) -> None:
        """Host ``stream`` on ``slot``: in its running host of the same recipe, else in a
        new one queued for that slot."""
        spec = stream.spec
        key = host_key(spec.recipe)
        for host in self._hosts:
            if host.slot == slot and host.key == key and not host.closing:
                if host.run.send(("stream_add", spec)):
                    host.streams.add(spec.stream_id)
                    stream.placed(host, self._clock())
                    return
                host.closing = True  # it ended; its end is on the way to _control_loop
        host = Host(slot, key)
        host.streams.add(spec.stream_id)
        self._hosts.append(host)
        stream.placed(host, self._clock())
        unit = StreamHostUnit(f"{self._job_id}-{slot}-{host.number}", spec.recipe, (spec,))
        host.run = self._executor.submit_pinned(
            slot, unit, lambda message: self._reports.put((host, message))
        )
        host.run.future.add_done_callback(lambda _future: self._ended.put(host))

    def _detach(self, stream: Stream) -> Host | None:
        """Take ``stream`` off its host (the host ends with its last stream)."""
        host = stream.host
        stream.host = None
        if host is None:
            return None
        if stream.spec.stream_id in host.streams:
            host.streams.discard(stream.spec.stream_id)
            host.run.send(("stream_remove", stream.spec.stream_id))
            if not host.streams:
                host.closing = True  # the worker ends it: nothing more goes to it
        stream.leave(host)
        return host

    def _youngest_on(self, slot: str) -> Stream | None:
        on_slot = [s for s in self._streams.values() if s.host is not None and s.host.slot == slot]
        return max(on_slot, key=lambda s: s.placed_at or 0.0, default=None)

    # --- what the hosts report --------------------------------------------------------

    def _report_loop(self) -> None:
        while (item := self._reports.get()) is not None:
            host, message = item
            host.reported = True
            try:
                if message[0] == "stream_status":
                    self._take_status(host, message[1])
                elif message[0] == "stream_records":
                    self._take_records(host, message[1])
            except Exception:
                logger.exception("a stream report could not be handled")

    def _take_status(self, host: Host, status: StreamStatus) -> None:
        with self._lock:
            stream = self._streams.get(status.stream_id)
            if stream is None:
                return
            if stream.host is not host:  # from a host it left: only its final counters
                if host.number in stream.retired and status.state.is_final:
                    stream.carry_final(host, status)
                return
            stream.report(status, host.slot, time.monotonic())
            if status.state.is_final:  # failed, or stopped by its host: not moved
                self._detach(stream)
            view = stream.view()
        self._tell(view)

    def _take_records(self, host: Host, records: builtins.list[StreamRecord]) -> None:
        with self._lock:
            wanted = [
                r if r.slot is not None else replace(r, slot=host.slot)
                for r in records
                if (stream := self._streams.get(r.stream_id)) is not None and stream.host is host
            ]
        if self._on_record is not None:
            for record in wanted:
                self._on_record(record)

    def _tell(self, view: StreamView) -> None:
        if self._on_status is not None:
            try:
                self._on_status(view)
            except Exception:
                logger.exception("on_status failed for stream %s", view.stream_id)

    # --- hosts that ended, streams that wait ---------------------------------------------

    def _control_loop(self) -> None:
        host: Host | None = None
        while True:
            try:
                if host is not None:
                    self._host_ended(host)
                self._place_waiting()
            except Exception:
                logger.exception("stream placement failed")
            try:
                host = self._ended.get(timeout=TICK_S)
            except queue.Empty:
                host = None
            else:
                if host is None:
                    return

    def _host_ended(self, host: Host) -> None:
        """Its worker died (place its streams again, elsewhere), its recipe cannot load
        (its streams fail), or the pool shut down (they stop)."""
        future = host.run.future
        exc: BaseException | None = CancelledError() if future.cancelled() else future.exception()
        now = self._clock()
        views = []
        with self._lock:
            if host in self._hosts:
                self._hosts.remove(host)
            orphans = [s for s in self._streams.values() if s.host is host]
            for stream in orphans:
                stream.host = None
                stream.leave(host)
                if self._closed:
                    continue
                if exc is None:  # it ended while it still had streams (they came late)
                    stream.move(f"placed again: its host on {host.slot} ended", now)
                    self._place(stream)
                elif isinstance(exc, WorkerLost):
                    stream.move(f"moved from {host.slot}: worker lost: {exc}", now, failover=True)
                    self._place(stream, exclude=frozenset({host.slot}))
                elif isinstance(exc, (CancelledError, errors.Cancelled)):
                    stream.end(StreamState.STOPPED, "the pool shut down", now)
                else:
                    stream.end(StreamState.FAILED, f"its host failed: {exc}", now)
                views.append(stream.view())
        if orphans and exc is not None:
            logger.warning("stream host on %s ended: %s", host.slot, exc)
        for view in views:
            self._tell(view)

    def _place_waiting(self) -> None:
        if time.monotonic() - self._readings_at > READINGS_MAX_AGE_S:
            self._read_devices()
        views = []
        with self._lock:
            if self._closed:
                return
            waiting = [s for s in self._streams.values() if s.waiting]
            for stream in sorted(waiting, key=lambda s: s.created_at):
                before = stream.status.reason
                if self._place(stream) or stream.status.reason != before:
                    views.append(stream.view())
        for view in views:
            self._tell(view)

    def _read_devices(self) -> None:
        self._readings_at = time.monotonic()
        try:
            readings = {status.device.label: status for status in self._monitor.snapshot()}
        except Exception:  # a reading is a hint: placement goes on without it
            logger.debug("device readings failed", exc_info=True)
            return
        with self._lock:
            self._readings = readings
