"""URL inputs of the job service, downloaded safely.

Every hop is checked before anything connects to it: redirects are followed here (at
most :data:`MAX_REDIRECTS`), each ``Location`` taken against the URL it came from and
checked for an allowed scheme and for the host rules on every address its host
resolves to. The connection then goes to an address that was checked (no second look-up,
so DNS rebinding cannot swap it), with the URL's host in the Host header and, for https,
in SNI and the certificate check. A watcher thread stops a transfer that is cancelled,
past its deadline or slower than the minimum rate by shutting its socket down, so the
job's thread is never blocked for long. A partial file never stays.
"""

from __future__ import annotations

import contextlib
import errno
import http.client
import logging
import os
import selectors
import socket
import ssl
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import quote, urljoin, urlsplit

from vidshard import __version__
from vidshard.errors import Cancelled, InputError, VidshardError

from . import security
from .inputs import TooLarge
from .security import Endpoint, HostRules
from .settings import ServiceSettings

logger = logging.getLogger(__name__)

MAX_REDIRECTS = 5
TICK_S = 0.25
"""The longest a download goes without looking at its cancel event, deadline and rate."""
CHUNK_BYTES = 1 << 16
SCHEMES = {"http": 80, "https": 443}
"""The schemes a download speaks, with their default ports."""
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_PATH_SAFE = "/%:@!$&'()*+,;=-._~"
_QUERY_SAFE = _PATH_SAFE + "?"
_HEADERS = {
    "User-Agent": f"vidshard/{__version__}",
    "Accept": "*/*",
    "Accept-Encoding": "identity",
    "Connection": "close",
}


@dataclass(frozen=True)
class DownloadPolicy:
    """Where a URL input may come from, and how big and slow its download may be."""

    schemes: tuple[str, ...]
    hosts: HostRules
    max_bytes: int
    timeout_s: float
    min_bytes_per_s: int
    rate_window_s: float
    connect_timeout_s: float
    read_timeout_s: float
    max_redirects: int = MAX_REDIRECTS
    tls: ssl.SSLContext | None = field(default=None, compare=False)
    """What https certificates are checked against; None: the system's trust store."""

    @classmethod
    def of(cls, settings: ServiceSettings) -> DownloadPolicy:
        return cls(
            schemes=tuple(settings.allowed_url_schemes),
            hosts=HostRules.deny_internal(settings.url_allowed_hosts, "url_allowed_hosts"),
            max_bytes=settings.max_upload_bytes,
            timeout_s=settings.download_timeout_s,
            min_bytes_per_s=settings.download_min_bytes_per_s,
            rate_window_s=settings.download_rate_window_s,
            connect_timeout_s=settings.download_connect_timeout_s,
            read_timeout_s=settings.download_read_timeout_s,
        )

    def check(self, url: str) -> str:
        """``url`` as it is submitted: an allowed scheme this module speaks, and a host
        whose addresses pass the host rules now (every hop is checked again later)."""
        check_scheme(url, self.schemes)
        return security.check_url(url, self.schemes, self.hosts)


def check_scheme(url: str, allowed: tuple[str, ...]) -> None:
    """``url`` well formed with an allowed scheme that a download can speak."""
    security.check_url(url, allowed)
    scheme = urlsplit(url).scheme.lower()
    if scheme not in SCHEMES:
        raise InputError(
            f"URL scheme {scheme!r} is allowed but cannot be downloaded "
            f"(downloads speak {', '.join(SCHEMES)})"
        )


@dataclass
class Pace:
    """A download's deadline and minimum rate as data, on a clock given to it: every
    :meth:`verdict` takes the time and the bytes so far."""

    timeout_s: float
    min_bytes_per_s: int
    window_s: float
    started_s: float
    _marks: deque[tuple[float, int]] = field(default_factory=deque)

    def __post_init__(self) -> None:
        self._marks.append((self.started_s, 0))

    def verdict(self, now_s: float, done_bytes: int) -> str | None:
        """Why the download must stop now, or None."""
        if now_s - self.started_s > self.timeout_s:
            return f"download not finished within {self.timeout_s:g} s ({done_bytes} bytes)"
        self._marks.append((now_s, done_bytes))
        while len(self._marks) > 1 and self._marks[1][0] <= now_s - self.window_s:
            self._marks.popleft()
        then_s, then_bytes = self._marks[0]
        span_s = now_s - then_s
        if not self.min_bytes_per_s or span_s < self.window_s:
            return None
        if done_bytes - then_bytes < self.min_bytes_per_s * span_s:
            return (
                f"download slower than {self.min_bytes_per_s} bytes/s for "
                f"{self.window_s:g} s ({done_bytes - then_bytes} bytes in the last {span_s:.0f} s)"
            )
        return None


class _Transfer:
    """One download's byte count and socket, and the watcher thread that stops it when it
    is cancelled, past its deadline or too slow: the socket is shut down, so a read that
    is blocked ends at once, and :meth:`check` raises the reason."""

    def __init__(self, policy: DownloadPolicy, cancel: threading.Event) -> None:
        self.url = ""
        self.bytes = 0
        self._pace = Pace(
            policy.timeout_s, policy.min_bytes_per_s, policy.rate_window_s, time.monotonic()
        )
        self._cancel = cancel
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._stopped: VidshardError | None = None
        self._done = threading.Event()
        self._watcher = threading.Thread(target=self._watch, name="download-watch", daemon=True)

    def __enter__(self) -> _Transfer:
        self._watcher.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._done.set()

    def attach(self, sock: socket.socket) -> None:
        """The socket the watcher shuts down from now on."""
        with self._lock:
            self._sock = sock
        self.check()

    def check(self) -> None:
        """Raise why the watcher stopped this transfer, if it did."""
        stopped = self._stopped
        if stopped is not None:
            raise type(stopped)(str(stopped))

    def finish(self) -> None:
        """The transfer is whole: the watcher may no longer stop it (unless it already did)."""
        with self._lock:
            self._done.set()
        self.check()

    def _watch(self) -> None:
        while not self._done.is_set():
            self._cancel.wait(TICK_S)
            if self._cancel.is_set():
                self._stop(Cancelled(f"input_url: the download of {self.url} was cancelled"))
                return
            reason = self._pace.verdict(time.monotonic(), self.bytes)
            if reason is not None:
                self._stop(InputError(f"input_url: {self.url}: {reason}"))
                return

    def _stop(self, error: VidshardError) -> None:
        with self._lock:
            if self._done.is_set():
                return
            self._stopped = error
            self._done.set()
            sock = self._sock
        if sock is not None:  # the plain socket's shutdown, also under TLS
            with contextlib.suppress(OSError):
                socket.socket.shutdown(sock, socket.SHUT_RDWR)


def download(url: str, folder: Path, policy: DownloadPolicy, cancel: threading.Event) -> Path:
    """A URL input as a local file in ``folder`` (kept, so a rerun reuses it), at most
    ``policy.max_bytes``; stopped within about :data:`TICK_S` once ``cancel`` is set
    (:class:`~vidshard.errors.Cancelled`). A partial download never stays."""
    name = security.safe_filename(url.rsplit("/", 1)[-1].split("?", maxsplit=1)[0], "input.mp4")
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"input-{name}"
    if target.exists():
        return target
    partial = target.with_name(target.name + ".partial")
    try:
        with _Transfer(policy, cancel) as transfer:
            try:
                response = _open(url, policy, transfer)
                with contextlib.closing(response):
                    _save(response, partial, policy, transfer)
            except (OSError, http.client.HTTPException) as exc:
                transfer.check()  # stopped by the watcher: that is the reason
                raise InputError(
                    f"input_url: cannot download {transfer.url}: {_reason(exc, policy)}"
                ) from exc
            except VidshardError:
                transfer.check()
                raise
            transfer.finish()
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    partial.replace(target)
    logger.info("input_url: downloaded %s (%d bytes)", url, target.stat().st_size)
    return target


def _reason(exc: BaseException, policy: DownloadPolicy) -> str:
    if isinstance(exc, TimeoutError) and not exc.strerror:
        return f"no data for {policy.read_timeout_s:g} s"
    if isinstance(exc, http.client.IncompleteRead):
        return "the connection closed in the middle of the body"
    return (exc.strerror if isinstance(exc, OSError) else None) or str(exc) or type(exc).__name__


def _open(url: str, policy: DownloadPolicy, transfer: _Transfer) -> http.client.HTTPResponse:
    """The 200 response to GET ``url``, redirects followed, every hop checked first."""
    previous = ""
    for hop in range(policy.max_redirects + 1):
        transfer.url = url
        endpoints = _check_hop(url, hop, previous, policy, transfer)
        response = _request(url, endpoints, policy, transfer)
        status = response.status
        if status not in _REDIRECTS:
            if status != 200:
                response.close()
                raise InputError(f"input_url: {url} answered HTTP {status} {response.reason}")
            return response
        location = response.getheader("Location")
        response.close()
        if not location:
            raise InputError(f"input_url: {url} answered HTTP {status} with no Location")
        previous, url = url, urljoin(url, location.strip())
        logger.info("input_url: redirect %d from %s to %s", hop + 1, previous, url)
    raise InputError(f"input_url: more than {policy.max_redirects} redirects (the last to {url})")


def _check_hop(
    url: str, hop: int, previous: str, policy: DownloadPolicy, transfer: _Transfer
) -> list[Endpoint]:
    """The addresses of ``url``'s host, checked: an allowed scheme a download speaks, and
    the host rules on every address the host resolves to now."""
    try:
        check_scheme(url, policy.schemes)
        host = security.url_host(url)
        port = urlsplit(url).port or SCHEMES[urlsplit(url).scheme.lower()]
        endpoints = _resolve(host, port, transfer)
        policy.hosts.check(host, [endpoint.address for endpoint in endpoints])
    except InputError as exc:
        where = "input_url" if hop == 0 else f"input_url: redirect {hop} from {previous} to {url}"
        raise type(exc)(f"{where}: {exc}") from None
    return endpoints


def _resolve(host: str, port: int, transfer: _Transfer) -> list[Endpoint]:
    """:func:`security.resolve` on a helper thread, waited for in ticks, so a slow
    resolver holds up neither a cancel nor the deadline."""
    outcome: list[list[Endpoint] | Exception] = []

    def run() -> None:
        try:
            outcome.append(security.resolve(host, port))
        except Exception as exc:  # handed to the waiting thread
            outcome.append(exc)

    thread = threading.Thread(target=run, name="download-resolve", daemon=True)
    thread.start()
    while thread.is_alive():
        thread.join(TICK_S)
        transfer.check()
    result = outcome[0]
    if isinstance(result, Exception):
        raise result
    return result


def _request(
    url: str, endpoints: list[Endpoint], policy: DownloadPolicy, transfer: _Transfer
) -> http.client.HTTPResponse:
    """GET ``url`` over a connection to one of ``endpoints`` (already checked)."""
    parts = urlsplit(url)
    target = quote(parts.path or "/", safe=_PATH_SAFE)
    if parts.query:
        target += "?" + quote(parts.query, safe=_QUERY_SAFE)
    connection: http.client.HTTPConnection
    if parts.scheme.lower() == "https":
        tls = policy.tls or ssl.create_default_context()
        connection = _PinnedHTTPS(
            security.url_host(url), parts.port, endpoints, policy, transfer, tls
        )
    else:
        connection = _PinnedHTTP(security.url_host(url), parts.port, endpoints, policy, transfer)
    connection.request("GET", target, headers=_HEADERS)
    response = connection.getresponse()
    if connection.sock is not None:  # the response holds the socket until it is closed
        connection.sock.close()
        connection.sock = None
    return response


class _PinnedHTTP(http.client.HTTPConnection):
    """HTTP to an address checked beforehand: ``connect`` never looks the host up again."""

    def __init__(
        self,
        host: str,
        port: int | None,
        endpoints: list[Endpoint],
        policy: DownloadPolicy,
        transfer: _Transfer,
    ) -> None:
        super().__init__(host, port, timeout=policy.read_timeout_s)
        self._endpoints = endpoints
        self._policy = policy
        self._transfer = transfer

    def connect(self) -> None:
        self.sock = _connect(self._endpoints, self._policy, self._transfer)


class _PinnedHTTPS(http.client.HTTPSConnection):
    """HTTPS to an address checked beforehand; SNI and the certificate check use the
    URL's host name."""

    def __init__(
        self,
        host: str,
        port: int | None,
        endpoints: list[Endpoint],
        policy: DownloadPolicy,
        transfer: _Transfer,
        tls: ssl.SSLContext,
    ) -> None:
        super().__init__(host, port, timeout=policy.read_timeout_s, context=tls)
        self._endpoints = endpoints
        self._policy = policy
        self._transfer = transfer
        self._tls = tls

    def connect(self) -> None:
        sock = _connect(self._endpoints, self._policy, self._transfer)
        try:
            wrapped = self._tls.wrap_socket(
                sock, server_hostname=self.host, do_handshake_on_connect=False
            )
        except BaseException:
            sock.close()
            raise
        self.sock = wrapped
        self._transfer.attach(wrapped)  # the watcher can end a handshake that drips
        wrapped.do_handshake()


def _connect(
    endpoints: list[Endpoint], policy: DownloadPolicy, transfer: _Transfer
) -> socket.socket:
    """A socket connected to the first of ``endpoints`` that answers."""
    failures = []
    for endpoint in endpoints:
        sock = socket.socket(endpoint.family, socket.SOCK_STREAM)
        try:
            transfer.attach(sock)
            _connect_within(sock, endpoint.sockaddr, policy.connect_timeout_s, transfer)
        except OSError as exc:
            sock.close()
            failures.append(f"{endpoint.address}: {exc.strerror or exc}")
            continue
        except BaseException:
            sock.close()
            raise
        sock.settimeout(policy.read_timeout_s)
        return sock
    transfer.check()
    raise InputError(
        f"input_url: cannot download {transfer.url}: cannot connect ({'; '.join(failures)})"
    )


def _connect_within(
    sock: socket.socket, sockaddr: tuple[Any, ...], timeout_s: float, transfer: _Transfer
) -> None:
    """``sock.connect(sockaddr)``, waited for in ticks so that a cancel ends it."""
    sock.setblocking(False)
    code = sock.connect_ex(sockaddr)
    deadline_s = time.monotonic() + timeout_s
    with selectors.DefaultSelector() as selector:
        selector.register(sock, selectors.EVENT_WRITE)
        while code in (errno.EINPROGRESS, errno.EWOULDBLOCK, errno.EALREADY):
            transfer.check()
            left_s = deadline_s - time.monotonic()
            if left_s <= 0:
                raise TimeoutError(errno.ETIMEDOUT, f"no answer in {timeout_s:g} s")
            if selector.select(min(TICK_S, left_s)):
                code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    if code:
        raise OSError(code, os.strerror(code))


def _save(
    response: http.client.HTTPResponse, partial: Path, policy: DownloadPolicy, transfer: _Transfer
) -> None:
    """The body into ``partial``: at most ``policy.max_bytes``, and all it declared."""
    declared = response.length  # Content-Length, None when chunked or absent
    if declared is not None and declared > policy.max_bytes:
        raise TooLarge(
            f"input_url: {transfer.url} declares {declared} bytes, over the limit of "
            f"{policy.max_bytes} (max_upload_bytes)"
        )
    with partial.open("wb") as out:
        while chunk := response.read1(CHUNK_BYTES):
            transfer.bytes += len(chunk)
            if transfer.bytes > policy.max_bytes:
                raise TooLarge(
                    f"input_url: {transfer.url} sends more than {policy.max_bytes} bytes "
                    "(max_upload_bytes)"
                )
            out.write(chunk)
            transfer.check()
    transfer.check()
    if declared is not None and transfer.bytes < declared:
        raise InputError(
            f"input_url: {transfer.url} ended after {transfer.bytes} of the {declared} "
            "bytes it declared"
        )
