"""The server's listening socket, bound before anything else starts.

uvicorn binds its port only after the app's startup has run, so a server whose port was
taken would already have opened the store and requeued jobs before it failed. ``vidshard
serve`` binds first with :func:`bind_listener` and hands the socket to uvicorn: a port
that is in use is one line and exit code 2, and nothing has been started or touched.
"""

from __future__ import annotations

import errno
import socket

import psutil

from vidshard.errors import ConfigError


class PortInUse(ConfigError):
    """Another process listens on the address and port."""


def bind_listener(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host:port`` (listening starts in uvicorn), the way uvicorn
    binds one; a one-line :class:`ConfigError` when it cannot be bound."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise _bind_error(host, port, exc) from None
    return sock


def _bind_error(host: str, port: int, exc: OSError) -> ConfigError:
    where = f"port {port} on {host}"
    if isinstance(exc, socket.gaierror):
        return ConfigError(f"cannot listen on {where}: unknown host {host!r}")
    if exc.errno == errno.EADDRINUSE:
        pid = listener_pid(port)
        by = f" (by pid {pid})" if pid is not None else ""
        return PortInUse(f"{where} is in use{by}: stop that server or give another --port")
    if exc.errno == errno.EACCES:
        return ConfigError(f"no permission to listen on {where}: use a port above 1023")
    if exc.errno == errno.EADDRNOTAVAIL:
        return ConfigError(f"cannot listen on {where}: {host} is not an address of this machine")
    return ConfigError(f"cannot listen on {where}: {exc.strerror or exc}")


def listener_pid(port: int) -> int | None:
    """The pid of a process listening on TCP ``port``, when the system tells (it may not
    show other users' processes)."""
    try:
        connections = psutil.net_connections(kind="tcp")
    except (psutil.Error, OSError):
        return None
    for conn in connections:
        listens = conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port
        if listens and conn.pid is not None:
            return int(conn.pid)
    return None
