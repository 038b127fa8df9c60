"""Events: plain data that the CLI bar, job records and metrics all read (STYLE idea 9)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class WorkerUp:
    slot_label: str
    pid: int
    load_seconds: float


@dataclass(frozen=True)
class WorkerDown:
    slot_label: str
    reason: str


@dataclass(frozen=True)
class UnitStarted:
    unit_id: str
    slot_label: str


@dataclass(frozen=True)
class UnitProgress:
    unit_id: str
    slot_label: str
    frames: int  # frames completed since the previous UnitProgress of this unit


@dataclass(frozen=True)
class UnitFinished:
    unit_id: str
    slot_label: str
    frames: int
    seconds: float


@dataclass(frozen=True)
class DeviceQuarantined:
    device_label: str
    reason: str


Event = WorkerUp | WorkerDown | UnitStarted | UnitProgress | UnitFinished | DeviceQuarantined
