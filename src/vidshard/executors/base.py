"""The interface the engine drives; backends (local processes, Ray) implement it alike."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Protocol

from vidshard.devices.types import DeviceSlot
from vidshard.engine.events import Event
from vidshard.engine.units import UnitResult, WorkUnit
from vidshard.errors import WorkerError

EventSink = Callable[[Event], None]


class Recipe(Protocol):
    """What a worker builds its model from: a ``ModelRef`` (upscaling) or a
    ``DetectRecipe`` (detection and tracking). Small, picklable, comparable."""

    @property
    def name(self) -> str: ...


class WorkerLost(WorkerError):
    """The worker running a unit died or stopped answering; the unit may be retried."""


class Executor(ABC):
    """Start one worker per slot with a model, run units on idle workers, shut down."""

    @abstractmethod
    def start(self, slots: Sequence[DeviceSlot], model: Recipe, on_event: EventSink) -> None:
        """Start the workers and return once every one is ready (or has failed)."""

    @abstractmethod
    def submit(self, unit: WorkUnit) -> Future[UnitResult]:
        """Queue a unit; the first idle worker takes it."""

    @abstractmethod
    def live_slots(self) -> list[str]:
        """Labels of the slots whose workers are up."""

    @abstractmethod
    def shutdown(self) -> None:
        """Stop every worker; pending units fail with CancelledError."""
