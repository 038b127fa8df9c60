"""A scripted HTTP server on loopback for the download tests: each path answers with a
body, a redirect, a drip or a lie, and every request is recorded with its headers."""

from __future__ import annotations

import contextlib
import datetime
import socket
import socketserver
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Request:
    target: str
    headers: dict[str, str]  # names in lower case
    ended: threading.Event = field(default_factory=threading.Event)
    """Set once the route is done with the connection (finished, or the client left)."""


Route = Callable[[socket.socket, threading.Event], None]


def body(
    data: bytes, *, length: int | None = -1, status: str = "200 OK", chunked: bool = False
) -> Route:
    """``data`` as the body. ``length``: the Content-Length sent (-1: the true one, None:
    none, the body ends when the connection closes); ``chunked``: chunked encoding."""

    def route(sock: socket.socket, stopping: threading.Event) -> None:
        head = [f"HTTP/1.1 {status}", "Content-Type: video/mp4", "Connection: close"]
        if chunked:
            head.append("Transfer-Encoding: chunked")
            payload = b"".join(
                b"%x\r\n%s\r\n" % (len(data[i : i + 4096]), data[i : i + 4096])
                for i in range(0, len(data), 4096)
            )
            payload += b"0\r\n\r\n"
        else:
            if length is not None:
                head.append(f"Content-Length: {len(data) if length == -1 else length}")
            payload = data
        sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode() + payload)

    return route


def redirect(location: str, status: str = "302 Found") -> Route:
    def route(sock: socket.socket, stopping: threading.Event) -> None:
        sock.sendall(
            f"HTTP/1.1 {status}\r\nLocation: {location}\r\nContent-Length: 0\r\n"
            "Connection: close\r\n\r\n".encode()
        )

    return route


def drip(total_bytes: int, interval_s: float, chunk_bytes: int = 1) -> Route:
    """A declared ``total_bytes`` body sent ``chunk_bytes`` every ``interval_s``."""

    def route(sock: socket.socket, stopping: threading.Event) -> None:
        sock.sendall(
            f"HTTP/1.1 200 OK\r\nContent-Length: {total_bytes}\r\n"
            "Connection: close\r\n\r\n".encode()
        )
        sent = 0
        while sent < total_bytes and not stopping.wait(interval_s):
            sock.sendall(b"x" * min(chunk_bytes, total_bytes - sent))  # fails once it left
            sent += chunk_bytes

    return route


def hang() -> Route:
    """Takes the request and never answers."""

    def route(sock: socket.socket, stopping: threading.Event) -> None:
        sock.settimeout(0.2)
        while not stopping.is_set():  # until the client closes its end
            with contextlib.suppress(TimeoutError):
                if not sock.recv(1024):
                    return

    return route


def _not_found(sock: socket.socket, stopping: threading.Event) -> None:
    body(b"no such path\n", status="404 Not Found")(sock, stopping)


class ScriptedServer:
    """``with ScriptedServer() as server: server.routes["/a.mp4"] = body(b"...")``."""

    def __init__(self, host: str = "127.0.0.1", tls: ssl.SSLContext | None = None) -> None:
        self.routes: dict[str, Route] = {}
        self.requests: list[Request] = []
        self.stopping = threading.Event()
        owner = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                owner._handle(self.request)

        self._tls = tls
        self._server = socketserver.ThreadingTCPServer((host, 0), Handler)
        self._server.daemon_threads = True
        self.host = host
        self.port: int = self._server.server_address[1]

    def url(self, path: str, host: str | None = None) -> str:
        scheme = "https" if self._tls is not None else "http"
        return f"{scheme}://{host or self.host}:{self.port}{path}"

    def __enter__(self) -> ScriptedServer:
        threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        self._server.shutdown()
        self._server.server_close()

    def wait_for_request(self, target: str, timeout_s: float = 30) -> Request:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for request in self.requests:
                if request.target == target:
                    return request
            time.sleep(0.05)
        raise AssertionError(f"no request for {target} in {timeout_s} s: {self.requests}")

    def _handle(self, sock: socket.socket) -> None:
        sock.settimeout(10)
        try:
            if self._tls is not None:
                sock = self._tls.wrap_socket(sock, server_side=True)
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = sock.recv(4096)
                if not chunk:
                    return
                data += chunk
        except OSError:
            return
        lines = data.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
        target = lines[0].split(" ")[1]
        headers = dict(
            (name.strip().lower(), value.strip())
            for name, value in (line.split(":", 1) for line in lines[1:])
        )
        request = Request(target, headers)
        self.requests.append(request)
        try:
            self.routes.get(target.split("?", 1)[0], _not_found)(sock, self.stopping)
        except OSError:
            pass  # the client left
        finally:
            request.ended.set()
            with contextlib.suppress(OSError):
                sock.close()


def make_tls(folder: Path, names: list[str]) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """(a server context with a certificate for ``names``, a client context that trusts
    only the test CA that signed it). Needs ``cryptography``."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)

    def issue(subject: str, key, issuer_name, issuer_key, ca: bool, sans=None):  # type: ignore[no-untyped-def]
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(issuer_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        return builder.sign(issuer_key, hashes.SHA256())

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "vidshard test CA")])
    ca = issue("vidshard test CA", ca_key, ca_name, ca_key, True)
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    leaf = issue(names[0], leaf_key, ca_name, ca_key, False, [x509.DNSName(n) for n in names])
    pem = serialization.Encoding.PEM
    (folder / "ca.pem").write_bytes(ca.public_bytes(pem))
    (folder / "leaf.pem").write_bytes(leaf.public_bytes(pem))
    (folder / "leaf.key").write_bytes(
        leaf_key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(folder / "leaf.pem", folder / "leaf.key")
    client = ssl.create_default_context(cafile=str(folder / "ca.pem"))
    return server, client
