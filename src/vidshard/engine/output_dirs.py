"""Output folders a user names: checked before any work, created when first written to;
and a results file that a failed run created but never wrote to, removed.

A folder option (``--annotate-dir``) is created when missing, parents too; an output
*file*'s folder is not (a missing one is more likely a typo than a wish), as for
``vidshard upscale -o``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from vidshard.errors import OutputError, write_failure_reason
from vidshard.pathnames import expand_user


def check_creatable_dir(path: Path, option: str) -> None:
    """OutputError, naming ``option``, unless ``path`` is a folder this process may write
    in, or can be created as one (its nearest existing parent is a writable folder)."""
    path = expand_user(path)
    if path.exists():
        if not path.is_dir():
            raise OutputError(f"{option} {path}: a file is in the way, expected a folder")
        if not os.access(path, os.W_OK | os.X_OK):
            raise OutputError(f"{option} {path}: no permission to write in it")
        return
    parent = path.absolute().parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise OutputError(f"cannot create {option} {path}: {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"cannot create {option} {path}: no permission to write in {parent}")


def ensure_dir(path: Path, option: str) -> None:
    """Create ``path`` (and its parents) if missing; OutputError when the disk refuses."""
    try:
        expand_user(path).mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # FileExistsError (a file in the way), PermissionError, ...
        reason = write_failure_reason(exc) or exc.strerror or str(exc)
        raise OutputError(f"cannot create {option} {path}: {reason}") from exc


@contextmanager
def removed_if_left_empty(path: Path) -> Iterator[None]:
    """On any exception, remove ``path`` if it did not exist before and is still empty:
    a failed run leaves no empty results file behind (one with lines is kept)."""
    existed = os.path.lexists(path)
    try:
        yield
    except BaseException:
        if not existed:
            try:
                if path.is_file() and path.stat().st_size == 0:
                    path.unlink()
            except OSError:
                pass  # the original error matters more
        raise
