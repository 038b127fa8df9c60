"""What a job may use, checked: model files only from ``model_dirs`` (a model file is
code), for every task through :class:`ServedModels`. URL inputs: :mod:`.download`."""

from __future__ import annotations

import os
from pathlib import Path

from vidshard.errors import InputError
from vidshard.pathnames import expand_user
from vidshard.tasks.options import Naming

from . import security
from .settings import ServiceSettings


class TooLarge(InputError):
    """A body or download is over its size limit (HTTP 413)."""


def model_file(settings: ServiceSettings, name: str, field: str = "params.model") -> str:
    """``name`` (a file, folder or ``file.py:Class``) as a real path inside one of
    ``model_dirs``; AccessDenied otherwise (a model file is code)."""
    if "\0" in name:
        raise InputError(f"{field}: expected a model name or file, got a NUL byte in {name!r}")
    file_part = name.split(":", 1)[0] if ".py:" in name else name
    path = expand_user(file_part)
    if not path.is_absolute() and settings.model_dirs:
        path = settings.model_dirs[0] / path
    real = Path(os.path.realpath(path))
    if not any(security.is_within(real, d) for d in settings.model_dirs):
        raise security.AccessDenied(
            f"model {name!r}: not a built-in model, and model files are only "
            "taken from the server's model_dirs"
            + ("" if settings.model_dirs else " (none configured)")
        )
    security.stat_path(real, field, name)  # a name the file system refuses: 422, not 500
    return str(real) + (name[len(file_part) :] if file_part != name else "")


class ServedModels:
    """The service's rule for a job's model files (:class:`vidshard.tasks.ModelAccess`):
    only from ``model_dirs``, as real paths (a model file can run code)."""

    naming: Naming = "http"

    def __init__(self, settings: ServiceSettings) -> None:
        self.settings = settings

    def file(self, name: str, field: str) -> str:
        return model_file(self.settings, name, f"params.{field}")

    def exists(self, name: str) -> bool:
        return any((folder / name).exists() for folder in self.settings.model_dirs)
