"""Prometheus metrics in the text exposition format, read from the service on each scrape."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from .store import STATES

if TYPE_CHECKING:
    from .jobs import JobService
    from .streams import StreamRunner
    from .streams.served import LiveStream


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


def _where(device: str) -> dict[str, str]:
    """A device's labels: itself and its node (``local`` on one machine)."""
    node, slash, _ = device.rpartition("/")
    return {"device": device, "node": node if slash else "local"}


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
            ({"slot": s.label, **_where(s.device)}, 0 if s.state in ("down", "quarantined") else 1)
            for s in slots
        ],
    )
    lines += _metric(
        "vidshard_slot_fps",
        "gauge",
        "Frames per second of the slot's last units.",
        [({"slot": s.label, **_where(s.device)}, round(s.fps, 3)) for s in slots],
    )
    lines += _metric(
        "vidshard_device_fps",
        "gauge",
        "Frames per second of the device's busy slots.",
        [
            (
                _where(d),
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
            memory_used.append((_where(device), float(reading.memory_used_bytes)))
        if reading.memory_total_bytes is not None:
            memory_total.append((_where(device), float(reading.memory_total_bytes)))
        if reading.utilization_pct is not None:
            utilization.append((_where(device), reading.utilization_pct / 100.0))
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
        [(_where(d), 1 if d in set(pool.quarantined()) else 0) for d in devices],
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


def render_stream_metrics(streams: StreamRunner) -> str:
    """Per stream (labelled by its id alone: never its URL), the streams this process
    placed: up, fps, frames, latency, reconnects, failovers and its webhook."""
    running = sorted(streams.running(), key=lambda live: live.record.created_at)
    records = [live.record for live in running]
    lines: list[str] = []
    lines += _metric(
        "vidshard_stream_up",
        "gauge",
        "1 while the stream is live (frames arrive and are processed), else 0; "
        "state: its state now.",
        [({"stream": r.id, "state": r.state}, 1 if r.state == "live" else 0) for r in records],
    )
    lines += _metric(
        "vidshard_stream_fps",
        "gauge",
        "Frames the stream had processed a second, over the last few seconds.",
        [({"stream": live.record.id}, round(live.fps, 3)) for live in running],
    )
    for name, help_text, field in (
        ("received", "Frames decoded from the stream's source.", "frames_received"),
        ("processed", "Frames of the stream through the detector.", "frames_processed"),
        ("dropped", "Frames of the stream dropped to keep up (the newest wins).", "frames_dropped"),
    ):
        lines += _metric(
            f"vidshard_stream_frames_{name}_total",
            "counter",
            help_text,
            [({"stream": r.id}, getattr(r, field)) for r in records],
        )
    latency = []
    for live in running:
        for quantile, value in (("0.5", live.latency_p50_ms), ("0.95", live.latency_p95_ms)):
            if value is not None:
                latency.append(({"stream": live.record.id, "quantile": quantile}, value / 1000))
    lines += _metric(
        "vidshard_stream_latency_seconds",
        "gauge",
        "Capture to result, over the last few seconds.",
        latency,
    )
    lines += _metric(
        "vidshard_stream_reconnects_total",
        "counter",
        "Times the stream's source was opened again after it ended, failed or stalled.",
        [({"stream": r.id}, r.reconnects) for r in records],
    )
    lines += _metric(
        "vidshard_stream_failovers_total",
        "counter",
        "Times the stream moved off a slot whose worker or device died.",
        [({"stream": r.id}, r.failovers) for r in records],
    )
    lines += _webhook_metrics(running)
    lines += _metric(
        "vidshard_stream_event_clients",
        "gauge",
        "Clients reading streams' Server-Sent Events.",
        [({}, streams.hub.count())],
    )
    return "\n".join(lines) + "\n"


def _webhook_metrics(running: list[LiveStream]) -> list[str]:
    lines: list[str] = []
    hooks = [(live.record.id, live.webhook) for live in running if live.webhook is not None]
    for name, help_text in (
        ("sent", "Records the stream's webhook receiver took."),
        ("dropped", "Records the stream's webhook dropped while its receiver was slow or down."),
        ("failures", "Webhook POSTs that failed (each is retried)."),
    ):
        lines += _metric(
            f"vidshard_stream_webhook_{name}_total",
            "counter",
            help_text,
            [({"stream": stream_id}, getattr(stats, name)) for stream_id, stats in hooks],
        )
    return lines
