"""The interface the engine drives; backends (local processes, Ray) implement it alike."""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Protocol

from vidshard.devices.types import DeviceSlot, DeviceStatus
from vidshard.engine.events import Event
from vidshard.engine.units import PinnedUnit, UnitResult, WorkUnit
from vidshard.errors import ConfigError, WorkerError

EventSink = Callable[[Event], None]
MessageSink = Callable[[tuple[Any, ...]], None]  # what a long-lived unit reports as it runs


class Recipe(Protocol):
    """What a worker builds its model from: a ``ModelRef`` (upscaling) or a
    ``DetectRecipe`` (detection and tracking). Small, picklable, comparable."""

    @property
    def name(self) -> str: ...


class WorkerLost(WorkerError):
    """The worker running a unit died or stopped answering; the unit may be retried."""


@dataclass(frozen=True)
class SlotState:
    """One slot as the service (and stream placement) sees it."""

    label: str
    device: str
    state: str  # starting, idle, busy, loading, down, quarantined
    model: str | None
    job: str | None  # the job whose unit runs now
    pid: int | None
    units: int  # units finished since the pool started
    frames: int
    fps: float  # of the last finished units
    pinned: bool = False  # the unit it runs is a long-lived one placed on it (a stream host)
    node: str = ""  # the machine it runs on, in a cluster ("": this one)


class PinnedRun:
    """A long-lived unit placed on one slot (a stream host): what the caller keeps.

    :meth:`send` reaches the running unit; messages sent before its worker takes it are
    kept and delivered, in order, right after the unit itself. ``future`` ends with the
    unit: a result once it ended by itself, :class:`WorkerLost` when its worker died or
    its device was quarantined (place its work again), another error otherwise.
    """

    def __init__(self, slot_label: str) -> None:
        self.slot_label = slot_label
        self.future: Future[UnitResult] = Future()
        self._lock = threading.Lock()
        self._pending: list[tuple[Any, ...]] = []
        self._deliver: MessageSink | None = None
        self._ended = False

    def send(self, message: tuple[Any, ...]) -> bool:
        """Deliver ``message`` to the unit (now, or once it starts); False once it ended."""
        with self._lock:
            if self._ended:
                return False
            if self._deliver is None:
                self._pending.append(message)
            else:
                self._deliver(message)
            return True

    def attach(self, deliver: MessageSink) -> None:
        """The unit runs now (the backend calls this right after sending it)."""
        with self._lock:
            for message in self._pending:
                deliver(message)
            self._pending.clear()
            self._deliver = deliver

    def end(self) -> None:
        """The unit is over: later messages are refused (the backend calls this)."""
        with self._lock:
            self._ended = True
            self._deliver = None
            self._pending.clear()


class Executor(ABC):
    """Start one worker per slot with a model, run units on idle workers, shut down.

    Long-lived units (stream hosts) use three more verbs: :meth:`slot_states` and
    :meth:`quarantined` say where one may go, :meth:`submit_pinned` puts it there.
    A backend without them refuses them with a :class:`ConfigError`.

    Where the slots are is the backend's to say (:meth:`resolve_slots`: this machine's
    devices, or a cluster's), and whether its workers see the job's files
    (:meth:`check_storage`: always, on one machine).
    """

    def resolve_slots(self, spec: str, workers_per_device: int = 1) -> list[DeviceSlot]:
        """The slots ``spec`` (the ``--devices`` text) names on the devices this backend
        reaches; this machine's by default."""
        from vidshard.devices import discover_devices, parse_device_spec

        devices = [status.device for status in discover_devices()]
        return parse_device_spec(spec, devices, workers_per_device=workers_per_device)

    def check_storage(self, read: Sequence[str], write: Sequence[str]) -> None:
        """Raise :class:`~vidshard.errors.StorageError` unless every worker can read the
        paths in ``read`` and write in the folders in ``write``. On one machine the
        coordinator's own checks already said so."""
        return None

    def device_readings(self) -> list[DeviceStatus] | None:
        """What the backend's devices read now (memory, load); None: this machine's, as
        the local monitor reads them."""
        return None

    @abstractmethod
    def start(self, slots: Sequence[DeviceSlot], model: Recipe, on_event: EventSink) -> None:
        """Start the workers and return once every one is ready (or has failed)."""

    @abstractmethod
    def submit(self, unit: WorkUnit) -> Future[UnitResult]:
        """Queue a unit; the first idle worker takes it."""

    def resubmit(self, unit: WorkUnit) -> Future[UnitResult]:
        """Queue a unit again after its worker was lost: ahead of the units still
        waiting where the backend can (the job's end waits on it)."""
        return self.submit(unit)

    @abstractmethod
    def live_slots(self) -> list[str]:
        """Labels of the slots whose workers are up."""

    @abstractmethod
    def shutdown(self) -> None:
        """Stop every worker; pending units fail with CancelledError."""

    def abort_start(self) -> None:
        """Called from another thread while :meth:`start` runs, when the job it starts
        for was refused meanwhile: stop the workers without waiting for them to load
        (``start`` then fails). By default ``start`` is left to finish."""
        return None

    def submit_pinned(
        self, slot_label: str, unit: PinnedUnit, on_message: MessageSink
    ) -> PinnedRun:
        """Queue a long-lived unit for ``slot_label`` alone: the next thing that slot
        takes. What the unit reports while it runs goes to ``on_message``."""
        raise ConfigError(f"{type(self).__name__} cannot run long-lived units (streams)")

    def slot_states(self) -> list[SlotState]:
        """Every slot: what it is doing, for whom."""
        raise ConfigError(f"{type(self).__name__} does not report its slots")

    def quarantined(self) -> list[str]:
        """Labels of the devices taken out after repeated failures."""
        return []
