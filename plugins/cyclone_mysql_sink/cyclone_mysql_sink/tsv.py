"""Rows in the text format ``LOAD DATA`` reads by default: one line a row, fields separated by
tabs, ``\\N`` for NULL, and a backslash before a backslash, a tab, a newline or a NUL.

Rows hold only ``str``, ``int``, ``float`` and ``None`` (what the layouts make).  Numbers are
written as ``repr`` writes them, which the server reads back to the same value, as it does the
literals of an INSERT.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ("STATEMENT_FORMAT", "encode")

#: The format clauses of a ``LOAD DATA`` statement that reads :func:`encode`'s text.
STATEMENT_FORMAT = "CHARACTER SET utf8mb4 FIELDS TERMINATED BY '\\t' ESCAPED BY '\\\\' LINES TERMINATED BY '\\n'"

_ESCAPES = (("\\", "\\\\"), ("\t", "\\t"), ("\n", "\\n"), ("\0", "\\0"))


def _field(value: Any) -> str:
    if value is None:
        return "\\N"
    if type(value) is str:
        for special, escaped in _ESCAPES:
            if special in value:
                value = value.replace(special, escaped)
        return value
    if type(value) is int or type(value) is float:
        return repr(value)
    raise TypeError(f"a {type(value).__name__} has no LOAD DATA text form here")


def encode(rows: Sequence[tuple[Any, ...]]) -> bytes:
    """``rows`` (of equal length) as UTF-8 lines, each ending in a newline.

    Most values need no escaping: the rows are joined as they are, and the text is escaped
    field by field only when it holds more backslashes, tabs or newlines than the NULLs and
    separators put there, or a NUL."""
    if not rows:
        return b""
    text = "\n".join(
        [
            "\t".join(
                [
                    value
                    if type(value) is str
                    else "\\N"
                    if value is None
                    else repr(value)
                    if type(value) is int or type(value) is float
                    else _field(value)
                    for value in row
                ]
            )
            for row in rows
        ]
    )
    nulls = sum([row.count(None) for row in rows])
    if (
        text.count("\\") != nulls
        or text.count("\t") != len(rows) * (len(rows[0]) - 1)
        or text.count("\n") != len(rows) - 1
        or "\0" in text
    ):
        text = "\n".join(["\t".join([_field(value) for value in row]) for row in rows])
    return (text + "\n").encode()
