"""A stream's files, written by the worker that hosts it: its results as JSON Lines,
rotated by size and age, and a snapshot JPEG of its latest annotated frame.

**JSONL.** ``<stream_id>-<YYYYmmdd-HHMMSS>.jsonl`` in the stream's output folder (the
time is UTC, when the file was opened; a second file opened within the same second gets
``_002``, ``_003`` ...). One line per processed frame (:meth:`StreamRecord.to_json`),
each written whole with one ``write`` on an ``O_APPEND`` descriptor, so a reader tailing
the file sees whole lines only. A file is closed (and synced) before a line would take
it past ``rotate_mb``, or once it is ``rotate_minutes`` old, and the next line opens a
new one. Lines are not synced one by one: a crash of the machine may lose the last
second, never leave a torn line behind a whole one.

**Snapshot.** ``<stream_id>.jpg``, replaced atomically (a hidden temporary file renamed
over it) at most every ``snapshot_interval_s`` (0: never), the boxes and track ids drawn
as ``vidshard detect --annotate`` draws them.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from vidshard.detection.annotate import FrameDrawing, draw
from vidshard.detection.types import Detections
from vidshard.errors import ConfigError, OutputError

logger = logging.getLogger(__name__)

SNAPSHOT_QUALITY = 85
_STREAM_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_MAX_SAME_SECOND = 999


def check_stream_id(stream_id: str) -> str:
    """``stream_id`` if it can name files (letters, digits, ``._-``; 1..128 characters,
    not starting with ``.``), else :class:`ConfigError`."""
    if not _STREAM_ID.fullmatch(stream_id):
        raise ConfigError(
            f"stream id {stream_id!r}: expected 1-128 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return stream_id


def _make_dir(directory: Path) -> Path:
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(
            f"cannot create stream folder {directory}: {exc.strerror or exc}"
        ) from exc
    return directory


class JsonlRotator:
    """Appends lines to a stream's JSONL files, opening a new file past the limits.
    Used by one thread (the host's)."""

    def __init__(
        self,
        directory: Path,
        stream_id: str,
        *,
        rotate_bytes: int,
        rotate_s: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.directory = _make_dir(Path(directory))
        self.stream_id = check_stream_id(stream_id)
        self.rotate_bytes = max(1, rotate_bytes)
        self.rotate_s = rotate_s
        self._clock = clock
        self._fd: int | None = None
        self._size_bytes = 0
        self._opened_at = 0.0
        self._closed = False
        self.path: Path | None = None  # the file being written
        # the files it opened, oldest first (the latest 64: memory stays flat)
        self.paths: deque[Path] = deque(maxlen=64)

    def write(self, line: bytes) -> None:
        """Append ``line`` (one JSON text and a newline); :class:`OutputError` on a write
        the system refused (nothing half-written stays behind)."""
        if self._closed:
            return
        if self._fd is not None and self._due(len(line)):
            self._close_file()
        fd = self._fd if self._fd is not None else self._open_file()
        try:
            written = os.write(fd, line)
            while written < len(line):  # a short write (a signal, a nearly full disk)
                written += os.write(fd, line[written:])
        except OSError as exc:
            self._truncate(fd)
            raise OutputError(f"cannot write {self.path}: {exc.strerror or exc}") from exc
        self._size_bytes += len(line)

    def _due(self, next_bytes: int) -> bool:
        too_big = self._size_bytes > 0 and self._size_bytes + next_bytes > self.rotate_bytes
        return too_big or self._clock() - self._opened_at >= self.rotate_s

    def _open_file(self) -> int:
        now = self._clock()
        stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(now))
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
        for n in range(1, _MAX_SAME_SECOND + 1):
            suffix = "" if n == 1 else f"_{n:03d}"
            path = self.directory / f"{self.stream_id}-{stamp}{suffix}.jsonl"
            try:
                fd = os.open(path, flags, 0o644)
            except FileExistsError:
                continue
            except OSError as exc:
                raise OutputError(f"cannot create {path}: {exc.strerror or exc}") from exc
            self._fd, self.path, self._size_bytes, self._opened_at = fd, path, 0, now
            self.paths.append(path)
            logger.debug("stream %s: writing %s", self.stream_id, path)
            return fd
        raise OutputError(f"cannot create a results file for stream {self.stream_id}: too many")

    def _truncate(self, fd: int) -> None:
        try:
            os.ftruncate(fd, self._size_bytes)
        except OSError:
            logger.warning("%s: could not remove a partly written line", self.path)

    def _close_file(self) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            os.fsync(fd)
        except OSError as exc:
            logger.warning("%s: could not sync: %s", self.path, exc.strerror or exc)
        finally:
            os.close(fd)

    def close(self) -> None:
        """Close the file; later writes are ignored."""
        self._closed = True
        self._close_file()


class SnapshotWriter:
    """Writes ``<stream_id>.jpg``: the latest frame with its detections drawn."""

    def __init__(
        self,
        directory: Path,
        stream_id: str,
        *,
        interval_s: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.directory = _make_dir(Path(directory))
        self.stream_id = check_stream_id(stream_id)
        self.interval_s = interval_s
        self.path = self.directory / f"{stream_id}.jpg"
        self._tmp = self.directory / f".{stream_id}.jpg.tmp"
        self._clock = clock
        self._last: float | None = None

    def due(self) -> bool:
        if self.interval_s <= 0:
            return False
        return self._last is None or self._clock() - self._last >= self.interval_s

    def write(self, image: np.ndarray, detections: Detections) -> None:
        """Draw and write now (the interval counts from here, even if the write fails)."""
        self._last = self._clock()
        picture = Image.fromarray(draw(image, FrameDrawing.of(detections)))
        try:
            picture.save(self._tmp, "JPEG", quality=SNAPSHOT_QUALITY)
            os.replace(self._tmp, self.path)
        except OSError as exc:
            with contextlib.suppress(OSError):
                self._tmp.unlink(missing_ok=True)
            raise OutputError(f"cannot write {self.path}: {exc.strerror or exc}") from exc
