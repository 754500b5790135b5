"""CLI-level errors and their one-line descriptions."""

from __future__ import annotations

from shoal.common.errors import ShoalError


class UsageError(Exception):
    """The command line is malformed in a way argparse cannot check (exit status 2)."""


class NoCoordinator(ShoalError):
    """No coordinator address could be found (flag, environment or local cluster)."""


class JobNotSucceeded(ShoalError):
    """`job watch` saw the job fail or get cancelled (exit status 1)."""


def describe(exc: BaseException) -> str:
    """One line describing `exc` for the user, without the exception class."""
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.filename}: {exc.strerror}" if exc.filename else exc.strerror
    text = str(exc).strip() or type(exc).__name__
    first, *rest = [line.strip() for line in text.splitlines() if line.strip()]
    if not rest:
        return first
    # A multi-line message (e.g. a daemon's log tail): keep its head and its last line.
    gap = " ... " if len(rest) > 1 else " "
    return f"{first}{gap}{rest[-1]} (rerun with --debug for the full message)"
