"""What every command shares: the two consoles, and the rule that a user's mistake is one
line and an exit code, never a traceback."""

from __future__ import annotations

import errno
from collections.abc import Iterator
from contextlib import contextmanager

import typer
from rich.console import Console

from vidshard.errors import OutputError, VidshardError, write_failure_reason

out = Console()
err = Console(stderr=True)

# A name the system refused, wherever it was used: the user's to fix, not a traceback.
_NAME_FAILURES = {
    errno.ENAMETOOLONG: "file name too long",
    errno.ELOOP: "too many levels of symbolic links",
}


@contextmanager
def user_errors() -> Iterator[None]:
    """A user's mistake is one line on stderr and exit code 2, never a traceback.

    So is a file the disk refused (full, read-only, no permission) that no typed error
    caught on its way up."""
    try:
        yield
    except VidshardError as exc:
        err.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(exc.exit_code) from None
    except OSError as exc:
        reason = write_failure_reason(exc) or _NAME_FAILURES.get(exc.errno or 0)
        if reason is None:
            raise
        message = f"{exc.filename}: {reason}" if exc.filename else reason
        err.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
        raise typer.Exit(OutputError.exit_code) from None
    except KeyboardInterrupt:
        err.print(
            "interrupted; finished segments are kept: run the same command again to resume",
            highlight=False,
        )
        raise typer.Exit(130) from None
