"""Errors a user can cause, and how the CLI reports them.

Every error here carries one line that names the thing at fault and, where it helps, what to
do about it.  The CLI prints that line (no traceback unless ``--debug``) and exits with the
error's ``exit_code``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cyclone_core.model import Result

__all__ = ("ConfigError", "CycloneError", "PluginError", "ResultsRejected", "UsageError", "one_line_error")

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


class ResultsRejected(CycloneError):
    """Raised by a sink's ``write`` for results it can never store (not for an outage).

    The master moves ``results`` to the journal's dead letters with ``reason`` (``cyclone
    results --dead-letters`` lists them) and writes the rest of the batch again; the sink must
    skip the results it already stored, by result id, as it must after any failure.  An outage
    (the sink's server down, a full disk) is any other exception: then the whole batch is
    retried later, and nothing is dead-lettered.

    :param results: the results of the batch that the sink cannot store.
    :param reason: why, in one line.
    """

    def __init__(self, results: Sequence[Result], reason: str) -> None:
        super().__init__(f"{len(results)} results rejected: {reason}")
        self.results = list(results)
        self.reason = reason


def one_line_error(exc: BaseException) -> str:
    """``Type: message`` on one line, cut to :data:`MAX_ERROR_CHARS`: how a task's or a
    plugin's unexpected exception is reported."""
    text = " ".join(str(exc).split())
    line = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return line if len(line) <= MAX_ERROR_CHARS else line[: MAX_ERROR_CHARS - 3] + "..."
