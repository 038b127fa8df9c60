"""The node side of a Ray slot, without Ray: the handshake, the storage checks, the slot
as its node sees it."""

from __future__ import annotations

import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from vidshard.devices.types import Device, DeviceSlot
from vidshard.executors import ray_host
from vidshard.executors.ray_host import _accept, _listen, _local_slot, _merged_path, connect

KEY = b"k" * 32


def accepting(deadline_s: float = 20.0) -> tuple[socket.socket, dict[str, Any], threading.Thread]:
    listener = _listen("127.0.0.1")
    got: dict[str, Any] = {}

    def run() -> None:
        got["conn"] = _accept(listener, KEY, time.monotonic() + deadline_s)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return listener, got, thread


def test_a_wrong_key_is_dropped_and_the_coordinator_still_gets_in() -> None:
    listener, got, thread = accepting()
    address = listener.getsockname()[:2]
    with pytest.raises(ConnectionError):
        connect(address, b"x" * 32, 5.0)
    conn = connect(address, KEY, 5.0)
    thread.join(10)
    got["conn"].send_bytes(b"hello")
    assert conn.recv_bytes() == b"hello"
    conn.send_bytes(b"back")
    assert got["conn"].recv_bytes() == b"back"


def test_a_silent_connection_is_dropped_after_the_handshake_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(ray_host, "HANDSHAKE_TIMEOUT_S", 0.3)
    listener, got, thread = accepting()
    address = listener.getsockname()[:2]
    silent = socket.create_connection(address)  # connects, never answers
    try:
        conn = connect(address, KEY, 10.0)
        thread.join(10)
        assert got["conn"] is not None
        conn.close()
    finally:
        silent.close()


def test_no_coordinator_before_the_deadline_ends_the_wait() -> None:
    _listener, got, thread = accepting(deadline_s=0.3)
    thread.join(10)
    assert not thread.is_alive() and got["conn"] is None


def test_the_storage_checks(tmp_path: Path) -> None:
    clip = tmp_path / "in.mp4"
    clip.write_bytes(b"12345")
    assert ray_host._read_problem(str(clip), 5) == []
    assert "sees another" in ray_host._read_problem(str(clip), 6)[0]
    assert "cannot read" in ray_host._read_problem(str(tmp_path / "gone.mp4"), None)[0]
    assert ray_host._read_problem(str(tmp_path), None) == []  # a model folder
    (tmp_path / ".marker").write_text("token")
    assert ray_host._write_problem(str(tmp_path), ".marker", "token") == []
    problem = ray_host._write_problem(str(tmp_path), ".marker", "another")
    assert "not the same storage" in problem[0]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".vidshard-probe-")]


def test_the_slot_sees_the_accelerator_ray_gave_and_keeps_its_label() -> None:
    slot = DeviceSlot(3, Device("cuda", 1, name="GPU", node="10.0.0.8"))
    local = _local_slot(slot, {"GPU": ["GPU-5f3a-uuid"]})
    assert local.label == "10.0.0.8/cuda:1#3"
    assert local.worker_env()["CUDA_VISIBLE_DEVICES"] == "GPU-5f3a-uuid"
    npu = DeviceSlot(0, Device("npu", 0, node="10.0.0.8"))
    assert _local_slot(npu, {"NPU": ["6"]}).worker_env()["ASCEND_RT_VISIBLE_DEVICES"] == "6"
    cpu = DeviceSlot(1, Device("cpu", node="10.0.0.8"), cpu_threads=2)
    assert _local_slot(cpu, {}) == cpu


def test_the_node_s_import_path_comes_first() -> None:
    own = list(dict.fromkeys(sys.path))
    merged = _merged_path(["/shared/code", sys.path[0]])
    assert merged == [*own, "/shared/code"]
