"""The real-time detection service's endpoints (seed 001, ``/api/v1/realtime-ai``), mapped
onto the same live streams as ``/v1/streams``: a ``service_id`` is a stream id.

Its model settings named how its detector spread over GPUs. vidshard places each stream
itself, on the slot of the whole pool with the most headroom, and moves it when a device
dies; so ``device`` (``auto``, or the one kind of device the pool has),
``enable_multi_gpu``, ``load_balancing`` and ``max_workers`` are taken and the answer
says what each maps to, while a request that asks for part of the pool (one device, some
``gpu_devices``) is refused with a 422 that says so. ``variant`` names the model: a
file in the server's model_dirs or an Ultralytics config, as it is, or one of the seed's
own names (``multi_gpu_yolov11s``, ``YOLOV11_SMALL``), which is the matching Ultralytics
weights file (``yolo11s.pt``) when the server has it.
"""

from __future__ import annotations

import re
import time
from typing import Any

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from vidshard.errors import InputError
from vidshard.models.detect_files import is_shipped_config_name

from ..inputs import ServedModels
from ..stream_store import LIVE_STATES
from ..streams.schemas import Latency
from ..streams.served import LiveStream
from .deps import Service, Viewing, require_key
from .streams import Streams, shown_url, stream_info
from .system import device_views

router = APIRouter(
    prefix="/api/v1/realtime-ai",
    dependencies=[Depends(require_key)],
    tags=["compat: real-time detection service"],
)

# Which URL schemes each of the seed's protocols means ("" is a path).
PROTOCOLS: dict[str, tuple[str, ...]] = {
    "rtsp": ("rtsp", "rtsps"),
    "rtsps": ("rtsps",),
    "rtmp": ("rtmp", "rtmps"),
    "rtmps": ("rtmps",),
    "http": ("http", "https"),
    "https": ("https",),
    "hls": ("http", "https"),
    "file": ("file", ""),
    "webcam": ("v4l2", ""),
    "usb": ("v4l2", ""),
    "v4l2": ("v4l2", ""),
}
_SEED_VARIANT = re.compile(r"(?:multi_gpu_)?yolo(?:v)?(\d{1,2})([nsmlx])", re.IGNORECASE)
_SEED_ENUM = re.compile(
    r"(?:multi_gpu_)?yolov?(\d{1,2})_(nano|small|medium|large|xlarge|extra_large)",
    re.IGNORECASE,
)
_SIZES = {"nano": "n", "small": "s", "medium": "m", "large": "l", "xlarge": "x"}
_SIZES["extra_large"] = "x"


class StreamConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str = Field(min_length=1, max_length=4096)
    protocol: str | None = Field(None, max_length=16, description=", ".join(PROTOCOLS))


class ModelSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    variant: str = Field(min_length=1, max_length=4096, description="the model")
    device: str | None = Field("auto", max_length=64, description="auto (placed by vidshard)")
    enable_multi_gpu: bool = False
    load_balancing: bool = True
    gpu_devices: list[int] | None = Field(None, max_length=1024)
    max_workers: int | None = Field(None, ge=1, le=1024)
    confidence_threshold: float | None = Field(None, ge=0, le=1)
    half_precision: bool | None = None


class ProcessingSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_fps: float | None = Field(None, gt=0, le=240)
    batch_size: int | None = Field(None, ge=1, le=256)


class RealtimeStart(BaseModel):
    """POST /api/v1/realtime-ai/start."""

    model_config = ConfigDict(extra="forbid")

    stream_config: StreamConfig
    model_settings: ModelSettings
    processing_settings: ProcessingSettings = Field(default_factory=ProcessingSettings)
    params: dict[str, Any] = Field(default_factory=dict, description="vidshard stream options")


class RealtimeStatus(BaseModel):
    """GET /api/v1/realtime-ai/status/{service_id}."""

    service_id: str
    status: str = Field(description="connecting, live, reconnecting, failed, stopped")
    is_running: bool
    reason: str
    stream_url: str
    model: str
    fps: float
    frames_received: int
    frames_processed: int
    frames_dropped: int
    latency_ms: Latency
    slot: str | None
    gpu: str | None = Field(description="the device of its slot")
    reconnects: int
    failovers: int
    created_at: float
    uptime_s: float | None = Field(description="since it was added, while it runs")
    stream: str = Field(description="the same stream in /v1/streams")


class RealtimeStarted(RealtimeStatus):
    """POST /api/v1/realtime-ai/start: the new stream, and what its settings map to."""

    success: bool = True
    message: str
    settings: dict[str, str] = Field(description="what each of the request's settings means")


@router.post("/start", status_code=201, response_model=RealtimeStarted)
def start(body: RealtimeStart, service: Service, streams: Streams, viewer: Viewing) -> JSONResponse:
    """Start detection on a live stream: a vidshard stream, placed by vidshard."""
    url = body.stream_config.url
    _check_protocol(body.stream_config.protocol, url)
    pool = sorted({slot.device for slot in service.slots()})
    notes = _placement(body.model_settings, pool, service.settings.streams_per_slot)
    model, notes["variant"] = _model(body.model_settings.variant, ServedModels(service.settings))
    params = {**body.params, **_options(body)}
    live = streams.add(url, model, params, viewer.principal)
    status = _status(live, viewer, {s.label: s.device for s in service.slots()})
    view = RealtimeStarted(
        **status.model_dump(),
        message=f"detection started on {status.stream_url} with {model}",
        settings=notes,
    )
    return JSONResponse(view.model_dump(mode="json"), status_code=201)


@router.get("/status/{service_id}", response_model=RealtimeStatus)
def status(service_id: str, service: Service, streams: Streams, viewer: Viewing) -> RealtimeStatus:
    """A stream's state, fps, frames, latency and slot."""
    live = streams.get(service_id, viewer.principal)
    return _status(live, viewer, {s.label: s.device for s in service.slots()})


@router.post("/stop/{service_id}", response_model=RealtimeStatus)
def stop(service_id: str, service: Service, streams: Streams, viewer: Viewing) -> RealtimeStatus:
    """Stop a stream for good (as ``DELETE /v1/streams/{id}``)."""
    live = streams.stop_stream(service_id, viewer.principal)
    return _status(live, viewer, {s.label: s.device for s in service.slots()})


@router.get("/gpu-info")
def gpu_info(service: Service, viewer: Viewing) -> dict[str, Any]:
    """The pool's devices with utilisation and memory, as ``/v1/devices``."""
    devices = device_views(service, viewer)
    return {
        "gpu_count": sum(1 for device in devices if device.kind != "cpu"),
        "devices": [device.model_dump(mode="json") for device in devices],
    }


def _status(live: LiveStream, viewer: Any, devices: dict[str, str]) -> RealtimeStatus:
    info = stream_info(live, viewer)
    running = info.state in LIVE_STATES
    return RealtimeStatus(
        service_id=info.id,
        status=info.state,
        is_running=running,
        reason=info.reason,
        stream_url=shown_url(live.record.url, viewer),
        model=info.model,
        fps=info.fps,
        frames_received=info.frames_received,
        frames_processed=info.frames_processed,
        frames_dropped=info.frames_dropped,
        latency_ms=info.latency_ms,
        slot=info.slot,
        gpu=devices.get(info.slot) if info.slot else None,
        reconnects=info.reconnects,
        failovers=info.failovers,
        created_at=info.created_at,
        uptime_s=round(max(0.0, time.time() - info.created_at), 1) if running else None,
        stream=f"/v1/streams/{info.id}",
    )


def _check_protocol(protocol: str | None, url: str) -> None:
    """The URL must be of the protocol the request names."""
    if protocol is None:
        return
    schemes = PROTOCOLS.get(protocol.strip().lower())
    if schemes is None:
        raise InputError(
            f"stream_config.protocol: expected one of {', '.join(PROTOCOLS)}, got {protocol!r}"
        )
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme not in schemes:
        raise InputError(
            f"stream_config.protocol is {protocol!r} but the URL is "
            f"{scheme + '://' if scheme else 'a path'}: give a URL of that protocol"
        )


def _placement(settings: ModelSettings, pool: list[str], per_slot: int) -> dict[str, str]:
    """What the seed's placement settings map to; InputError for a request vidshard
    cannot honour (part of the pool)."""
    where = ", ".join(pool) or "none"
    device = (settings.device or "auto").strip().lower()
    kinds = {label.split(":", 1)[0] for label in pool}
    whole = ("auto", "", *(("gpu",) if kinds and "cpu" not in kinds else ()))
    if device not in whole and not (kinds == {device} or pool == [device]):
        raise InputError(
            f"model_settings.device {settings.device!r}: vidshard places each stream itself, "
            f"on the slot with the most headroom of the whole pool ({where}), and moves it "
            'when a device fails; it does not pin a stream to a device: send "auto"'
        )
    if settings.gpu_devices is not None:
        indices = {int(label.split(":", 1)[1]) for label in pool if ":" in label}
        if set(settings.gpu_devices) != indices:
            raise InputError(
                f"model_settings.gpu_devices {settings.gpu_devices}: streams are placed over "
                f"the whole pool ({where}), not part of it; send null, or start the server "
                "with --devices naming the devices it may use"
            )
    return {
        "device": f"auto: the slot with the most headroom of {where}",
        "enable_multi_gpu": "each stream runs on one slot; streams spread over the pool",
        "load_balancing": "always: by each slot's load, utilisation and free memory",
        "max_workers": f"the server's streams_per_slot ({per_slot}) bounds streams per slot",
    }


def _model(variant: str, models: ServedModels) -> tuple[str, str]:
    """The vidshard model a variant names, and how it was read."""
    name = variant.strip()
    file_part = name.split(":", 1)[0] if ".py:" in name else name
    if _exists(models, file_part) or _shipped(name):
        return name, f"{name}, as named"
    found = _SEED_VARIANT.fullmatch(name) or _SEED_ENUM.fullmatch(name)
    if found is None:
        return name, f"{name}, as named"
    version = int(found[1])
    size = found[2].lower()
    size = _SIZES.get(size, size)
    weights = f"yolo{version}{size}.pt" if version >= 11 else f"yolov{version}{size}.pt"
    if _exists(models, weights):
        return weights, f"{weights} (the seed's {name})"
    dirs = ", ".join(str(folder) for folder in models.settings.model_dirs) or "none configured"
    raise InputError(
        f"model_settings.variant {name!r} is Ultralytics' {weights}, which this server does "
        f"not have: put {weights} in one of its model_dirs ({dirs}), or name a model file "
        f"there, or {weights.removesuffix('.pt')}.yaml for random weights (for trying out)"
    )


def _exists(models: ServedModels, name: str) -> bool:
    """Whether ``name`` is a file in the model dirs (a name no file system takes is not)."""
    try:
        return models.exists(name)
    except (OSError, ValueError):
        return False


def _shipped(name: str) -> bool:
    try:
        return is_shipped_config_name(name)
    except (OSError, ValueError):
        return False


def _options(body: RealtimeStart) -> dict[str, Any]:
    """The stream options the seed's settings give."""
    given = {
        "max_fps": body.processing_settings.max_fps,
        "batch_size": body.processing_settings.batch_size,
        "conf": body.model_settings.confidence_threshold,
        "half": body.model_settings.half_precision,
    }
    return {name: value for name, value in given.items() if value is not None}
