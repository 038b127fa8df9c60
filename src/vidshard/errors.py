"""Typed errors. A :class:`VidshardError` is a problem the user can fix: the CLI prints its
message on one line and exits with :attr:`VidshardError.exit_code` (2); the HTTP service
answers 4xx. Anything else is a bug and keeps its traceback."""

from __future__ import annotations

import errno


class VidshardError(Exception):
    """Base of every error vidshard raises on purpose."""

    exit_code: int = 2


class InputError(VidshardError):
    """The input file is missing, empty, unreadable or not a usable video."""


class InputChanged(InputError):
    """The input file is not the one that was checked: replaced, moved or modified."""


class OutputError(VidshardError):
    """The output path cannot be written (missing directory, same as input, bad container)."""


class ModelError(VidshardError):
    """Unknown model, unreadable weights, or options the model does not support."""


class DeviceError(VidshardError):
    """A device spec is malformed or names a device that is not there."""


class ConfigError(VidshardError):
    """An option has a value outside its range."""


class StorageError(ConfigError):
    """A node of the cluster cannot read a job's input or write to its work dir."""


class MediaError(VidshardError):
    """Decoding, encoding or joining failed on a file that probed as valid."""

    exit_code = 1


class VerificationError(MediaError):
    """The joined output does not match the input (frame count, timestamps, duration)."""


class WorkerError(VidshardError):
    """Workers failed and the job could not finish."""

    exit_code = 1


class Cancelled(VidshardError):
    """The job was cancelled (by its user, or the service shutting down)."""

    exit_code = 130


# errno values that mean the disk or the file system refused a write: the output's
# problem, not vidshard's.
_WRITE_FAILURES: dict[int, str] = {
    errno.ENOSPC: "no space left on device",
    errno.EFBIG: "file too large (a file system or process file size limit)",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "no permission (operation not permitted)",
    errno.ENOTDIR: "not a directory",
}
if hasattr(errno, "EDQUOT"):
    _WRITE_FAILURES[errno.EDQUOT] = "disk quota exceeded"


def write_failure_reason(exc: BaseException) -> str | None:
    """What the disk said, when ``exc`` (an ``OSError`` or FFmpeg error) is a refused
    write (full, quota, too large, read-only, no permission); None for anything else."""
    return _WRITE_FAILURES.get(getattr(exc, "errno", None) or 0)


def write_failure(exc: BaseException, where: str) -> OutputError | None:
    """``OutputError("cannot write {where}: {reason}")`` for a refused write, else None."""
    reason = write_failure_reason(exc)
    return None if reason is None else OutputError(f"cannot write {where}: {reason}")
