"""The FastAPI app of ``vidshard serve``: routers, errors, auth and body limits."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from vidshard import __version__
from vidshard.errors import VidshardError

from .jobs import JobService, error_status
from .routers import compat, dashboard, jobs, system
from .settings import ServiceSettings

logger = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
UPLOAD_OVERHEAD_BYTES = 1 << 20  # multipart boundaries and headers around an upload


def create_app(settings: ServiceSettings, service: JobService | None = None) -> FastAPI:
    """The app; it starts ``service`` (or a new one) with itself and stops it after."""
    job_service = service or JobService(settings)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        if not job_service.started:
            job_service.start()
        try:
            yield
        finally:
            job_service.stop()

    app = FastAPI(
        title="vidshard",
        version=__version__,
        description="Run video AI models on every accelerator: jobs, devices, health.",
        lifespan=lifespan,
    )
    app.state.service = job_service
    app.state.settings = settings
    app.add_exception_handler(VidshardError, _vidshard_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    for router in (jobs.router, system.router, compat.router, dashboard.router):
        app.include_router(router)
    app.add_middleware(
        BodyLimit,
        default_bytes=settings.max_request_bytes,
        upload_bytes=settings.max_upload_bytes + UPLOAD_OVERHEAD_BYTES,
        upload_paths=("/v1/uploads",),
    )
    return app


async def _vidshard_error(_request: Request, exc: Exception) -> JSONResponse:
    return JSONResponse(
        {"error": type(exc).__name__, "detail": str(exc)}, status_code=error_status(exc)
    )


async def _validation_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    problems = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error["loc"] if part != "body")
        message = error["msg"].removeprefix("Value error, ")
        problems.append(f"{where}: {message}" if where else message)
    return JSONResponse({"error": "InvalidRequest", "detail": "; ".join(problems)}, status_code=422)


class BodyLimit:
    """Refuses request bodies over their limit with 413, whether or not they declare a
    Content-Length, before the app reads them (pure ASGI, so nothing is buffered)."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        default_bytes: int,
        upload_bytes: int,
        upload_paths: tuple[str, ...],
    ) -> None:
        self.app = app
        self.default_bytes = default_bytes
        self.upload_bytes = upload_bytes
        self.upload_paths = upload_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.upload_bytes if scope["path"] in self.upload_paths else self.default_bytes
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await _too_large(send, limit)
            return
        seen = 0
        started = False

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise _BodyTooLarge
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted, tracking_send)
        except _BodyTooLarge:
            if not started:
                await _too_large(send, limit)


class _BodyTooLarge(Exception):
    pass


async def _too_large(send: Send, limit: int) -> None:
    body = (
        b'{"error":"TooLarge","detail":"request body is over the limit of '
        + str(limit).encode()
        + b' bytes"}'
    )
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def vidshard_error_response(exc: VidshardError) -> JSONResponse:
    """The JSON error answer routers return by hand (same shape as the handler's)."""
    return JSONResponse(
        {"error": type(exc).__name__, "detail": str(exc)}, status_code=error_status(exc)
    )
