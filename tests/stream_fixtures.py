"""Live sources on loopback for the stream tests, and fake detectors for the host.

:class:`ClipServer` is an HTTP server on 127.0.0.1 that answers each connection as its
``plan`` says: send a clip (an MPEG-TS file, a stream that needs no seeking) and close
(the source ends), send part of it and then nothing (a stall), or accept and say nothing
(a camera that hangs). :data:`DETECTORS` is the source of a ``file.py`` with fake
detector classes for ``DetectRecipe(detector="class", weights="file.py:Class")``.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Literal

from clips import ClipSpec, write_clip
from vidshard.detection.pipeline import DetectRecipe
from vidshard.streams.options import StreamOptions
from vidshard.streams.types import StreamSpec

Behaviour = Literal["serve", "stall", "silent"]

DETECTORS = '''
import threading
import time

import numpy as np
from vidshard.detection import Detections


class Counting:
    """One box in the middle of each frame; records every call's frame count and size."""

    name = "counting"
    delay_s = 0.0

    def __init__(self):
        self.calls = []  # (frames, height, width) per call
        self.lock = threading.Lock()

    def load(self, device):
        self.device = device

    def detect(self, frames):
        if self.delay_s:
            time.sleep(self.delay_s)
        n, h, w = frames.shape[:3]
        with self.lock:
            self.calls.append((n, h, w))
        box = np.array([[w / 4, h / 4, 3 * w / 4, 3 * h / 4]], np.float32)
        return [
            Detections(box, np.full(1, 0.9, np.float32), np.zeros(1, np.int32), ("thing",))
            for _ in range(n)
        ]


class Slow(Counting):
    """0.3 s a call: slower than a 25 fps stream."""

    delay_s = 0.3


class Broken(Counting):
    """Fails every call."""

    def detect(self, frames):
        raise RuntimeError("this model is broken")


class Flaky(Counting):
    """Fails every other call."""

    tries = 0

    def detect(self, frames):
        with self.lock:
            self.tries += 1
            fail = self.tries % 2 == 1
        if fail:
            raise RuntimeError("a bad batch")
        return Counting.detect(self, frames)


class Hanging(Counting):
    """Never returns (until the test lets it go): a detector stuck in a call."""

    release = threading.Event()

    def detect(self, frames):
        Hanging.release.wait(120)
        return Counting.detect(self, frames)


class Short(Counting):
    """Returns one result too few."""

    def detect(self, frames):
        return Counting.detect(self, frames)[:-1]
'''


def write_detectors(folder: Path) -> Path:
    path = folder / "stream_detectors.py"
    path.write_text(DETECTORS)
    return path


def write_ts_clip(path: Path, size_wh: tuple[int, int] = (160, 120), frames: int = 50) -> Path:
    """An MPEG-TS clip (25 fps, keyframe every 5 frames): streamable over HTTP."""
    return write_clip(path, ClipSpec(size_wh=size_wh, frames=frames, gop=5))


@dataclass
class ClipServer:
    """HTTP on 127.0.0.1: connection ``n`` (from 0) is answered as ``plan(n)`` says.

    ``serve``: the clip's bytes (at ``rate_bytes_s`` if set), then the connection closes;
    ``stall``: the first ``stall_after_bytes`` bytes, then silence until :meth:`close`;
    ``silent``: the request is read and nothing is sent.
    """

    clip: Path
    plan: Callable[[int], Behaviour] = lambda n: "serve"
    rate_bytes_s: float | None = None
    stall_after_bytes: int = 20_000
    connections: int = 0
    _closing: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        owner = self
        data = self.clip.read_bytes()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                with owner._lock:
                    n = owner.connections
                    owner.connections += 1
                behaviour = owner.plan(n)
                if behaviour == "silent":
                    owner._closing.wait()
                    return
                self.send_response(200)
                self.send_header("Content-Type", "video/mp2t")
                body = data[: owner.stall_after_bytes] if behaviour == "stall" else data
                if behaviour == "serve":
                    self.send_header("Content-Length", str(len(body)))  # a clean end
                self.end_headers()
                try:
                    owner._send(self.wfile, body)
                except OSError:
                    return
                if behaviour == "stall":
                    owner._closing.wait()

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def _send(self, out: object, body: bytes) -> None:
        chunk = 4096
        write = out.write  # type: ignore[attr-defined]
        for start in range(0, len(body), chunk):
            if self._closing.is_set():
                return
            write(body[start : start + chunk])
            if self.rate_bytes_s:
                self._closing.wait(chunk / self.rate_bytes_s)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/clip.ts"

    def close(self) -> None:
        self._closing.set()
        self._server.shutdown()
        self._server.server_close()


class SilentTcpServer:
    """Accepts connections on 127.0.0.1 and never sends a byte; with ``hang_up`` it
    closes each one at once instead. ``accepted_at``: when each came (monotonic s)."""

    def __init__(self, *, hang_up: bool = False) -> None:
        self.hang_up = hang_up
        self.accepted_at: list[float] = []
        self._socket = socket.socket()
        self._socket.bind(("127.0.0.1", 0))
        self._socket.listen(16)
        self.port = self._socket.getsockname()[1]
        self._held: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._socket.accept()
            except OSError:
                return
            self.accepted_at.append(time.monotonic())
            if self.hang_up:
                conn.close()
            else:
                self._held.append(conn)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._socket.shutdown(socket.SHUT_RDWR)  # wakes the thread blocked in accept
        self._socket.close()
        for conn in self._held:
            conn.close()


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def stream_spec(
    url: str | Path,
    *,
    stream_id: str = "cam",
    recipe: DetectRecipe | None = None,
    output_dir: Path | None = None,
    **options: object,
) -> StreamSpec:
    """A spec with ``options`` over the defaults (a model that is never built)."""
    return StreamSpec(
        stream_id=stream_id,
        url=str(url),
        options=StreamOptions(model="unused.py:Unused", **options),  # type: ignore[arg-type]
        recipe=recipe or DetectRecipe(detector="class", weights="unused.py:Unused"),
        output_dir=output_dir,
    )


def wait_for(
    condition: Callable[[], object], timeout_s: float = 30.0, step_s: float = 0.02
) -> None:
    """Poll ``condition`` until it is true; AssertionError after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {timeout_s} s")
        time.sleep(step_s)
