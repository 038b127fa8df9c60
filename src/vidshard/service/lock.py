"""The data dir lock: one ``vidshard serve`` per data dir.

A server requeues the jobs it finds running when it starts, on the belief that it is the
only one; a second server on the same data dir would requeue the first one's jobs, which
then run twice. So a server takes an exclusive ``flock`` on ``DATA_DIR/serve.lock``
before it touches the store, and holds it until it stops. The kernel drops the lock when
the process dies, however it dies, so a crashed server never leaves a stale lock behind.
The file holds the pid of the server that has it, for the message a second one prints.
It is never removed: a third server could otherwise lock a new file while a second still
held the old one.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

from vidshard.errors import ConfigError

LOCK_FILE = "serve.lock"


class DataDirInUse(ConfigError):
    """Another ``vidshard serve`` holds the data dir."""


class DataDirLock:
    """An exclusive lock on a data dir, held by this process between :meth:`acquire`
    and :meth:`release` (both safe to call again)."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.path = data_dir / LOCK_FILE
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        """Take the lock, or raise :class:`DataDirInUse` naming the pid that has it."""
        if self._fd is not None:
            return
        try:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise ConfigError(
                f"cannot use data dir {self.data_dir}: {exc.strerror or exc} "
                f"({exc.filename or self.path})"
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = _read_pid(fd)
            os.close(fd)
            holder = f"pid {pid}" if pid is not None else "another process"
            raise DataDirInUse(
                f"data dir {self.data_dir} in use by {holder} (another vidshard serve): "
                "stop that server, or give this one another --data-dir"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)  # no pid left behind for a server that is gone
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def _read_pid(fd: int) -> int | None:
    """The pid written by the holder; None while it has not written it yet."""
    text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    return int(text) if text.isdigit() else None
