"""Checks on what a client sends: input paths, file names, URLs and the API key.

Each check raises a typed error that the HTTP layer maps to a status:
:class:`AccessDenied` (403) for something not allowed, :class:`~vidshard.errors.InputError`
(422) for something malformed.
"""

from __future__ import annotations

import hmac
import os
import re
from collections.abc import Sequence
from pathlib import Path, PurePath
from urllib.parse import urlsplit

from vidshard.errors import InputError

_JOB_ID = re.compile(r"[0-9a-f]{32}")
_UNSAFE_FILENAME_CHARS = re.compile(r"[^A-Za-z0-9._-]")
_MAX_FILENAME = 120
_MAX_SUFFIX = 16


class AccessDenied(InputError):
    """The request is well formed but asks for something this service does not allow."""


def is_within(path: Path, root: Path) -> bool:
    """Whether ``path`` is ``root`` or below it, by name only: resolve both first."""
    return path == root or root in path.parents


def resolve_input_path(raw: str, roots: Sequence[Path]) -> Path:
    """The real path of an input file a client named, which must lie inside one of
    ``roots`` once symlinks are followed. A relative path is taken from the first root.

    Whether a path outside the roots exists is never revealed.
    """
    if not raw:
        raise InputError("input path is empty")
    if "\0" in raw:
        raise InputError("input path contains a NUL byte")
    if not roots:
        raise AccessDenied("path inputs are disabled; upload the file instead")
    given = Path(raw)
    if ".." in given.parts:
        raise AccessDenied(f"input path must not contain '..': {raw}")
    real = Path(os.path.realpath(roots[0] / given))  # an absolute ``given`` replaces the root
    if not any(is_within(real, Path(os.path.realpath(root))) for root in roots):
        raise AccessDenied(f"input path is outside the allowed input directories: {raw}")
    if not real.exists():
        raise InputError(f"input file not found: {raw}")
    if not real.is_file():
        raise InputError(f"input path is not a regular file: {raw}")
    return real


def output_dir_for(job_id: str, output_root: Path) -> Path:
    """The directory of one job's outputs: ``output_root/job_id``."""
    if not _JOB_ID.fullmatch(job_id):
        raise InputError(f"invalid job id {job_id!r}: expected 32 lowercase hex digits")
    return output_root / job_id


def safe_filename(name: str, default: str) -> str:
    """A client's file name made safe to store: its last component, only ``[A-Za-z0-9._-]``,
    no leading dot, at most 120 characters (keeping a short extension); else ``default``."""
    base = PurePath(name.replace("\\", "/")).name
    cleaned = _UNSAFE_FILENAME_CHARS.sub("", base).lstrip(".")
    if len(cleaned) > _MAX_FILENAME:
        suffix = PurePath(cleaned).suffix
        if len(suffix) > _MAX_SUFFIX:
            suffix = ""
        cleaned = cleaned[: _MAX_FILENAME - len(suffix)] + suffix
    return cleaned or default


def check_url(url: str, allowed_schemes: Sequence[str]) -> str:
    """``url`` itself, once it is an absolute URL with a host and an allowed scheme."""
    if not url:
        raise InputError("URL is empty")
    if any(ord(char) <= 0x20 or ord(char) == 0x7F for char in url):
        raise InputError(f"URL contains whitespace or control characters: {url!r}")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  (parsed lazily: raises for a bad port)
    except ValueError as exc:
        raise InputError(f"malformed URL {url!r}: {exc}") from None
    if not parts.scheme:
        raise InputError(f"URL has no scheme (expected e.g. https://): {url!r}")
    scheme = parts.scheme.lower()
    allowed = [allowed_scheme.lower() for allowed_scheme in allowed_schemes]
    if scheme not in allowed:
        allowed_text = ", ".join(allowed) if allowed else "none (URL inputs are disabled)"
        raise AccessDenied(f"URL scheme {scheme!r} is not allowed; allowed: {allowed_text}")
    if not parts.hostname:
        raise InputError(f"URL has no host: {url!r}")
    return url


def api_key_matches(given: str | None, expected: str | None) -> bool:
    """Whether ``given`` is the API key, in constant time; any key when none is set."""
    if expected is None:
        return True
    if given is None:
        return False
    return hmac.compare_digest(given.encode(), expected.encode())
