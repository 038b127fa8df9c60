"""Start a real ``vidshard serve`` (uvicorn, its own process) on 127.0.0.1 for tests."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Server:
    url: str
    process: subprocess.Popen[bytes]
    data_dir: Path
    log: Path

    def kill(self) -> None:
        """SIGKILL the server and its workers: a crash, not a clean stop."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> int:
        """SIGTERM: a clean stop; returns the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.process.returncode


def start_server(
    data_dir: Path,
    *args: str,
    env: dict[str, str] | None = None,
    port: int | None = None,
    ready_timeout_s: float = 60.0,
) -> Server:
    """``vidshard serve --data-dir DATA_DIR ARGS`` in a new process group; returns once
    /health answers 200."""
    port = port or free_port()
    log = data_dir.parent / f"{data_dir.name}-server-{port}.log"
    command = [
        sys.executable,
        "-m",
        "vidshard",
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--data-dir",
        str(data_dir),
        *args,
    ]
    with log.open("ab") as out:
        process = subprocess.Popen(
            command,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            start_new_session=True,
        )
    server = Server(f"http://127.0.0.1:{port}", process, data_dir, log)
    deadline = time.monotonic() + ready_timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited ({process.returncode}):\n{log.read_text()}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{server.url}/health", timeout=2).status_code == 200:
                return server
        time.sleep(0.1)
    server.kill()
    raise RuntimeError(f"server not ready in {ready_timeout_s} s:\n{log.read_text()}")


@contextlib.contextmanager
def running_server(data_dir: Path, *args: str, **kwargs: object) -> Iterator[Server]:
    server = start_server(data_dir, *args, **kwargs)  # type: ignore[arg-type]
    try:
        yield server
    finally:
        if server.stop() is None:
            server.kill()
