"""/v1/streams: add, list, read and stop live streams; their events, snapshot and files.

A stream belongs to the key that added it (another key's is not found); an admin key
sees and stops every stream, and alone may rebalance them.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from ..errors import NotFound
from ..redact import Viewer
from ..streams import StreamRunner
from ..streams.checks import hide_credentials
from ..streams.fanout import STATUS, Event, Subscription
from ..streams.schemas import (
    Latency,
    RebalanceResult,
    StreamFile,
    StreamInfo,
    StreamList,
    StreamMove,
    StreamRequest,
    WebhookInfo,
)
from ..streams.served import LiveStream, status_payload
from .deps import Viewing, require_key

router = APIRouter(prefix="/v1/streams", dependencies=[Depends(require_key)], tags=["streams"])

EVENT_TICK_S = 1.0  # an event stream looks for the server's stop this often
KEEPALIVE_S = 15.0  # a comment line after this long without an event
_RESULTS_FILE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,200}\.jsonl")
_CHUNK_BYTES = 1 << 16


def get_streams(request: Request) -> StreamRunner:
    streams: StreamRunner = request.app.state.streams
    return streams


Streams = Annotated[StreamRunner, Depends(get_streams)]


def shown_url(url: str, viewer: Viewer) -> str:
    """A stream's source as ``viewer`` may see it: no credentials, no server folders."""
    if "://" in url:
        return hide_credentials(url)
    return viewer.input(url, "path")


def stream_info(live: LiveStream, viewer: Viewer) -> StreamInfo:
    """A stream as ``viewer`` may see it."""
    record = live.record
    base = f"/v1/streams/{record.id}"
    folder = Path(record.output_dir)
    files = [
        StreamFile(name=f.name, url=f"{base}/files/{f.name}", bytes=f.stat().st_size)
        for f in _results(folder)
    ]
    has_snapshot = (folder / f"{record.id}.jpg").is_file()
    hook = live.webhook
    webhook_url = record.params.get("webhook_url")
    return StreamInfo(
        id=record.id,
        url=shown_url(record.url, viewer),
        model=viewer.text(str(record.params.get("model", ""))) or "",
        state=record.state,  # type: ignore[arg-type]
        reason=viewer.text(record.reason) or "",
        slot=record.slot,
        fps=round(live.fps, 2),
        frames_received=record.frames_received,
        frames_processed=record.frames_processed,
        frames_dropped=record.frames_dropped,
        latency_ms=Latency(p50=_ms(live.latency_p50_ms), p95=_ms(live.latency_p95_ms)),
        reconnects=record.reconnects,
        failovers=record.failovers,
        created_at=record.created_at,
        state_since=record.state_since,
        ended_at=record.ended_at,
        last_result_at=live.last_result_at,
        owner=record.owner,
        params=viewer.params({**record.params, "webhook_url": None}) | _hook_param(webhook_url),
        events_url=f"{base}/events",
        snapshot_url=f"{base}/snapshot.jpg" if has_snapshot else None,
        files=files,
        webhook=WebhookInfo(
            url=hide_credentials(webhook_url),
            sent=hook.sent,
            dropped=hook.dropped,
            pending=hook.pending,
            failures=hook.failures,
            last_error=hook.last_error,
        )
        if hook is not None and isinstance(webhook_url, str)
        else None,
    )


def _hook_param(url: object) -> dict[str, object]:
    return {"webhook_url": hide_credentials(url) if isinstance(url, str) else None}


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def _results(folder: Path) -> list[Path]:
    """A stream's JSONL files, oldest first (their names carry the time they opened)."""
    try:
        found = [p for p in folder.iterdir() if _RESULTS_FILE.fullmatch(p.name) and p.is_file()]
    except OSError:
        return []
    return sorted(found, key=lambda p: p.name)


@router.post("", status_code=201, response_model=StreamInfo)
def add_stream(body: StreamRequest, streams: Streams, viewer: Viewing) -> JSONResponse:
    """Add a live stream, owned by the key that sends it; it is placed on the slot with
    the most headroom and starts ``connecting``."""
    live = streams.add(body.url, body.model, body.params, viewer.principal)
    view = stream_info(live, viewer)
    return JSONResponse(
        view.model_dump(mode="json"),
        status_code=201,
        headers={"Location": f"/v1/streams/{live.record.id}"},
    )


@router.get("", response_model=StreamList)
def list_streams(streams: Streams, viewer: Viewing) -> StreamList:
    """The key's streams (an admin key's: every stream), oldest first; stopped and
    failed ones until ``job_ttl_s`` after they ended."""
    views = [stream_info(live, viewer) for live in streams.list_streams(viewer.principal)]
    return StreamList(streams=views, total=len(views))


@router.post("/rebalance", response_model=RebalanceResult)
def rebalance(streams: Streams, viewer: Viewing) -> RebalanceResult:
    """Move streams from the fullest slots to the emptiest (admin keys only)."""
    moves = streams.rebalance(viewer.principal)
    return RebalanceResult(
        moves=[StreamMove(stream=s, from_slot=a, to_slot=b) for s, a, b in moves]
    )


@router.get("/{stream_id}", response_model=StreamInfo)
def get_stream(stream_id: str, streams: Streams, viewer: Viewing) -> StreamInfo:
    """One stream: its state with the reason, slot, fps, counts and latency."""
    return stream_info(streams.get(stream_id, viewer.principal), viewer)


@router.delete("/{stream_id}", response_model=StreamInfo)
def stop_stream(stream_id: str, streams: Streams, viewer: Viewing) -> StreamInfo:
    """Stop a stream for good (409 once it has stopped or failed): it is not placed
    again at a restart; its files stay until ``job_ttl_s`` after it stopped."""
    return stream_info(streams.stop_stream(stream_id, viewer.principal), viewer)


@router.get(
    "/{stream_id}/events",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}, "description": "Server-Sent Events"}},
)
async def stream_events(stream_id: str, streams: Streams, viewer: Viewing) -> StreamingResponse:
    """Server-Sent Events: each processed frame as ``data: {json}``, each state change as
    ``event: status``, and ``event: dropped`` when this client fell behind (its queue
    keeps the newest ``stream_events_queue`` events). Ends after a final status."""
    loop = asyncio.get_running_loop()
    subscription, live = await run_in_threadpool(
        streams.subscribe, stream_id, viewer.principal, loop
    )
    first = Event(STATUS, json.dumps(status_payload(live)))
    return StreamingResponse(
        _events(subscription, first, viewer, streams),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def _events(
    subscription: Subscription, first: Event, viewer: Viewer, streams: StreamRunner
) -> AsyncIterator[str]:
    try:
        yield _shown(first, viewer).encode()
        quiet_s = 0.0
        while True:
            taken = await subscription.take(EVENT_TICK_S)
            parts = [_shown(event, viewer).encode() for event in taken.events]
            if taken.dropped:
                dropped = {"dropped": taken.dropped, "total": subscription.dropped}
                parts.insert(0, Event("dropped", json.dumps(dropped)).encode())
            if parts:
                quiet_s = 0.0
                yield "".join(parts)
            else:
                quiet_s += EVENT_TICK_S
                if quiet_s >= KEEPALIVE_S:
                    quiet_s = 0.0
                    yield ": keep-alive\n\n"
            if taken.ended:
                return
    finally:
        streams.hub.unsubscribe(subscription)


def _shown(event: Event, viewer: Viewer) -> Event:
    """A status event's reason as ``viewer`` may read it."""
    if event.name != STATUS or viewer.sees_paths:
        return event
    payload = json.loads(event.data)
    payload["reason"] = viewer.text(payload.get("reason"))
    return Event(STATUS, json.dumps(payload))


@router.get("/{stream_id}/snapshot.jpg", response_class=Response)
def snapshot(stream_id: str, streams: Streams, viewer: Viewing) -> Response:
    """The latest annotated frame (JPEG); 404 until the worker has written one."""
    live = streams.get(stream_id, viewer.principal)
    path = Path(live.record.output_dir) / f"{stream_id}.jpg"
    try:
        data = path.read_bytes()  # one open: whole, though the worker replaces it
    except (FileNotFoundError, NotADirectoryError):
        raise NotFound(f"stream {stream_id} has no snapshot yet") from None
    return Response(data, media_type="image/jpeg", headers={"Cache-Control": "no-store"})


@router.get("/{stream_id}/files/{name}", response_class=StreamingResponse)
def results_file(stream_id: str, name: str, streams: Streams, viewer: Viewing) -> Response:
    """One of the stream's JSONL files, as far as it is written when asked."""
    live = streams.get(stream_id, viewer.principal)
    folder = Path(live.record.output_dir)
    if not _RESULTS_FILE.fullmatch(name) or folder / name not in _results(folder):
        raise NotFound(f"stream {stream_id} has no results file {name[:80]!r}")
    try:
        fd = os.open(folder / name, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise NotFound(f"stream {stream_id} has no results file {name!r}") from None
    size = os.fstat(fd).st_size
    return StreamingResponse(
        _read(fd, size),
        media_type="application/x-ndjson",
        headers={
            "Content-Length": str(size),
            "Content-Disposition": f'attachment; filename="{name}"',
        },
    )


def _read(fd: int, size: int) -> Iterator[bytes]:
    """The file's first ``size`` bytes: what was there when it was opened (the worker
    appends whole lines, so that is whole lines too)."""
    try:
        left = size
        while left > 0:
            chunk = os.read(fd, min(_CHUNK_BYTES, left))
            if not chunk:
                return
            left -= len(chunk)
            yield chunk
    finally:
        os.close(fd)
