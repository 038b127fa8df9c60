"""The worker process: set device visibility, then import the framework and load the model.

Nothing here imports torch at module level: the visibility variable must be set first
(DESIGN invariant 6). The model recipe arrives over the pipe after that, not as a
process argument, so unpickling it cannot import a framework early either.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import signal
import sys
import threading
import time
import traceback
from multiprocessing.connection import Connection
from multiprocessing.reduction import ForkingPickler
from typing import Any

from vidshard.devices.types import DeviceSlot

logger = logging.getLogger(__name__)
PROGRESS_INTERVAL_S = 0.2
HEARTBEAT_INTERVAL_S = 1.0
UNPICKLE_ATTEMPTS = 3
# Held while the inbox thread unpickles and while the main thread imports a unit kind's
# code, so the two never import the same modules at once (Python's import-deadlock
# check would fail one of them).
_IMPORTS = threading.Lock()


class _Channel:
    """Thread-safe sends; progress is batched to at most one message per interval."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self._lock = threading.Lock()

    def send(self, message: tuple[Any, ...]) -> None:
        with self._lock:
            self._conn.send(message)

    def progress_fn(self, unit_id: str) -> Any:
        pending = 0
        last = time.monotonic()

        def report(frames: int) -> None:
            nonlocal pending, last
            pending += frames
            now = time.monotonic()
            if pending and now - last >= PROGRESS_INTERVAL_S:
                self.send(("progress", unit_id, pending))
                pending, last = 0, now

        def flush() -> None:
            nonlocal pending
            if pending:
                self.send(("progress", unit_id, pending))
                pending = 0

        report.flush = flush  # type: ignore[attr-defined]
        return report


class _PipeLog(logging.Handler):
    """Sends log records to the coordinator, which logs them (so a worker's warning
    prints above the progress bar, not through it)."""

    def __init__(self, channel: _Channel) -> None:
        super().__init__()
        self.channel = channel
        self.setFormatter(logging.Formatter("%(message)s"))  # level and name travel apart

    def emit(self, record: logging.LogRecord) -> None:
        with contextlib.suppress(Exception):  # the coordinator is gone: nobody to tell
            self.channel.send(("log", record.levelno, record.name, self.format(record)))


def describe_error(exc: BaseException) -> tuple[str, str, str]:
    """(class name, message, traceback) for the coordinator; a refused disk write
    (full, quota, permissions) travels as the OutputError it is for the user."""
    from vidshard.errors import write_failure

    failure = write_failure(exc, "in the job's work dir") if isinstance(exc, OSError) else None
    if failure is not None:
        return ("OutputError", str(failure), traceback.format_exc())
    return (type(exc).__name__, str(exc), traceback.format_exc())


def _heartbeat(channel: _Channel, parent_pid: int) -> None:
    """Tell the coordinator this process is alive; exit if the coordinator is gone."""
    while True:
        time.sleep(HEARTBEAT_INTERVAL_S)
        if os.getppid() != parent_pid:  # orphaned: the coordinator was killed
            os._exit(0)
        try:
            channel.send(("heartbeat",))
        except OSError:
            os._exit(0)


def _orphan_watch(parent_pid: int) -> None:
    while os.getppid() == parent_pid:
        time.sleep(HEARTBEAT_INTERVAL_S)
    os._exit(0)


def _unpickle(data: bytes) -> tuple[Any, ...]:
    """A message's bytes as the message. Unpickling may import (a unit's classes), and an
    import racing the main thread's can fail once (Python's import deadlock check): that
    is retried. A message that still cannot be read ends the worker, so the coordinator
    sees it lost and runs the unit again elsewhere, rather than waiting for it forever."""
    for attempt in range(UNPICKLE_ATTEMPTS):
        try:
            with _IMPORTS:
                message: tuple[Any, ...] = ForkingPickler.loads(data)
            return message
        except Exception:
            if attempt + 1 == UNPICKLE_ATTEMPTS:
                logger.exception("ending the worker: a coordinator message could not be read")
                logging.shutdown()
                os._exit(4)
            time.sleep(0.05 * (attempt + 1))
    raise AssertionError("unreachable")


class _Inbox:
    """Reads the pipe on its own thread, so a cancel reaches a unit while it runs, and
    a stream host's commands reach it while it runs (``commands``)."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self._messages: queue.Queue[tuple[Any, ...] | None] = queue.Queue()
        self._lock = threading.Lock()
        self._cancelled: set[object] = set()  # tokens of units cancelled so far
        self._current: object = None
        self.cancel = threading.Event()  # set while the current unit is cancelled
        self.closing = threading.Event()  # the coordinator is gone, or asked for a stop
        self.commands: queue.Queue[tuple[Any, ...]] = queue.Queue()  # stream_add / _remove
        threading.Thread(target=self._read, name="inbox", daemon=True).start()

    def _read(self) -> None:
        while True:
            try:
                data = self._conn.recv_bytes()
            except (EOFError, OSError):  # the coordinator is gone
                self.closing.set()
                self._messages.put(None)
                return
            message = _unpickle(data)
            if message[0] in ("stream_add", "stream_remove") or message[0].startswith("gen_"):
                self.commands.put(message)
                continue
            if message[0] == "cancel":
                with self._lock:
                    self._cancelled.add(message[1])
                    if message[1] == self._current:
                        self.cancel.set()
                continue
            self._messages.put(message)
            if message[0] == "stop":
                self.closing.set()
                return

    def next(self) -> tuple[Any, ...] | None:
        return self._messages.get()

    def begin(self, token: object) -> None:
        """A unit starts: the cancel flag follows it (a cancel may have come first)."""
        with self._lock:
            self._current = token
            if token in self._cancelled:
                self.cancel.set()
            else:
                self.cancel.clear()
            self._cancelled.discard(token)


def worker_main(slot: DeviceSlot, conn: Connection) -> None:
    """Entry point of a worker process (started by ``boot.main``)."""
    from vidshard.devices.visibility import apply_visibility
    from vidshard.engine.faults import FAULT_VARIABLE, parse_fault

    # Ctrl-C reaches the whole process group; the coordinator decides what stops.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    apply_visibility(slot)  # before any framework import
    channel = _Channel(conn)
    started = time.monotonic()
    parent_pid = os.getppid()
    # Orphaned while loading (its coordinator or a cluster node's actor killed): exit,
    # rather than finish a long load and hold the device the slot's next worker gets.
    threading.Thread(target=_orphan_watch, args=(parent_pid,), daemon=True).start()
    model = None
    try:
        fault = parse_fault(os.environ.get(FAULT_VARIABLE))
        message = conn.recv()  # ("model", ModelRef or None, log level)
        model_ref = message[1]
        logging.basicConfig(
            level=message[2] if len(message) > 2 else logging.WARNING,
            handlers=[_PipeLog(channel)],
        )
        logging.captureWarnings(True)  # warnings too: they reach the user the same way
        if model_ref is not None:  # None: a pool worker waiting for its first job
            from vidshard.devices.visibility import configure_torch_threads
            from vidshard.models.registry import build_model

            # a DetectRecipe builds its own pipeline; a ModelRef goes through the registry
            model = model_ref.build() if hasattr(model_ref, "build") else build_model(model_ref)
            if fault is not None:
                fault.hit("load")
            model.load(slot.torch_device)
            if "torch" in sys.modules:  # only models that use torch pay for importing it
                configure_torch_threads(slot)
    except BaseException as exc:
        channel.send(("load_failed", *describe_error(exc)))
        return
    channel.send(("ready", os.getpid(), time.monotonic() - started))
    threading.Thread(target=_heartbeat, args=(channel, parent_pid), daemon=True).start()
    # What a unit message needs to unpickle is imported before the inbox thread reads
    # one, so the two threads never import the same modules at once.
    import vidshard.engine.segment
    import vidshard.engine.units  # noqa: F401

    _serve(_Inbox(conn), channel, model, fault, slot=slot)


def _serve(
    inbox: _Inbox,
    channel: _Channel,
    model: Any,
    fault: Any = None,
    *,
    slot: DeviceSlot | None = None,
) -> None:
    from vidshard.engine.segment import run_seam, run_segment
    from vidshard.engine.units import (
        AnnotateUnit,
        GroupRankUnit,
        SegmentUnit,
        StreamHostUnit,
        TrackUnit,
    )

    while True:
        message = inbox.next()
        if message is None or message[0] == "stop":  # None: the coordinator is gone
            return
        unit = message[1]
        report = channel.progress_fn(unit.unit_id)
        unit_id = unit.unit_id
        inbox.begin(message[2] if len(message) > 2 else unit_id)  # the coordinator's token

        def checkpoint(point: str, unit_id: str = unit_id) -> None:
            if fault is not None:
                fault.hit(point, unit_id)

        try:
            checkpoint("start")
            if unit.needs_model and model is None:
                raise RuntimeError(f"{unit_id} needs a model and this worker has none")
            if isinstance(unit, SegmentUnit):
                result = run_segment(unit, model, report, checkpoint, cancel=inbox.cancel)
            elif isinstance(unit, TrackUnit):
                with _IMPORTS:
                    from vidshard.engine.track import run_track

                result = run_track(unit, model, report, cancel=inbox.cancel)
            elif isinstance(unit, AnnotateUnit):
                with _IMPORTS:
                    from vidshard.engine.track import run_annotate

                result = run_annotate(unit, report, cancel=inbox.cancel)
            elif isinstance(unit, StreamHostUnit):
                token = message[2] if len(message) > 2 else unit_id
                result = _host_streams(unit, token, inbox, channel, slot)
            elif isinstance(unit, GroupRankUnit):
                with _IMPORTS:
                    from vidshard.generation.group_rank import serve_rank

                token = message[2] if len(message) > 2 else unit_id
                device = slot.torch_device if slot is not None else "cpu"
                result = serve_rank(unit, token, inbox, channel.send, device)
            else:
                result = run_seam(unit, report, cancel=inbox.cancel)
            report.flush()
            channel.send(("done", result))
        except Exception as exc:
            logger.debug("unit %s failed", unit.unit_id, exc_info=True)
            channel.send(("failed", unit.unit_id, *describe_error(exc)))


def _end_stuck_worker(reason: str) -> None:
    """A stream host whose detector never returns: end the process, so the coordinator
    sees a dead worker and moves its streams (a hung call cannot be interrupted)."""
    logger.error("ending the worker: %s", reason)
    logging.shutdown()
    os._exit(3)


def _host_streams(
    unit: Any, token: object, inbox: _Inbox, channel: _Channel, slot: DeviceSlot | None
) -> Any:
    """Run a :class:`StreamHostUnit`: load its detector, host its streams, apply the
    coordinator's ``stream_add`` / ``stream_remove`` as they come, and end once the last
    stream is removed (or the unit is cancelled: the host stops what it still holds)."""
    from vidshard.engine.units import UnitResult
    from vidshard.errors import Cancelled

    with _IMPORTS:
        from vidshard.streams.host import StreamHost

    started = time.monotonic()
    device, label = (slot.torch_device, slot.label) if slot is not None else ("cpu", "")
    host = StreamHost(unit.recipe, device, label, channel.send, on_stuck=_end_stuck_worker)
    host.load()
    hosted: set[str] = set()
    for spec in unit.specs:
        _apply_command(host, hosted, ("stream_add", spec), channel)
    stop = threading.Event()
    if not hosted:
        stop.set()
    commands = threading.Thread(
        target=_follow_commands, args=(host, hosted, token, inbox, stop, channel), daemon=True
    )
    commands.start()
    try:
        host.run(stop)
    finally:
        stop.set()
        commands.join()
    if inbox.cancel.is_set() or inbox.closing.is_set():  # run() stopped what it still held
        raise Cancelled(f"{unit.unit_id} was cancelled")
    return UnitResult(unit.unit_id, label, 0, time.monotonic() - started)


def _follow_commands(
    host: Any,
    hosted: set[str],
    token: object,
    inbox: _Inbox,
    stop: threading.Event,
    channel: _Channel,
) -> None:
    """Apply the commands meant for this host until it stops: the last stream removed,
    the unit cancelled, the coordinator gone or asking for a stop. A command for an
    earlier host (its token) is dropped."""
    while not stop.is_set():
        if inbox.cancel.is_set() or inbox.closing.is_set():
            stop.set()
            return
        try:
            command = inbox.commands.get(timeout=0.1)
        except queue.Empty:
            continue
        if command[-1] != token:
            logger.debug("dropped %s for an earlier stream host", command[0])
            continue
        _apply_command(host, hosted, command[:-1], channel)
        if not hosted:
            stop.set()


def _apply_command(
    host: Any, hosted: set[str], command: tuple[Any, ...], channel: _Channel
) -> None:
    """Add or remove one stream; a stream that cannot be added is reported failed."""
    kind, argument = command
    if kind == "stream_remove":
        if argument in hosted:
            hosted.discard(argument)
            host.remove(argument)
        return
    try:
        host.add(argument)
    except Exception as exc:
        from vidshard.streams.types import StreamState, StreamStatus

        logger.debug("stream %s could not be added", argument.stream_id, exc_info=True)
        reason = f"could not start: {type(exc).__name__}: {exc}"
        status = StreamStatus(argument.stream_id, StreamState.FAILED, reason, time.time())
        channel.send(("stream_status", status))
        return
    hosted.add(argument.stream_id)
