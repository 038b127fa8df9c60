"""A stream's webhook: its records POSTed in batches, retried with backoff, never in the
stream's way.

Records wait in a bounded queue of the stream's own (``webhook_queue``; when it is full
the oldest is dropped and counted). Every ``webhook_interval_s`` a thread of the webhook's
own POSTs what has arrived, as JSON lists of at most ``webhook_batch`` records. A POST
that fails (no connection, no answer within :data:`POST_TIMEOUT_S`, an answer other than
2xx; redirects are not followed) keeps its records at the head of the queue and is tried
again after 1 s, then 2, 4 ... up to :data:`MAX_RETRY_S`. Before each POST the URL's host
is resolved and checked against the host rules, and the connection goes to an address
that was checked (a name that resolves elsewhere later cannot slip through).
"""

from __future__ import annotations

import http.client
import json
import logging
import socket
import ssl
import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from vidshard import __version__
from vidshard.errors import InputError

from .. import security
from ..security import Endpoint, HostRules
from .checks import scrub

logger = logging.getLogger(__name__)

POST_TIMEOUT_S = 10.0
FIRST_RETRY_S = 1.0
MAX_RETRY_S = 30.0
_PORTS = {"http": 80, "https": 443}
_ANSWER_BYTES = 1 << 16  # of a receiver's answer, read and thrown away


class WebhookFailed(Exception):
    """A POST did not reach the receiver, or the receiver did not take it."""


def post_json(url: str, body: bytes, hosts: HostRules, headers: dict[str, str]) -> None:
    """POST ``body`` to ``url`` over a connection to a checked address; WebhookFailed
    with the reason when it does not end in a 2xx answer."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    host = security.url_host(url)
    try:
        endpoints = security.resolve_within(host, parts.port or _PORTS[scheme], POST_TIMEOUT_S)
        hosts.check(host, [endpoint.address for endpoint in endpoints])
    except InputError as exc:
        raise WebhookFailed(str(exc)) from None
    connection: http.client.HTTPConnection
    if scheme == "https":
        connection = _PinnedTLS(host, parts.port, endpoints, ssl.create_default_context())
    else:
        connection = _Pinned(host, parts.port, endpoints)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    try:
        connection.request("POST", target, body=body, headers=headers)
        response = connection.getresponse()
        response.read(_ANSWER_BYTES)
    except (OSError, http.client.HTTPException) as exc:
        reason = (exc.strerror if isinstance(exc, OSError) else None) or str(exc)
        raise WebhookFailed(reason or type(exc).__name__) from None
    finally:
        connection.close()
    if not 200 <= response.status < 300:
        raise WebhookFailed(f"HTTP {response.status} {response.reason}".strip())


class _Pinned(http.client.HTTPConnection):
    """HTTP to one of ``endpoints`` (checked already): never looks the host up again."""

    def __init__(self, host: str, port: int | None, endpoints: Sequence[Endpoint]) -> None:
        super().__init__(host, port, timeout=POST_TIMEOUT_S)
        self._endpoints = endpoints

    def connect(self) -> None:
        self.sock = _connect(self._endpoints)


class _PinnedTLS(http.client.HTTPSConnection):
    """HTTPS to one of ``endpoints``; SNI and the certificate check use the URL's host."""

    def __init__(
        self, host: str, port: int | None, endpoints: Sequence[Endpoint], tls: ssl.SSLContext
    ) -> None:
        super().__init__(host, port, timeout=POST_TIMEOUT_S, context=tls)
        self._endpoints = endpoints
        self._tls = tls

    def connect(self) -> None:
        self.sock = self._tls.wrap_socket(_connect(self._endpoints), server_hostname=self.host)


def _connect(endpoints: Sequence[Endpoint]) -> socket.socket:
    failures = []
    for endpoint in endpoints:
        sock = socket.socket(endpoint.family, socket.SOCK_STREAM)
        sock.settimeout(POST_TIMEOUT_S)
        try:
            sock.connect(endpoint.sockaddr)
        except OSError as exc:
            sock.close()
            failures.append(f"{endpoint.address}: {exc.strerror or exc}")
            continue
        return sock
    raise OSError(f"cannot connect ({'; '.join(failures)})")


@dataclass(frozen=True)
class WebhookStats:
    sent: int  # records the receiver took
    dropped: int  # records the full queue let go
    pending: int  # records waiting
    failures: int  # POSTs that failed (each retried)
    last_error: str | None  # why the last POST failed, until one works


Post = Callable[[str, bytes, HostRules, dict[str, str]], None]


class WebhookSender:
    """The webhook of one stream: :meth:`push` from any thread, never waiting."""

    def __init__(
        self,
        stream_id: str,
        url: str,
        *,
        batch: int,
        interval_s: float,
        capacity: int,
        hosts: HostRules,
        post: Post = post_json,
    ) -> None:
        self.stream_id = stream_id
        self.url = url
        self.batch = max(1, batch)
        self.interval_s = interval_s
        self.capacity = max(1, capacity)
        self._hosts = hosts
        self._post = post
        self._lock = threading.Lock()
        self._queue: deque[dict[str, Any]] = deque()
        self._stop = threading.Event()
        self._sent = self._dropped = self._failures = 0
        self._last_error: str | None = None
        self._headers = {
            "Content-Type": "application/json",
            "User-Agent": f"vidshard/{__version__}",
            "X-Vidshard-Stream": stream_id,
        }
        self._thread = threading.Thread(
            target=self._run, name=f"webhook-{stream_id[:12]}", daemon=True
        )

    def start(self) -> WebhookSender:
        self._thread.start()
        return self

    def push(self, record: dict[str, Any]) -> None:
        with self._lock:
            if len(self._queue) >= self.capacity:
                self._queue.popleft()
                self._dropped += 1
            self._queue.append(record)

    def stats(self) -> WebhookStats:
        with self._lock:
            return WebhookStats(
                self._sent, self._dropped, len(self._queue), self._failures, self._last_error
            )

    def close(self, wait_s: float = 0.5) -> None:
        """Stop; what is queued gets one last try, on the webhook's own thread."""
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(wait_s)

    def _run(self) -> None:
        delay_s = 0.0
        while not self._stop.wait(delay_s or self.interval_s):
            delay_s = 0.0 if self._flush() else min(MAX_RETRY_S, delay_s * 2 or FIRST_RETRY_S)
        self._flush()

    def _flush(self) -> bool:
        """POST what is queued, a batch at a time; False when a POST failed."""
        while True:
            with self._lock:
                batch = [self._queue.popleft() for _ in range(min(self.batch, len(self._queue)))]
            if not batch:
                return True
            try:
                self._post(self.url, json.dumps(batch).encode(), self._hosts, self._headers)
            except Exception as exc:  # the receiver's trouble: never the stream's
                self._failed(batch, exc)
                return False
            with self._lock:
                self._sent += len(batch)
                self._last_error = None

    def _failed(self, batch: list[dict[str, Any]], exc: Exception) -> None:
        reason = scrub(str(exc) or type(exc).__name__, self.url)
        with self._lock:
            kept = batch + list(self._queue)
            over = max(0, len(kept) - self.capacity)
            self._dropped += over
            self._queue = deque(kept[over:])
            self._failures += 1
            first = self._last_error is None
            self._last_error = reason
        if first:
            logger.warning("stream %s: webhook POST failed (%s); retrying", self.stream_id, reason)
        else:
            logger.debug("stream %s: webhook POST failed again (%s)", self.stream_id, reason)
