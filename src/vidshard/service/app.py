"""The FastAPI app of ``vidshard serve``: routers, error answers, and the two layers in
front of them (the key gate and the body limit, in :mod:`.middleware`)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from vidshard import __version__
from vidshard.errors import VidshardError

from .auth import KeyRing
from .errors import error_status
from .jobs import JobService
from .middleware import BodyLimit, KeyGate
from .redact import PathRedactor
from .routers import compat, dashboard, docs, jobs, realtime, streams, system
from .routers.deps import request_viewer
from .settings import ServiceSettings
from .store_errors import RETRY_AFTER_S, StoreUnavailable
from .streams import StreamRunner

logger = logging.getLogger(__name__)

UPLOAD_OVERHEAD_BYTES = 1 << 20  # multipart boundaries and headers around an upload


def create_app(settings: ServiceSettings, service: JobService | None = None) -> FastAPI:
    """The app; it starts ``service`` (or a new one) with itself and stops it after."""
    job_service = service or JobService(settings)
    stream_runner = StreamRunner(job_service)
    job_service.attach(stream_runner)  # started with the pool (now, if it runs already)

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
        # Served by routers/docs.py: with local assets, and behind the keys.
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.service = job_service
    app.state.streams = stream_runner
    app.state.settings = settings
    app.state.keys = KeyRing.from_settings(settings)
    app.state.redactor = PathRedactor.from_settings(settings)
    app.add_exception_handler(VidshardError, _vidshard_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    for router in (
        jobs.router,
        streams.router,
        system.router,
        compat.router,
        realtime.router,
        dashboard.router,
        docs.router,
    ):
        app.include_router(router)
    app.add_middleware(
        BodyLimit,
        default_bytes=settings.max_request_bytes,
        upload_bytes=settings.max_upload_bytes + UPLOAD_OVERHEAD_BYTES,
        upload_paths=("/v1/uploads",),
    )
    app.add_middleware(KeyGate, keys=app.state.keys)  # outermost: before any body is read
    return app


async def _vidshard_error(request: Request, exc: Exception) -> JSONResponse:
    detail = request_viewer(request).text(str(exc))  # no server paths for a non-admin
    return JSONResponse(
        {"error": type(exc).__name__, "detail": detail},
        status_code=error_status(exc),
        headers=_error_headers(exc),
    )


def _error_headers(exc: Exception) -> dict[str, str] | None:
    """A store that cannot be used now is worth trying again: say when."""
    if isinstance(exc, StoreUnavailable):
        return {"Retry-After": str(RETRY_AFTER_S)}
    return None


# The error names of FastAPI's own answers, so that every error has one JSON shape.
_HTTP_ERRORS = {
    400: "InvalidRequest",
    401: "Unauthorized",
    403: "AccessDenied",
    404: "NotFound",
    405: "MethodNotAllowed",
    413: "TooLarge",
}
_UNREADABLE_BODY = "There was an error parsing the body"  # FastAPI's words


async def _http_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    detail = exc.detail
    if exc.status_code == 400 and detail == _UNREADABLE_BODY:
        detail = "the body cannot be read: not valid JSON or form data, or nested too deeply"
    return JSONResponse(
        {"error": _HTTP_ERRORS.get(exc.status_code, "HTTPError"), "detail": detail},
        status_code=exc.status_code,
        headers=exc.headers,
    )


async def _validation_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    problems = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error["loc"] if part != "body")
        message = error["msg"].removeprefix("Value error, ")
        problems.append(f"{where}: {message}" if where else message)
    return JSONResponse({"error": "InvalidRequest", "detail": "; ".join(problems)}, status_code=422)


def vidshard_error_response(exc: VidshardError) -> JSONResponse:
    """The JSON error answer routers return by hand (same shape as the handler's)."""
    return JSONResponse(
        {"error": type(exc).__name__, "detail": str(exc)},
        status_code=error_status(exc),
        headers=_error_headers(exc),
    )
