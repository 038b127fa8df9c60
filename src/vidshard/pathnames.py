"""What the file system would refuse in a name, found before any call that would raise
an ``OSError`` for it: a NUL byte, a component over 255 bytes, a path over 4096 bytes."""

from __future__ import annotations

import os
from pathlib import Path

NAME_MAX_BYTES = 255
PATH_MAX_BYTES = 4096


def path_name_problem(raw: str) -> str | None:
    """Why ``raw`` cannot name a file on this system, or None when it can."""
    if "\0" in raw:
        return "it contains a NUL byte"
    encoded = os.fsencode(raw) if _encodable(raw) else None
    if encoded is None:
        return "it is not valid in the file system's encoding"
    if len(encoded) >= PATH_MAX_BYTES:
        return f"it is {len(encoded)} bytes long (a path holds at most {PATH_MAX_BYTES - 1})"
    longest = max((len(part) for part in encoded.split(b"/")), default=0)
    if longest > NAME_MAX_BYTES:
        return f"a part of it is {longest} bytes long (a name holds at most {NAME_MAX_BYTES})"
    return None


def shown(raw: str, limit: int = 60) -> str:
    """``raw`` for a one-line message: cut to ``limit`` characters, with its length."""
    if len(raw) <= limit:
        return repr(raw)
    return f"{raw[:limit]!r}... ({len(raw)} characters)"


def _encodable(raw: str) -> bool:
    try:
        os.fsencode(raw)
    except UnicodeEncodeError:
        return False
    return True


def expand_user(path: str | os.PathLike[str]) -> Path:
    """``~`` and ``~user`` expanded as the shell does; a user that does not exist leaves the
    name as it is (``Path.expanduser`` raises for one: a name is the user's, not a crash)."""
    return Path(os.path.expanduser(os.fspath(path)))
