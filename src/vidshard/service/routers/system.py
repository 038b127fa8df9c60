"""Devices, health, readiness and Prometheus metrics."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse, PlainTextResponse

from ..jobs import JobService
from ..metrics import render_metrics
from ..schemas import DeviceView, SlotView
from .deps import get_service, require_key

router = APIRouter(tags=["system"])
Service = Annotated[JobService, Depends(get_service)]


def device_views(service: JobService) -> list[DeviceView]:
    slots = service.slots()
    quarantined = set(service.pool.quarantined())
    pool_devices = {s.device for s in slots}
    views = []
    for reading in service.readings():
        label = reading.device.label
        if label not in pool_devices:
            continue
        mine = [s for s in slots if s.device == label]
        views.append(
            DeviceView(
                device=label,
                kind=reading.device.kind,
                name=reading.device.name,
                memory_total_bytes=reading.memory_total_bytes,
                memory_used_bytes=reading.memory_used_bytes,
                utilization_pct=reading.utilization_pct,
                temperature_c=reading.temperature_c,
                quarantined=label in quarantined,
                fps=round(sum(s.fps for s in mine if s.state == "busy"), 2),
                slots=[
                    SlotView(
                        label=s.label,
                        state=s.state,
                        model=s.model,
                        job=s.job,
                        pid=s.pid,
                        units=s.units,
                        frames=s.frames,
                        fps=round(s.fps, 2),
                    )
                    for s in mine
                ],
            )
        )
    return views


@router.get("/v1/devices", response_model=list[DeviceView], dependencies=[Depends(require_key)])
def devices(service: Service) -> list[DeviceView]:
    """Each device of the pool: memory, utilisation, temperature, its slots and their fps."""
    return device_views(service)


@router.get("/health")
def health(service: Service) -> JSONResponse:
    """200 when a slot is alive and the store answers; 503 with the reasons otherwise."""
    ok, body = service.health()
    return JSONResponse(body, status_code=200 if ok else 503)


@router.get("/ready", dependencies=[Depends(require_key)])
def ready(service: Service) -> JSONResponse:
    """200 once the pool is up and the store answers: ready to take jobs."""
    ok, body = service.health()
    ready_now = ok and service.started
    return JSONResponse({"ready": ready_now, **body}, status_code=200 if ready_now else 503)


@router.get("/metrics", response_class=PlainTextResponse, dependencies=[Depends(require_key)])
def metrics(service: Service) -> PlainTextResponse:
    """Prometheus text format."""
    return PlainTextResponse(
        render_metrics(service), media_type="text/plain; version=0.0.4; charset=utf-8"
    )
