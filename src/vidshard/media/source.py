"""Open an input file as the file that was checked, not whatever its path names now.

A path checked once (inside the service's input roots, say) can be swapped afterwards
for a symlink to somewhere else, or for another file. So every open of a job's input —
the probe, each worker's decoder, the join's stream copy — goes through
:func:`opened_source`: the file is opened once, its identity (device, inode, size,
modification time) compared with the one recorded at the check, and FFmpeg is handed
that same open file (``/proc/self/fd/N``), never the path again.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from vidshard.errors import InputChanged, InputError

# Where an open file descriptor can be opened again by name (Linux, then macOS/BSD).
_FD_DIRS = ("/proc/self/fd", "/dev/fd")
# Set (to its node's address) in a worker a cluster's node started (the Ray executor).
CLUSTER_NODE_VARIABLE = "VIDSHARD_CLUSTER_NODE"


@dataclass(frozen=True)
class FileIdentity:
    """What makes a file the same file: where it lives on disk and its last change."""

    device: int
    inode: int
    size_bytes: int
    mtime_ns: int

    @classmethod
    def of(cls, stat: os.stat_result) -> FileIdentity:
        return cls(stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns)

    def to_dict(self) -> dict[str, int]:
        return {
            "device": self.device,
            "inode": self.inode,
            "size_bytes": self.size_bytes,
            "mtime_ns": self.mtime_ns,
        }

    @classmethod
    def from_dict(cls, data: dict[str, int]) -> FileIdentity:
        return cls(
            int(data["device"]), int(data["inode"]), int(data["size_bytes"]), int(data["mtime_ns"])
        )


def file_identity(path: str | Path) -> FileIdentity:
    """The identity of the file ``path`` names now (symlinks followed)."""
    return FileIdentity.of(os.stat(path))


@contextlib.contextmanager
def opened_source(path: str | Path, expected: FileIdentity | None) -> Iterator[str]:
    """The name to give FFmpeg for ``path`` while the context is open.

    With ``expected``, the file is opened here and refused (:class:`InputChanged`) unless
    it is that file, unchanged; FFmpeg then opens the descriptor, so a path swapped after
    this check is never followed. Without it, the path itself.
    """
    if expected is None:
        yield str(path)
        return
    with identified_source(path, expected) as (name, _identity):
        yield name


@contextlib.contextmanager
def identified_source(
    path: str | Path, expected: FileIdentity | None = None
) -> Iterator[tuple[str, FileIdentity]]:
    """``path`` opened once: (the name FFmpeg opens it by, its identity).

    Raises :class:`InputChanged` when ``expected`` is given and the file is not that one.
    """
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        if exc.errno == errno.ENOENT and expected is not None:
            raise InputChanged(f"{path}: the input file is gone since it was checked") from None
        raise InputError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    try:
        found = FileIdentity.of(os.fstat(fd))
        if expected is not None and os.environ.get(CLUSTER_NODE_VARIABLE):
            # Another machine numbers a shared file system's device its own way; the
            # inode, size and change time still tell one file from another.
            found = dataclasses.replace(found, device=expected.device)
        if expected is not None and found != expected:
            raise InputChanged(f"{path}: {_what_changed(expected, found)} since it was checked")
        yield _fd_name(fd, path), found
    finally:
        os.close(fd)


def _what_changed(expected: FileIdentity, found: FileIdentity) -> str:
    if (found.device, found.inode) != (expected.device, expected.inode):
        return "the path now names another file (replaced, or a link swapped in)"
    return "the input file was modified"


def _fd_name(fd: int, path: str | Path) -> str:
    for folder in _FD_DIRS:
        name = f"{folder}/{fd}"
        if os.path.exists(name):
            return name
    # No descriptor file system: the identity was checked a moment ago; use the path.
    return str(path)
