"""``vidshard serve``'s process: claim, then open, then serve.

The order is the point. First the data dir lock (a second server stops here, having
touched nothing), then the port (one in use stops here, still having touched nothing),
then the store (a corrupt or unreadable one stops here, before any job is requeued),
then the pool and the dispatcher, and only then uvicorn, on the socket bound before.
Each refusal is a one-line :class:`~vidshard.errors.ConfigError` (exit code 2).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from types import FrameType

import uvicorn

from vidshard.errors import ConfigError

from .app import create_app
from .jobs import JobService
from .listen import bind_listener
from .settings import ServiceSettings

logger = logging.getLogger(__name__)

GRACEFUL_SHUTDOWN_S = 20


class _Server(uvicorn.Server):
    """uvicorn, telling the app at the first stop signal (``on_exit``): its event streams
    end then, so the graceful shutdown does not wait for their clients to leave."""

    def __init__(self, config: uvicorn.Config, on_exit: Callable[[], None]) -> None:
        super().__init__(config)
        self._on_exit = on_exit

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self._on_exit()
        super().handle_exit(sig, frame)


def run_server(settings: ServiceSettings) -> None:
    """Serve until stopped (SIGINT, SIGTERM); the service is stopped on the way out."""
    service = JobService(settings)
    service.data_dir_lock.acquire()
    try:
        listener = bind_listener(settings.host, settings.port)
        with contextlib.closing(listener):
            service.start()
            try:
                app = create_app(settings, service)
                server = _Server(
                    uvicorn.Config(
                        app,
                        host=settings.host,
                        port=settings.port,
                        log_level=settings.log_level,
                        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
                    ),
                    on_exit=app.state.streams.hang_up,
                )
                # uvicorn names the address only when it binds the socket itself.
                where = f"[{settings.host}]" if ":" in settings.host else settings.host
                logger.info("serving on http://%s:%d", where, settings.port)
                server.run(sockets=[listener])
            finally:
                if service.started:  # uvicorn's shutdown stops it, unless it never ran
                    service.stop()
            if not server.started:
                raise ConfigError(f"could not serve on {settings.host}:{settings.port}")
    finally:
        service.data_dir_lock.release()
