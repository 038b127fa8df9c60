"""Typed errors. A :class:`VidshardError` is a problem the user can fix: the CLI prints its
message on one line and exits with :attr:`VidshardError.exit_code` (2); the HTTP service
answers 4xx. Anything else is a bug and keeps its traceback."""

from __future__ import annotations


class VidshardError(Exception):
    """Base of every error vidshard raises on purpose."""

    exit_code: int = 2


class InputError(VidshardError):
    """The input file is missing, empty, unreadable or not a usable video."""


class OutputError(VidshardError):
    """The output path cannot be written (missing directory, same as input, bad container)."""


class ModelError(VidshardError):
    """Unknown model, unreadable weights, or options the model does not support."""


class DeviceError(VidshardError):
    """A device spec is malformed or names a device that is not there."""


class ConfigError(VidshardError):
    """An option has a value outside its range."""


class MediaError(VidshardError):
    """Decoding, encoding or joining failed on a file that probed as valid."""

    exit_code = 1


class VerificationError(MediaError):
    """The joined output does not match the input (frame count, timestamps, duration)."""


class WorkerError(VidshardError):
    """Workers failed and the job could not finish."""

    exit_code = 1
