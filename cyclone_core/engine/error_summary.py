"""The most common errors of a run's failed tasks, grouped: what ``cyclone run`` shows at the end.

Errors are grouped by their text *normalised*: whitespace runs become one space, and what
differs from task to task for the same cause is replaced by a placeholder, so that ``exit code
3: seed 17 diverged`` and ``exit code 3: seed 42 diverged`` are one group:

- ``0x`` hexadecimal numbers, and words of 8 or more hexadecimal digits with at least one digit
  (ids, hashes, addresses, UUIDs in parts), become ``<id>``;
- every other run of decimal digits (with a decimal point or exponent) becomes ``#``.

A group shows its first error as it was when every error of the group had the same text, and
the normalised text otherwise.  Only results that are not ``ok`` are looked at, and at most
:data:`MAX_GROUPS` groups are kept (each with at most :data:`TASKS_PER_GROUP` task ids); the
errors of further groups are only counted, so memory stays bounded however many tasks fail.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import attrs

from cyclone_core.hookspecs import hookimpl
from cyclone_core.model import Result, Status

__all__ = ("MAX_GROUPS", "TASKS_PER_GROUP", "ErrorGroup", "ErrorSummary", "format_error_line", "normalise_error")

#: Distinct error groups kept; the errors of further groups are counted in ``others``.
MAX_GROUPS = 1000
#: Task ids kept per group (the first ones).
TASKS_PER_GROUP = 3
#: Characters of an error that are grouped and shown (its head and its tail).
MAX_ERROR_CHARS = 2000

_SPACE = re.compile(r"\s+")
_HEX_ID = re.compile(r"\b0x[0-9a-fA-F]+\b|\b(?=[0-9a-fA-F]*[0-9])[0-9a-fA-F]{8,}\b")
_NUMBER = re.compile(r"\d+(?:\.\d+)?(?:[eE][-+]?\d+)?")


def one_line(error: str) -> str:
    """``error`` on one line: whitespace runs become one space; a long error keeps its head
    and tail (where a traceback says what went wrong)."""
    text = _SPACE.sub(" ", error).strip()
    if len(text) > MAX_ERROR_CHARS:
        half = MAX_ERROR_CHARS // 2
        text = f"{text[:half]} ... {text[-half:]}"
    return text


def normalise_error(error: str) -> str:
    """The group key of an error already on :func:`one_line`: ids become ``<id>``, numbers ``#``."""
    return _NUMBER.sub("#", _HEX_ID.sub("<id>", error))


@attrs.define
class ErrorGroup:
    """Failed tasks whose errors normalise to the same text."""

    #: The error shown: the first one, or the normalised text when the errors differ.
    error: str
    count: int = 0
    #: The first :data:`TASKS_PER_GROUP` task ids.
    tasks: list[str] = attrs.Factory(list)

    def as_dict(self) -> dict[str, Any]:
        """As ``cyclone run --json`` shows it."""
        return {"error": self.error, "count": self.count, "tasks": list(self.tasks)}


class ErrorSummary:
    """Groups the errors of terminal results that are not ``ok``.

    Register it as a plugin for a run (it implements the ``cyclone_results`` hook), or call
    :meth:`add` with results; :meth:`top` gives the most common groups.
    """

    def __init__(self) -> None:
        self._groups: dict[str, ErrorGroup] = {}
        #: Errors of groups beyond :data:`MAX_GROUPS`, counted only.
        self.others = 0

    @hookimpl
    def cyclone_results(self, results: Sequence[Result]) -> None:
        """The ``cyclone_results`` hook: take in the results that did not succeed."""
        ok = Status.OK
        failed = [result for result in results if result.status is not ok]
        if failed:
            self.add(failed)

    def add(self, results: Sequence[Result]) -> None:
        """Count the errors of ``results`` (those with status ``ok`` are skipped)."""
        groups = self._groups
        for result in results:
            if result.status is Status.OK:
                continue
            text = one_line(result.error or f"{result.status.value}, without an error message")
            key = normalise_error(text)
            group = groups.get(key)
            if group is None:
                if len(groups) >= MAX_GROUPS:
                    self.others += 1
                    continue
                group = groups[key] = ErrorGroup(text)
            elif group.error != text:
                group.error = key  # the errors differ: show what they have in common
            group.count += 1
            if len(group.tasks) < TASKS_PER_GROUP:
                group.tasks.append(result.task_id)

    def top(self, count: int = 5) -> list[ErrorGroup]:
        """The ``count`` largest groups, largest first (the first seen first among equals)."""
        return sorted(self._groups.values(), key=lambda group: -group.count)[:count]


def format_error_line(group: ErrorGroup, width: int, run_id: str = "", indent: str = "    ") -> str:
    """``group`` as one line of at most ``width`` characters: count, error, task ids (without
    the ``run_id-`` they start with); a long error loses its middle."""
    prefix = f"{run_id}-" if run_id else ""
    tasks = [task[len(prefix) :] if prefix and task.startswith(prefix) else task for task in group.tasks]
    head = f"{indent}{group.count:,}x  "
    tail = f"   (task{'s' if len(tasks) > 1 else ''} {', '.join(tasks)})"
    room = max(width - len(head) - len(tail), 30)
    error = group.error
    if len(error) > room:
        keep = room - 5
        error = f"{error[: keep // 2]} ... {error[len(error) - (keep - keep // 2) :]}"
    return f"{head}{error}{tail}"
