"""Prometheus metrics in the text exposition format, read from the service on each scrape."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from .store import STATES

if TYPE_CHECKING:
    from .jobs import JobService


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _metric(
    name: str, kind: str, help_text: str, samples: Iterable[tuple[dict[str, str], float]]
) -> list[str]:
    lines = [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
    for labels, value in samples:
        label_text = ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items())
        number = str(int(value)) if float(value).is_integer() else repr(float(value))
        lines.append(f"{name}{{{label_text}}} {number}" if label_text else f"{name} {number}")
    return lines


def render_metrics(service: JobService) -> str:
    counts = service.store.counts_by_state()
    slots = service.slots()
    readings = {r.device.label: r for r in service.readings()}
    devices = sorted({s.device for s in slots})
    pool = service.pool
    lines: list[str] = []
    lines += _metric(
        "vidshard_jobs",
        "gauge",
        "Jobs in the store, by state.",
        [({"state": state}, counts.get(state, 0)) for state in STATES],
    )
    lines += _metric(
        "vidshard_queue_depth", "gauge", "Jobs waiting to start.", [({}, counts.get("queued", 0))]
    )
    lines += _metric(
        "vidshard_units_queued",
        "gauge",
        "Work units waiting for a slot.",
        [({}, pool.queued_units())],
    )
    lines += _metric(
        "vidshard_frames_processed_total",
        "counter",
        "Frames the slots finished since the service started.",
        [({}, sum(s.frames for s in slots))],
    )
    lines += _metric(
        "vidshard_slot_up",
        "gauge",
        "1 when the slot's worker is up.",
        [
            ({"slot": s.label, "device": s.device}, 0 if s.state in ("down", "quarantined") else 1)
            for s in slots
        ],
    )
    lines += _metric(
        "vidshard_slot_fps",
        "gauge",
        "Frames per second of the slot's last units.",
        [({"slot": s.label, "device": s.device}, round(s.fps, 3)) for s in slots],
    )
    lines += _metric(
        "vidshard_device_fps",
        "gauge",
        "Frames per second of the device's busy slots.",
        [
            (
                {"device": d},
                round(sum(s.fps for s in slots if s.device == d and s.state == "busy"), 3),
            )
            for d in devices
        ],
    )
    memory_used, memory_total, utilization = [], [], []
    for device in devices:
        reading = readings.get(device)
        if reading is None:
            continue
        if reading.memory_used_bytes is not None:
            memory_used.append(({"device": device}, float(reading.memory_used_bytes)))
        if reading.memory_total_bytes is not None:
            memory_total.append(({"device": device}, float(reading.memory_total_bytes)))
        if reading.utilization_pct is not None:
            utilization.append(({"device": device}, reading.utilization_pct / 100.0))
    lines += _metric(
        "vidshard_device_memory_used_bytes", "gauge", "Device memory in use.", memory_used
    )
    lines += _metric("vidshard_device_memory_total_bytes", "gauge", "Device memory.", memory_total)
    lines += _metric(
        "vidshard_device_utilization_ratio", "gauge", "Device utilisation, 0..1.", utilization
    )
    lines += _metric(
        "vidshard_device_quarantined",
        "gauge",
        "1 when the device was taken out after failing repeatedly.",
        [({"device": d}, 1 if d in set(pool.quarantined()) else 0) for d in devices],
    )
    lines += _metric(
        "vidshard_unit_retries_total",
        "counter",
        "Units whose worker died or hung; each is retried.",
        [({}, pool.units_lost)],
    )
    lines += _metric(
        "vidshard_worker_restarts_total",
        "counter",
        "Workers restarted after a failure.",
        [({}, pool.restarts)],
    )
    return "\n".join(lines) + "\n"
