"""The dashboard panel of the Lustre file-create checks: the latest check per MDT x OST.

Each MDT has its rows of sixteen OSTs (``MDT0000 OST0010-001f``, columns ``0`` to ``f``, as in
cyclone-lustre-ost's panel).  A cell shows the creation latency in milliseconds, shaded darker
the quicker it is; a check that failed (misplaced object, error, timeout, inactive OST) is red
with its error in the tooltip.  Plain-directory checks are one cell per directory.
"""

from __future__ import annotations

import re

from cyclone_core import Cell, Panel, Result, Status
from cyclone_lustre_ost.lustre import ost_label
from cyclone_lustre_ost.metrics import mdt_label
from cyclone_lustre_ost.panel import ost_column, ost_row

__all__ = ("create_cells", "create_panel")

#: The pair in a check's task key (``mdt0-ost10``, decimal), for results without a payload.
_KEY = re.compile(r"^mdt(\d+)-ost(\d+)$")


def _place(result: Result) -> tuple[str, str, str] | None:
    """The row, column and name of the MDT x OST pair (or directory) a result is about."""
    payload = result.payload or {}
    mdt, ost = payload.get("mdt_index"), payload.get("ost_index")
    if not (isinstance(mdt, int) and isinstance(ost, int)):
        match = _KEY.match(result.key or "")
        mdt, ost = (int(match.group(1)), int(match.group(2))) if match else (None, None)
    if mdt is not None and ost is not None:
        fsname = str(payload.get("target") or "")
        mdt_name = mdt_label(fsname, mdt) if fsname else f"MDT{mdt:04x}"
        return f"MDT{mdt:04x} {ost_row(ost)}", ost_column(ost), f"{mdt_name} x {ost_label(ost)}"
    if payload.get("mode") == "plain" or result.key == "plain":
        path = str(payload.get("path") or "directory")
        return "directory", path[-24:], path
    return None


def create_cells(result: Result) -> list[Cell]:
    """The cell a ``file-create`` result updates (none for one that names no target)."""
    place = _place(result)
    if place is None:
        return []
    row, column, name = place
    payload = result.payload or {}
    seconds = payload.get("seconds")
    if result.status is not Status.OK:
        label = "t/o" if result.status is Status.TIMEOUT or payload.get("check") == "timeout" else "fail"
        check = payload.get("check") or result.status.value
        return [Cell(row, column, label, "failed", None, f"{name}: {check}: {result.error or ''}")]
    if not isinstance(seconds, (int, float)):
        return [Cell(row, column, "?", "unknown", None, f"{name}: no latency in the result")]
    ms = seconds * 1000
    return [Cell(row, column, f"{ms:.1f}" if ms < 10 else f"{ms:.0f}", "ok", ms, f"{name}: created in {ms:,.2f} ms")]


def create_panel() -> Panel:
    """The ``file-create`` panel."""
    return Panel(
        name="file-create",
        title="File creation per MDT x OST: latency in ms (latest)",
        task_types=("file-create",),
        fold=create_cells,
        better="lower",
        unit="ms",
    )
