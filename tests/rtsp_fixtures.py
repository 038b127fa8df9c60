"""A real RTSP server for the tests: ``tests/rtsp_server.py`` (Debian's GStreamer RTSP
server, run with ``/usr/bin/python3``) as a subprocess on 127.0.0.1, its clips looped.

``running_rtsp_server({"cam": path}, tmp_path)`` starts one on a free port and stops it at
the end; the :class:`RtspServer` gives the URLs, ``kill()`` (SIGKILL: a crash),
``restart()`` (on the same port) and ``stop()``. ``rtsp_server_fixture()`` makes a
module-scoped fixture that serves ``/car`` (the bundled ``examples/car-detection.mp4``,
768x432 at 12.5 fps, 377 frames) and ``/squares`` (:data:`SQUARES_FRAMES` frames of moving
squares, 320x240 at 25 fps, see :mod:`stream_clips`); a test that kills or restarts a
server starts its own.
Without the GStreamer bindings in ``/usr/bin/python3`` both skip, saying what is missing.

    from rtsp_fixtures import open_rtsp, rtsp_server_fixture

    rtsp_server = rtsp_server_fixture()

    def test_reads(rtsp_server):
        with open_rtsp(rtsp_server.url("squares")) as container:
            ...
"""

from __future__ import annotations

import contextlib
import functools
import os
import selectors
import signal
import subprocess
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import av
import pytest

from helpers import EXAMPLES
from stream_clips import write_squares_stream

SYSTEM_PYTHON = "/usr/bin/python3"
SERVER_SCRIPT = Path(__file__).resolve().with_name("rtsp_server.py")
CAN_NOT_LISTEN = 3  # the server's exit status when the port is taken
SQUARES_FRAMES = 50  # 2 s at 25 fps: a loop point every 2 s
SQUARES_RATE = 25
CAR_FRAMES = 377


@functools.cache
def rtsp_server_missing() -> str | None:
    """Why the RTSP server cannot run on this machine, or None when it can."""
    if not Path(SYSTEM_PYTHON).exists():
        return f"{SYSTEM_PYTHON} is missing (Debian's python3 runs the RTSP test server)"
    result = subprocess.run(
        [SYSTEM_PYTHON, str(SERVER_SCRIPT), "--check"],
        capture_output=True,
        text=True,
        env=server_env(),
        timeout=60,
        check=False,
    )
    if result.returncode == 0:
        return None
    lines = "; ".join(
        line.removeprefix("missing: ") for line in result.stderr.splitlines() if line.strip()
    )
    return f"no RTSP test server: {SYSTEM_PYTHON} lacks {lines or result.returncode}"


def require_rtsp_server() -> None:
    """Skip the test when the RTSP server cannot run here."""
    reason = rtsp_server_missing()
    if reason is not None:
        pytest.skip(reason)


def server_env() -> dict[str, str]:
    """This environment without what points a Python at vidshard's interpreter."""
    drop = {"PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP"}
    return {key: value for key, value in os.environ.items() if key not in drop}


@dataclass
class RtspServer:
    """One ``rtsp_server.py`` process serving ``clips`` (mount name -> file)."""

    clips: dict[str, Path]
    log: Path
    port: int = 0  # 0 until started: the system picks it the first time
    keyframe_s: float = 0.5
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def url(self, mount: str) -> str:
        if mount not in self.clips:
            raise KeyError(f"no mount /{mount}; this server has {sorted(self.clips)}")
        return f"rtsp://127.0.0.1:{self.port}/{mount}"

    @property
    def urls(self) -> dict[str, str]:
        return {mount: self.url(mount) for mount in self.clips}

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self, ready_timeout_s: float = 60.0) -> None:
        """Start the server (on ``port``, or a free one); return once it prints ready. On
        a given port, retry while the port is still taken (a server just killed)."""
        if self.alive:
            raise RuntimeError(f"the RTSP server on port {self.port} is already running")
        deadline = time.monotonic() + ready_timeout_s
        while True:
            status = self._launch(deadline)
            if status is None:
                return
            if status != CAN_NOT_LISTEN or not self.port or time.monotonic() > deadline:
                raise RuntimeError(
                    f"the RTSP server exited ({status}) before it was ready:\n{self._log_tail()}"
                )
            time.sleep(0.2)

    def kill(self) -> None:
        """SIGKILL the server: a crash, no goodbye to its clients."""
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(30)
        self._close_pipes()

    def restart(self, ready_timeout_s: float = 60.0) -> None:
        """Start it again on the same port (killing it first if it still runs)."""
        if self.alive:
            self.kill()
        self.start(ready_timeout_s)

    def stop(self) -> int | None:
        """SIGTERM: a clean stop; returns the exit status (None: it was never started)."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()
        self._close_pipes()
        return self.process.returncode

    def _launch(self, deadline: float) -> int | None:
        """Run the server; None once it is ready, else its exit status."""
        command = [
            SYSTEM_PYTHON,
            str(SERVER_SCRIPT),
            "--port",
            str(self.port),
            "--keyframe-s",
            str(self.keyframe_s),
            "--exit-with-stdin",
            *(f"{mount}={path}" for mount, path in self.clips.items()),
        ]
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                command,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                env=server_env(),
                start_new_session=True,
            )
        line = _read_line(self.process, deadline)
        if line.startswith("ready "):
            first_url = line.split()[1]
            self.port = int(first_url.split("/")[2].rsplit(":", 1)[1])
            return None
        if self.process.poll() is None:
            self.kill()
            raise RuntimeError(f"the RTSP server was not ready in time:\n{self._log_tail()}")
        self._close_pipes()
        return self.process.returncode

    def _close_pipes(self) -> None:
        assert self.process is not None
        for pipe in (self.process.stdin, self.process.stdout):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()

    def _log_tail(self) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-20:])


def _read_line(process: subprocess.Popen[bytes], deadline: float) -> str:
    """The first line the process prints, or "" when it exits or the deadline passes."""
    assert process.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        buffer = b""
        while b"\n" not in buffer:
            remaining_s = deadline - time.monotonic()
            if remaining_s <= 0 or not selector.select(remaining_s):
                return ""
            chunk = os.read(process.stdout.fileno(), 4096)
            if not chunk:
                return ""
            buffer += chunk
    return buffer.split(b"\n", 1)[0].decode(errors="replace")


@contextlib.contextmanager
def running_rtsp_server(
    clips: Mapping[str, Path], log_dir: Path, *, keyframe_s: float = 0.5
) -> Iterator[RtspServer]:
    """An RTSP server for ``clips`` (skips the test where it cannot run), stopped at the end."""
    require_rtsp_server()
    log = log_dir / f"rtsp-server-{'-'.join(clips)}.log"
    server = RtspServer(dict(clips), log, keyframe_s=keyframe_s)
    server.start()
    try:
        yield server
    finally:
        if server.stop() is None:
            server.kill()


def squares_clip(path: Path) -> Path:
    """The ``/squares`` clip: :data:`SQUARES_FRAMES` frames, 320x240, 25 fps."""
    return write_squares_stream(path, frames=SQUARES_FRAMES, rate=SQUARES_RATE)


def rtsp_server_fixture(name: str = "rtsp_server") -> Any:
    """A module-scoped fixture ``name``: an :class:`RtspServer` with ``/car`` and
    ``/squares``, shared by the module's tests (it skips where the server cannot run)."""

    @pytest.fixture(scope="module", name=name)
    def fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RtspServer]:
        require_rtsp_server()
        root = tmp_path_factory.mktemp("rtsp")
        clips = {
            "car": EXAMPLES / "car-detection.mp4",
            "squares": squares_clip(root / "squares.mp4"),
        }
        with running_rtsp_server(clips, root) as server:
            yield server

    return fixture


def open_rtsp(
    url: str,
    *,
    transport: str = "tcp",
    open_timeout_s: float = 20.0,
    read_timeout_s: float = 10.0,
) -> av.container.InputContainer:
    """Open ``url`` with PyAV the way a stream reader does (small probe, quick start)."""
    options = {"rtsp_transport": transport, "analyzeduration": "200000", "probesize": "65536"}
    return av.open(url, options=options, timeout=(open_timeout_s, read_timeout_s))
