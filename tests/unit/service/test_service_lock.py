"""The data dir lock and the listening socket that ``vidshard serve`` claims before it
touches anything."""

import multiprocessing
import os
import socket
from pathlib import Path

import pytest

from vidshard.errors import ConfigError
from vidshard.service.listen import PortInUse, bind_listener, listener_pid
from vidshard.service.lock import LOCK_FILE, DataDirInUse, DataDirLock


def test_the_lock_is_exclusive_and_names_its_holder(tmp_path: Path):
    data_dir = tmp_path / "data"  # made by the lock
    first = DataDirLock(data_dir)
    first.acquire()
    assert first.held and (data_dir / LOCK_FILE).read_text() == f"{os.getpid()}\n"
    with pytest.raises(DataDirInUse) as caught:
        DataDirLock(data_dir).acquire()  # another open file: flock refuses it too
    assert str(caught.value).startswith(f"data dir {data_dir} in use by pid {os.getpid()}")
    assert "\n" not in str(caught.value)
    first.acquire()  # again: a no-op
    first.release()
    first.release()  # again: a no-op
    assert (data_dir / LOCK_FILE).exists()  # never removed (see lock.py)
    second = DataDirLock(data_dir)
    second.acquire()
    second.release()


def _hold(data_dir: Path, locked, release) -> None:
    lock = DataDirLock(data_dir)
    lock.acquire()
    locked.set()
    release.wait(30)


def test_a_lock_held_by_another_process_names_that_pid_and_dies_with_it(tmp_path: Path):
    ctx = multiprocessing.get_context("spawn")
    locked, release = ctx.Event(), ctx.Event()
    holder = ctx.Process(target=_hold, args=(tmp_path, locked, release))
    holder.start()
    try:
        assert locked.wait(60)
        with pytest.raises(DataDirInUse, match=f"in use by pid {holder.pid} "):
            DataDirLock(tmp_path).acquire()
    finally:
        holder.kill()  # no release: the kernel drops the lock with the process
        holder.join(30)
    lock = DataDirLock(tmp_path)
    lock.acquire()
    lock.release()


def test_a_data_dir_that_cannot_be_made_is_a_config_error(tmp_path: Path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(ConfigError, match=f"cannot use data dir {blocker / 'data'}"):
        DataDirLock(blocker / "data").acquire()


def test_a_port_in_use_is_one_line_naming_port_host_and_pid():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert listener_pid(port) == os.getpid()
        with pytest.raises(PortInUse) as caught:
            bind_listener("127.0.0.1", port)
    assert str(caught.value) == (
        f"port {port} on 127.0.0.1 is in use (by pid {os.getpid()}): "
        "stop that server or give another --port"
    )


@pytest.mark.parametrize(
    "host, message",
    [
        ("no-such-host.invalid", "unknown host"),  # does not resolve
        ("192.0.2.1", "not an address of this machine"),  # TEST-NET-1: nobody's
    ],
)
def test_an_address_that_cannot_be_bound_is_one_line(host, message):
    with pytest.raises(ConfigError, match=message) as caught:
        bind_listener(host, 8000)
    assert "\n" not in str(caught.value)


def test_a_free_port_binds_and_the_socket_is_handed_over_unlistened():
    sock = bind_listener("127.0.0.1", 0)
    try:
        assert sock.getsockname()[0] == "127.0.0.1"
        with socket.socket() as probe, pytest.raises(ConnectionRefusedError):
            probe.connect(sock.getsockname())  # uvicorn starts listening, not us
    finally:
        sock.close()
