"""Devices, health, readiness and Prometheus metrics.

Every key may read them; a key that is not an admin's sees a slot's job and model only
while that slot runs one of its own jobs, and no worker pids. Metrics are counts for the
whole server, with no job, path or key in them (a live stream's are labelled by its id
alone, never its URL).
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, PlainTextResponse
from pydantic import BaseModel, Field

from vidshard.executors.base import SlotState

from ..auth import Principal
from ..jobs import JobService
from ..metrics import render_metrics, render_stream_metrics
from ..redact import Viewer
from ..schemas import DeviceView, SlotView
from .deps import Service, Viewing, require_key

router = APIRouter(tags=["system"])


def _own_jobs(service: JobService, principal: Principal, job_ids: set[str]) -> set[str]:
    """Those of ``job_ids`` that ``principal`` may see."""
    if principal.admin:
        return job_ids
    records = (service.store.get(job_id) for job_id in job_ids)
    return {r.id for r in records if r is not None and principal.owns(r.owner)}


def device_views(service: JobService, viewer: Viewer) -> list[DeviceView]:
    """The pool's devices and slots as ``viewer`` may see them."""
    principal = viewer.principal
    slots = service.slots()
    mine = _own_jobs(service, principal, {s.job for s in slots if s.job is not None})
    quarantined = set(service.pool.quarantined())
    pool_devices = {s.device for s in slots}
    views = []
    for reading in service.readings():
        label = reading.device.label
        if label not in pool_devices:
            continue
        here = [s for s in slots if s.device == label]
        views.append(
            DeviceView(
                device=label,
                node=reading.device.node,
                kind=reading.device.kind,
                name=reading.device.name,
                memory_total_bytes=reading.memory_total_bytes,
                memory_used_bytes=reading.memory_used_bytes,
                utilization_pct=reading.utilization_pct,
                temperature_c=reading.temperature_c,
                quarantined=label in quarantined,
                fps=round(sum(s.fps for s in here if s.state == "busy"), 2),
                slots=[_slot_view(s, viewer, mine) for s in here],
            )
        )
    return views


def _slot_view(slot: SlotState, viewer: Viewer, mine: set[str]) -> SlotView:
    shown = viewer.principal.admin or slot.job in mine
    return SlotView(
        label=slot.label,
        state=slot.state,
        model=viewer.text(slot.model) if shown else None,
        job=slot.job if shown else None,
        pid=slot.pid if viewer.principal.admin else None,
        units=slot.units,
        frames=slot.frames,
        fps=round(slot.fps, 2),
    )


@router.get("/v1/devices", response_model=list[DeviceView], dependencies=[Depends(require_key)])
def devices(service: Service, viewer: Viewing) -> list[DeviceView]:
    """Each device of the pool: memory, utilisation, temperature, its slots and their fps."""
    return device_views(service, viewer)


class GroupSlotView(BaseModel):
    """One generation group: the slots it holds, what it is doing."""

    group_id: str
    model: str | None = Field(description="the model folder's name (shown to its owner)")
    ranks: int
    ulysses: int
    cfg: int
    fsdp: bool
    vae_parallel: bool
    slots: list[str]
    state: str = Field(description="forming, loading, idle, busy or closing")
    job: str | None
    step: int
    total_steps: int
    load_seconds: float
    requests: int = Field(description="requests it has finished (loaded once for all)")


class GroupList(BaseModel):
    groups: list[GroupSlotView]


@router.get("/v1/generation/groups", response_model=GroupList, dependencies=[Depends(require_key)])
def generation_groups(service: Service, viewer: Viewing) -> GroupList:
    """The device groups of ``generate`` jobs: a loaded group stays for the next request
    with the same model and layout, until idle for a while or its slots are wanted."""
    from vidshard.engine.generate import shared_groups

    groups = shared_groups(service.pool)
    mine = _own_jobs(service, viewer.principal, {g.job for g in groups if g.job is not None})
    views = []
    for group in groups:
        shown = viewer.principal.admin or group.job in mine
        layout = group.layout
        views.append(
            GroupSlotView(
                group_id=group.group_id,
                model=group.model if shown else None,
                ranks=layout.world,
                ulysses=layout.ulysses,
                cfg=layout.cfg,
                fsdp=layout.fsdp,
                vae_parallel=layout.vae_parallel,
                slots=list(group.slots),
                state=group.state,
                job=group.job if shown else None,
                step=group.step,
                total_steps=group.total_steps,
                load_seconds=round(group.load_seconds, 3),
                requests=group.requests,
            )
        )
    return GroupList(groups=views)


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
def metrics(service: Service, request: Request) -> PlainTextResponse:
    """Prometheus text format."""
    text = render_metrics(service) + render_stream_metrics(request.app.state.streams)
    return PlainTextResponse(text, media_type="text/plain; version=0.0.4; charset=utf-8")
