"""The service's own errors, and the HTTP status of every error it answers with."""

from __future__ import annotations

from vidshard.errors import InputError, ModelError, OutputError, VidshardError

from .inputs import TooLarge
from .security import AccessDenied
from .store_errors import StoreUnavailable


class NotFound(VidshardError):
    """No such job or upload (HTTP 404)."""


class Conflict(VidshardError):
    """The request does not fit the job's state (HTTP 409)."""


def error_status(exc: BaseException) -> int:
    """The HTTP status of an error raised by this service."""
    if isinstance(exc, NotFound):
        return 404
    if isinstance(exc, StoreUnavailable):
        return 503
    if isinstance(exc, Conflict):
        return 409
    if isinstance(exc, TooLarge):
        return 413
    if isinstance(exc, AccessDenied):
        return 403
    if isinstance(exc, (InputError, OutputError, ModelError)):
        return 422
    if isinstance(exc, VidshardError) and exc.exit_code == 2:
        return 422
    return 500


def clipped(given: str, limit: int = 64) -> str:
    """A client's id for a message: as given, cut at ``limit`` characters."""
    return given if len(given) <= limit else f"{given[:limit]}... ({len(given)} characters)"
