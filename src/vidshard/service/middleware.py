"""The two pure-ASGI layers in front of the app, which act before a body is read.

:class:`KeyGate`: a request that carries a body and no key the server knows is answered
401 before a byte of the body is read. The routers check keys too (they need the
principal), but FastAPI reads and parses a body before it runs a route's dependencies:
without the gate, anyone could make the server receive a whole upload, or parse any
JSON, before being turned away.

:class:`BodyLimit`: a body over its limit is answered 413, declared or chunked, before
the app has buffered it.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from typing import Any

from .auth import KeyRing

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

BODILESS_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "DELETE"})
OPEN_PATHS = frozenset({"/docs/login", "/docs/logout"})
"""Routes that take a body from a caller without a key: the docs' key form itself."""


def key_in_headers(headers: Sequence[tuple[bytes, bytes]]) -> str | None:
    """The key a request sends, as ``X-API-Key: KEY`` or ``Authorization: Bearer KEY``
    (the one rule, for the gate here and the routers' check)."""
    by_name = {name.lower(): value for name, value in headers}
    given = by_name.get(b"x-api-key")
    if given is not None:
        return given.decode("latin-1")
    auth = by_name.get(b"authorization", b"").decode("latin-1")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip()
    return None


class KeyGate:
    """Pure ASGI: 401 for a body-carrying request without a known key, at once."""

    def __init__(self, app: ASGIApp, *, keys: KeyRing) -> None:
        self.app = app
        self.keys = keys

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or not self.keys.enabled
            or scope["method"] in BODILESS_METHODS
            or scope["path"] in OPEN_PATHS
            or self.keys.identify(key_in_headers(scope.get("headers") or [])) is not None
        ):
            await self.app(scope, receive, send)
            return
        await send_json(
            send,
            401,
            "Unauthorized",
            "missing or wrong API key (send it in the X-API-Key header)",
            # the unread body is not drained: the connection ends with the answer
            [(b"www-authenticate", b"Bearer"), (b"connection", b"close")],
        )


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
        over = False

        async def counted() -> Message:
            nonlocal seen, over
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    over = True
                    raise _BodyTooLarge
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if over:  # the app's answer to a body it could not read (FastAPI says 400)
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted, tracking_send)
        except Exception:
            if not over:
                raise
        if over and not started:
            await _too_large(send, limit)


class _BodyTooLarge(Exception):
    pass


async def _too_large(send: Send, limit: int) -> None:
    await send_json(send, 413, "TooLarge", f"request body is over the limit of {limit} bytes")


async def send_json(
    send: Send,
    status: int,
    error: str,
    detail: str,
    headers: Sequence[tuple[bytes, bytes]] = (),
) -> None:
    """A whole JSON error answer, ``{"error", "detail"}`` as the app's own, sent by hand."""
    body = json.dumps({"error": error, "detail": detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
