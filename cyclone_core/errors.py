"""Errors a user can cause, and how the CLI reports them.

Every error here carries one line that names the thing at fault and, where it helps, what to
do about it.  The CLI prints that line (no traceback unless ``--debug``) and exits with the
error's ``exit_code``.
"""

from __future__ import annotations

__all__ = ("ConfigError", "CycloneError", "PluginError", "UsageError", "one_line_error")

#: An error line longer than this is cut (results and logs carry it; the traceback is in the
#: debug log).
MAX_ERROR_CHARS = 2000


class CycloneError(Exception):
    """Base class for errors meant to be shown to a user as one line."""

    exit_code: int = 1


class UsageError(CycloneError):
    """Wrong command-line usage (exit code 2)."""

    exit_code = 2


class ConfigError(CycloneError):
    """Invalid configuration: a file, key or option value (exit code 2)."""

    exit_code = 2


class PluginError(CycloneError):
    """A plugin could not be loaded, or two plugins claim the same name."""

    exit_code = 1


def one_line_error(exc: BaseException) -> str:
    """``Type: message`` on one line, cut to :data:`MAX_ERROR_CHARS`: how a task's or a
    plugin's unexpected exception is reported."""
    text = " ".join(str(exc).split())
    line = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return line if len(line) <= MAX_ERROR_CHARS else line[: MAX_ERROR_CHARS - 3] + "..."
