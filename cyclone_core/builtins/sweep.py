"""Parameter sweeps: a grid of values and a list (or CSV file) of rows, expanded into task
arguments one point at a time.

A **grid** maps each parameter to its values: a list is taken literally; a string is a set of
whole numbers in ClusterShell's RangeSet notation (``"1-100"``, ``"0-90/10"``, ``"1-5,8,13"``;
``"001-100"`` keeps the zero padding and gives strings).  **Rows** are tables of parameters
(``[{"alpha": 0.1, "input": "a.dat"}, ...]``, or the lines of a CSV file under its header).
The points are every row combined with every point of the grid (rows in order, the grid's
last parameter varying fastest); a grid of ten million points is walked, never stored.

**Templates** are task arguments whose strings name parameters: ``"{alpha}"`` alone is
replaced by the value itself (a number stays a number), and inside a longer string it is
formatted with Python's ``str.format`` (``"run-{seed:04d}.out"``; ``{{`` and ``}}`` for
literal braces).
"""

from __future__ import annotations

import csv
import itertools
import math
import re
import string
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ("IntRange", "Sweep", "expand", "parse_range", "placeholders")

_PIECE = re.compile(r"(?P<start>\d+)(?:-(?P<stop>\d+)(?:/(?P<step>\d+))?)?")
#: Values one range may hold at most: enough for any sweep, small enough to refuse a typo.
MAX_RANGE = 10**12


class IntRange(Sequence[int | str]):
    """The whole numbers of a RangeSet expression, in order, made as they are read: ``"1-3,7"``
    is 1, 2, 3, 7.  Zero-padded bounds (``"01-10"``) give zero-padded strings (``"01"``)."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pieces: list[tuple[range, int]] = []  # (numbers, padding width; 0: none)
        for piece in text.replace(" ", "").split(","):
            found = _PIECE.fullmatch(piece)
            if found is None:
                raise ValueError(f"{text!r} is not a range such as '1-100', '0-90/10' or '1-5,8,13'")
            start, stop = int(found["start"]), int(found["stop"] or found["start"])
            step = int(found["step"] or 1)
            if stop < start or step < 1:
                raise ValueError(f"{text!r}: {piece!r} is an empty range")
            padded = found["start"].startswith("0") and len(found["start"]) > 1
            self.pieces.append((range(start, stop + 1, step), len(found["start"]) if padded else 0))
        if len(self) > MAX_RANGE:
            raise ValueError(f"{text!r} holds {len(self):,} values; at most {MAX_RANGE:,} are allowed")

    def __len__(self) -> int:
        return sum(len(numbers) for numbers, _ in self.pieces)

    def __iter__(self) -> Iterator[int | str]:
        for numbers, width in self.pieces:
            if width:
                yield from (str(number).zfill(width) for number in numbers)
            else:
                yield from numbers

    def __getitem__(self, index: int) -> int | str:  # type: ignore[override]
        if index < 0:
            index += len(self)
        for numbers, width in self.pieces:
            if index < len(numbers):
                return str(numbers[index]).zfill(width) if width else numbers[index]
            index -= len(numbers)
        raise IndexError(index)

    def __repr__(self) -> str:
        return f"IntRange({self.text!r})"


def parse_range(text: str) -> IntRange:
    """The values of a RangeSet expression (see :class:`IntRange`); ``ValueError`` if malformed."""
    return IntRange(text)


def _axis(name: str, values: Any) -> Sequence[Any]:
    if isinstance(values, str):
        try:
            return parse_range(values)
        except ValueError as exc:
            raise ValueError(f"grid.{name}: {exc}") from None
    if isinstance(values, list):
        if not values:
            raise ValueError(f"grid.{name}: an empty list gives no points")
        return values
    if isinstance(values, bool | int | float):
        return [values]
    raise ValueError(f"grid.{name}: expected a list of values or a range such as '1-100', got {values!r}")


class Sweep:
    """The points of a sweep: ``rows`` (tables), or the lines of a CSV file ``rows_file``,
    each combined with every point of ``grid``.  Nothing is stored per point.

    :raises ValueError: a malformed grid or file, a parameter given twice, no point at all.
    """

    def __init__(
        self,
        grid: Mapping[str, Any] | None = None,
        rows: Sequence[Mapping[str, Any]] | None = None,
        rows_file: str | None = None,
    ) -> None:
        self.axes = {name: _axis(name, values) for name, values in (grid or {}).items()}
        if rows is not None and rows_file is not None:
            raise ValueError("give rows or rows_file, not both")
        self.rows = list(rows) if rows is not None else None
        self.rows_file = Path(rows_file) if rows_file is not None else None
        self.row_names: list[str] = []
        if self.rows is not None:
            for index, row in enumerate(self.rows):
                if not isinstance(row, Mapping):
                    raise ValueError(f"rows[{index}]: expected a table of parameters, got {row!r}")
            self.row_names = sorted({name for row in self.rows for name in row})
            self.row_count = len(self.rows)
        elif self.rows_file is not None:
            self.row_names, self.row_count = self._read_header()
        else:
            self.row_count = 1
        both = sorted(set(self.row_names) & set(self.axes))
        if both:
            raise ValueError(f"parameter {', '.join(both)} is in the rows and in the grid: give it once")
        if not len(self):
            raise ValueError("the sweep has no points (no rows)")

    @property
    def names(self) -> list[str]:
        """Every parameter's name: the rows' then the grid's."""
        return [*self.row_names, *self.axes]

    def __len__(self) -> int:
        return self.row_count * math.prod(len(values) for values in self.axes.values())

    def __iter__(self) -> Iterator[dict[str, Any]]:
        names = list(self.axes)
        for row in self._rows():
            for values in itertools.product(*self.axes.values()):
                yield {**row, **dict(zip(names, values, strict=True))}

    def _rows(self) -> Iterator[Mapping[str, Any]]:
        if self.rows is not None:
            yield from self.rows
        elif self.rows_file is not None:
            with self.rows_file.open(newline="", encoding="utf-8") as lines:
                for number, row in enumerate(csv.DictReader(lines), 2):
                    if None in row or None in row.values():
                        raise ValueError(f"{self.rows_file}:{number}: expected {len(self.row_names)} columns")
                    yield row
        else:
            yield {}

    def _read_header(self) -> tuple[list[str], int]:
        assert self.rows_file is not None
        try:
            with self.rows_file.open(newline="", encoding="utf-8") as lines:
                reader = csv.reader(lines)
                header = next(reader, None)
                count = sum(1 for row in reader if row)
        except (OSError, UnicodeDecodeError, csv.Error) as exc:
            raise ValueError(f"{self.rows_file}: cannot read: {getattr(exc, 'strerror', None) or exc}") from None
        if not header or any(not name.strip() for name in header):
            raise ValueError(f"{self.rows_file}: the first line must name every column")
        if len(set(header)) != len(header):
            raise ValueError(f"{self.rows_file}: a column name appears twice in the first line")
        return header, count


def placeholders(template: Any, where: str = "") -> Iterator[tuple[str, str]]:
    """``(where, parameter)`` for every parameter a template names, ``where`` being its path in
    the template (``args.argv[2]``).  A malformed format string raises ``ValueError``."""
    if isinstance(template, str):
        try:
            fields = [field for _, field, _, _ in string.Formatter().parse(template) if field is not None]
        except ValueError as exc:
            raise ValueError(f"{where}: {template!r}: {exc} (write {{{{ and }}}} for literal braces)") from None
        for field in fields:
            yield where, re.split(r"[.\[]", field, maxsplit=1)[0]
    elif isinstance(template, Mapping):
        for key, value in template.items():
            yield from placeholders(value, f"{where}.{key}" if where else str(key))
    elif isinstance(template, list):
        for index, value in enumerate(template):
            yield from placeholders(value, f"{where}[{index}]")


def expand(template: Any, params: Mapping[str, Any]) -> Any:
    """``template`` with the parameters filled in: a string that is one placeholder alone
    (``"{alpha}"``) becomes the value itself, any other string is formatted."""
    if isinstance(template, str):
        if "{" not in template and "}" not in template:
            return template
        if template.startswith("{") and template.endswith("}") and template[1:-1] in params:
            return params[template[1:-1]]
        return template.format_map(params)
    if isinstance(template, Mapping):
        return {key: expand(value, params) for key, value in template.items()}
    if isinstance(template, list):
        return [expand(value, params) for value in template]
    return template
