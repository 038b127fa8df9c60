"""The node's side of one Ray slot: an actor that starts the slot's worker process there.

The worker is the one the local executor runs (``boot.launch``: vidshard's entry point,
the visibility variables set before any import), started on the actor's node with the
accelerator Ray gave the actor. The actor relays the worker's messages, as bytes it
never unpickles, between the worker's pipe and one TCP connection from the
coordinator (a one-time listener; the coordinator answers an HMAC challenge with a
fresh key that Ray carried), so the coordinator's slot code reads
a remote worker as it reads a local one: the connection ends when the worker ends.

This module is imported on the nodes by Ray; it imports Ray only inside methods.
"""

from __future__ import annotations

import contextlib
import hmac
import os
import secrets
import socket
import tempfile
import threading
import time
from dataclasses import replace
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from vidshard.devices.types import DeviceSlot

ACCEPT_TIMEOUT_S = 60.0  # the coordinator connects right after start(); this is generous
HANDSHAKE_TIMEOUT_S = 10.0  # a connection that does not answer the challenge is dropped


class SlotHost:
    """One slot's actor (wrapped by ``ray.remote`` in the coordinator; threaded, so a
    blocking :meth:`wait_exit` leaves the other methods free)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._generation = 0
        self._process: Any = None  # boot.WorkerProcess of the current generation
        self._exited: dict[int, threading.Event] = {}
        self._codes: dict[int, int | None] = {}
        self._monitor: Any = None

    def describe(self) -> dict[str, Any]:
        """Where this actor runs and what Ray gave it."""
        import ray

        context = ray.get_runtime_context()
        accelerators = {k: list(v) for k, v in context.get_accelerator_ids().items()}
        return {
            "node_id": context.get_node_id(),
            "address": ray.util.get_node_ip_address(),
            "hostname": socket.gethostname(),
            "pid": os.getpid(),
            "accelerators": accelerators,
        }

    def start(self, slot: DeviceSlot, sys_path: list[str]) -> tuple[Any, bytes, int, int]:
        """Start the slot's worker here (ending the one before); the listener's address
        and key for the coordinator, the worker's pid, and its generation."""
        from vidshard.media.source import CLUSTER_NODE_VARIABLE

        from .boot import launch

        self.kill_worker()
        local = _local_slot(slot, self.describe()["accelerators"])
        os.environ[CLUSTER_NODE_VARIABLE] = _node_address()  # the worker inherits it
        key = secrets.token_bytes(32)
        listener = _listen(_node_address())
        try:
            process, pipe = launch(local, sys_path=_merged_path(sys_path), name=slot.label)
        except BaseException:
            listener.close()
            raise
        with self._lock:
            self._generation += 1
            generation = self._generation
            self._process = process
            self._exited[generation] = threading.Event()
        threading.Thread(
            target=self._relay,
            args=(listener, key, pipe, process, generation),
            name=f"relay-{slot.label}",
            daemon=True,
        ).start()
        return listener.getsockname()[:2], key, process.pid, generation

    def _relay(
        self, listener: socket.socket, key: bytes, pipe: Connection, process: Any, generation: int
    ) -> None:
        """Accept the coordinator, pump both ways until either side ends, then end the
        worker and record its exit code."""
        try:
            conn = _accept(listener, key, time.monotonic() + ACCEPT_TIMEOUT_S)
            listener.close()
            if conn is not None:
                up = threading.Thread(target=_pump, args=(conn, pipe), daemon=True)
                up.start()
                _pump(pipe, conn)  # until the worker exits or the coordinator hangs up
                up.join(10.0)
                conn.close()
        finally:
            listener.close()
            pipe.close()
            if process.is_alive():
                process.kill()
            process.join(10.0)
            with self._lock:
                self._codes[generation] = process.exitcode
                self._exited[generation].set()

    def wait_exit(self, generation: int) -> int | None:
        """Block until that generation's worker has exited; its exit code."""
        with self._lock:
            event = self._exited.get(generation)
        if event is None:
            return None
        event.wait()
        with self._lock:
            return self._codes.pop(generation, None)

    def kill_worker(self, generation: int | None = None) -> None:
        """End the current worker (``generation``: only if it is still that one)."""
        with self._lock:
            process = self._process
            if process is None or (generation is not None and generation != self._generation):
                return
            self._process = None
        process.kill()
        process.join(10.0)

    def check_paths(
        self, read: list[tuple[str, int | None]], write: list[tuple[str, str, str]]
    ) -> list[str]:
        """What this node cannot do: read each ``(path, size)`` (the same size as the
        coordinator sees), find each ``(folder, marker name, marker text)`` the
        coordinator wrote (the same folder, not one of the same name), and write there."""
        problems = []
        for path, size in read:
            problems += _read_problem(path, size)
        for folder, marker, text in write:
            problems += _write_problem(folder, marker, text)
        return problems

    def reading(self, kind: str) -> list[Any]:
        """This node's readings of the devices this actor holds (``kind``)."""
        from vidshard.devices.monitor import DeviceMonitor

        if self._monitor is None:
            self._monitor = DeviceMonitor()
        mine = {int(i) for i in self.describe()["accelerators"].get(_RAY_KIND.get(kind, ""), [])}
        return [
            status
            for status in self._monitor.snapshot()
            if status.device.kind == kind and (kind == "cpu" or status.device.index in mine)
        ]


_RAY_KIND = {"cuda": "GPU", "npu": "NPU"}


def _local_slot(slot: DeviceSlot, accelerators: dict[str, list[str]]) -> DeviceSlot:
    """The slot as this node sees it: the accelerator Ray gave the actor is the one its
    worker sees (its label stays the cluster's, as the coordinator names it)."""
    ids = accelerators.get(_RAY_KIND.get(slot.device.kind, ""), [])
    if slot.device.kind == "cpu" or not ids:
        return slot
    return replace(slot, visible_id=str(ids[0]))


def _merged_path(coordinator: list[str]) -> list[str]:
    """This node's import path, then the coordinator's entries it lacks (a user's model
    on shared storage imports as it does there). The node's own first: its Python's
    packages (a CUDA torch, say) are never shadowed by the coordinator's."""
    import sys

    seen: set[str] = set()
    merged = []
    for entry in [*sys.path, *coordinator]:
        if entry not in seen:
            seen.add(entry)
            merged.append(entry)
    return merged


def _node_address() -> str:
    import ray

    return str(ray.util.get_node_ip_address())


def _listen(address: str) -> socket.socket:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    return socket.create_server((address, 0), family=family)


def _accept(listener: socket.socket, key: bytes, deadline: float) -> Connection | None:
    """The coordinator's connection: the first one, before ``deadline``, that answers a
    fresh challenge with ``key`` (see :func:`connect`); others are dropped."""
    while (left := deadline - time.monotonic()) > 0:
        listener.settimeout(left)
        try:
            sock, _ = listener.accept()
        except OSError:  # the deadline passed, or the listener was closed
            return None
        try:
            sock.settimeout(HANDSHAKE_TIMEOUT_S)
            challenge = secrets.token_bytes(32)
            sock.sendall(challenge)
            answer = _read_exactly(sock, 32)
            if not hmac.compare_digest(answer, hmac.digest(key, challenge, "sha256")):
                sock.close()
                continue
            sock.sendall(b"\x01")
            sock.settimeout(None)
            return Connection(sock.detach())
        except OSError:
            sock.close()
    return None


def connect(address: tuple[str, int], key: bytes, timeout_s: float) -> Connection:
    """The coordinator's end of a slot's connection: answer the actor's challenge with
    ``key``; every step within ``timeout_s``. Raises OSError on any failure."""
    sock = socket.create_connection(address, timeout=timeout_s)
    try:
        challenge = _read_exactly(sock, 32)
        sock.sendall(hmac.digest(key, challenge, "sha256"))
        if _read_exactly(sock, 1) != b"\x01":
            raise ConnectionError("the slot's actor refused the key")
        sock.settimeout(None)
        return Connection(sock.detach())
    except BaseException:
        sock.close()
        raise


def _read_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError("closed during the handshake")
        data += chunk
    return data


def _pump(source: Connection, target: Connection) -> None:
    """Copy messages, as bytes, until either end closes; then hang up both, which
    ends the pump going the other way too."""
    with contextlib.suppress(EOFError, OSError):
        while True:
            target.send_bytes(source.recv_bytes())
    _hang_up(source)
    _hang_up(target)


def _hang_up(conn: Connection) -> None:
    """Shut a connection's socket down without closing it: a thread blocked reading it
    wakes up with end of file, and so does the process at the other end."""
    with contextlib.suppress(OSError, ValueError):
        dup = socket.socket(fileno=os.dup(conn.fileno()))
        with dup:
            dup.shutdown(socket.SHUT_RDWR)


def _read_problem(path: str, size: int | None) -> list[str]:
    if os.path.isdir(path):  # a model folder
        try:
            os.listdir(path)
        except OSError as exc:
            return [f"cannot read {path} ({exc.strerror or exc})"]
        return []
    try:
        with open(path, "rb") as handle:
            found = os.fstat(handle.fileno()).st_size
    except OSError as exc:
        return [f"cannot read {path} ({exc.strerror or exc})"]
    if size is not None and found != size:
        return [f"sees another {path} ({found} bytes; the coordinator sees {size})"]
    return []


def _write_problem(folder: str, marker: str, text: str) -> list[str]:
    try:
        seen = (Path(folder) / marker).read_text(encoding="utf-8")
    except OSError:
        seen = None
    if seen != text:
        return [f"cannot see the coordinator's {folder} (not the same storage)"]
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".vidshard-probe-"):
            pass
    except OSError as exc:
        return [f"cannot write in {folder} ({exc.strerror or exc})"]
    return []
