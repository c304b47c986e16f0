"""Per-target grids that plugins add to the dashboard (the ``cyclone_dashboard_panels`` hook).

A plugin returns :class:`Panel` objects; each names the task types it looks at and a ``fold``
function that turns one terminal result into the :class:`Cell` objects it updates.  The master
keeps the latest cell per (row, column) and the page draws every panel with one generic grid
renderer, so a plugin needs no JavaScript::

    def ost_cell(result: Result) -> list[Cell]:
        ost = (result.payload or {}).get("ost")
        if ost is None:
            return []
        status = "ok" if result.ok else "failed"
        return [Cell(row="testfs", column=ost, label=ost, status=status, detail=result.error or "")]

    @hookimpl
    def cyclone_dashboard_panels() -> list[Panel]:
        return [Panel(name="my-probe", title="My probe per OST", task_types=("my-probe",), fold=ost_cell)]

``fold`` runs on the master's event loop for each result of the panel's task types: it must be
quick, and what it raises is counted and logged, never propagated.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import attrs

from cyclone_core.errors import one_line_error
from cyclone_core.model import Result

__all__ = ("CELL_STATUSES", "MAX_CELLS", "Cell", "Panel", "PanelGrid")

log = logging.getLogger("cyclone.dashboard")

#: What a cell's colour says: ``ok`` (green, shaded by ``value`` when the panel says which way
#: is better), ``slow`` (amber), ``failed`` (red), ``off`` (grey: out of service on purpose, or
#: not probed) and ``unknown``.  Any other status is shown as ``unknown``.
CELL_STATUSES = ("ok", "slow", "failed", "off", "unknown")
#: Cells one panel keeps at most; cells of new (row, column) pairs beyond are dropped (counted).
MAX_CELLS = 4096
#: Characters of a cell's row, column and label, and of its detail, at most.
_NAME_CHARS = 64
_DETAIL_CHARS = 300


def _name(value: object) -> str:
    return str(value)[:_NAME_CHARS]


def _detail(value: object) -> str:
    return str(value)[:_DETAIL_CHARS]


def _status(value: object) -> str:
    return value if isinstance(value, str) and value in CELL_STATUSES else "unknown"


def _number(value: object) -> float | None:
    """A finite number, or ``None`` (NaN, infinities and non-numbers are not JSON numbers)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


@attrs.frozen
class Cell:
    """One square of a panel's grid: the latest word on one target.

    :param row: the row it is in (``testfs OST0010``).
    :param column: the column (``a``).
    :param label: the short text drawn in the cell (``812``: MiB/s, say).
    :param status: one of :data:`CELL_STATUSES`: its colour.
    :param value: a number for shading ``ok`` cells (see :attr:`Panel.better`) and the tooltip.
    :param detail: the tooltip: the target's name, its figures or its error.
    """

    row: str = attrs.field(converter=_name)
    column: str = attrs.field(converter=_name)
    label: str = attrs.field(default="", converter=_name)
    status: str = attrs.field(default="ok", converter=_status)
    value: float | None = attrs.field(default=None, converter=_number)
    detail: str = attrs.field(default="", converter=_detail)

    def as_dict(self) -> dict[str, Any]:
        """The cell as the page reads it."""
        return {
            "row": self.row,
            "column": self.column,
            "label": self.label,
            "status": self.status,
            "value": self.value,
            "detail": self.detail,
        }


@attrs.frozen
class Panel:
    """A grid on the dashboard, filled from results by the plugin's ``fold``.

    :param name: unique among the panels (``lustre-ost-io``).
    :param title: the panel's heading.
    :param task_types: the registered task types whose results ``fold`` sees; empty: all.
    :param fold: a result -> the cells it updates (each replaces the cell at its row and column).
    :param better: ``"higher"`` or ``"lower"``: which values of ``ok`` cells are shaded as
        better (throughput, latency); ``None``: no shading.
    :param unit: the unit of the cells' values, for the legend (``MiB/s``).
    """

    name: str
    title: str
    fold: Callable[[Result], Iterable[Cell]]
    task_types: Sequence[str] = ()
    better: str | None = attrs.field(default=None, validator=attrs.validators.in_((None, "higher", "lower")))
    unit: str = ""


class PanelGrid:
    """The cells of one panel: the latest per (row, column), at most :data:`MAX_CELLS`."""

    def __init__(self, panel: Panel) -> None:
        self.panel = panel
        self.types = frozenset(panel.task_types)
        self.cells: dict[tuple[str, str], Cell] = {}
        #: Cells of new (row, column) pairs dropped because the grid was full.
        self.dropped = 0
        #: Results ``fold`` raised for.
        self.errors = 0
        #: Changes since the grid was made (the page re-reads a panel when it changed).
        self.version = 0

    def add_all(self, results: Sequence[Result]) -> None:
        """Fold those of ``results`` that are of the panel's task types into the grid."""
        types = self.types
        for result in results if not types else [r for r in results if r.task_type in types]:
            self.add(result)

    def add(self, result: Result) -> None:
        """Fold ``result`` into the grid (whatever its type)."""
        try:
            cells = list(self.panel.fold(result))
            for cell in cells:
                if not isinstance(cell, Cell):
                    raise TypeError(f"fold returned {type(cell).__name__}, not a Cell")
        except Exception as exc:  # the plugin's code
            self.errors += 1
            if self.errors == 1 or self.errors % 1000 == 0:
                log.error(
                    "dashboard panel '%s' failed on a result: %s (%d times)",
                    self.panel.name,
                    one_line_error(exc),
                    self.errors,
                )
            return
        for cell in cells:
            where = (cell.row, cell.column)
            if where not in self.cells and len(self.cells) >= MAX_CELLS:
                self.dropped += 1
                continue
            self.cells[where] = cell
            self.version += 1

    def as_dict(self, cells: Iterable[Cell]) -> dict[str, Any]:
        """The panel with ``cells`` (a copy of :attr:`cells`' values) as the page reads it."""
        listed = [cell.as_dict() for cell in cells]
        panel = self.panel
        return {
            "name": panel.name,
            "title": panel.title,
            "better": panel.better,
            "unit": panel.unit,
            "rows": sorted({cell["row"] for cell in listed}),
            "columns": sorted({cell["column"] for cell in listed}),
            "cells": listed,
            "dropped": self.dropped,
            "errors": self.errors,
        }
