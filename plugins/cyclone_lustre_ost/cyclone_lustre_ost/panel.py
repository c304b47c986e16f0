"""The dashboard panel of the I/O probes: the latest result per OST, coloured by status and speed.

OSTs are laid out sixteen to a row (``OST0010-001f``, columns ``0`` to ``f``), so a file
system of hundreds of OSTs fits on a screen.  A cell shows the write throughput in MiB/s,
shaded darker the faster it is among the OSTs; ``slow`` (past the probe's ``slow_threshold``)
is amber, a failure red with its error in the tooltip, a drained or retired OST grey.
:func:`ost_row` and :func:`ost_column` place an OST the same way for other Lustre panels
(cyclone-file-create's).
"""

from __future__ import annotations

import re

from cyclone_core import Cell, Panel, Result, Status
from cyclone_lustre_ost.lustre import ost_label

__all__ = ("OSTS_PER_ROW", "io_cells", "io_panel", "ost_column", "ost_row")

#: OSTs in one row of a grid.
OSTS_PER_ROW = 16
_MIB = float(1 << 20)
#: The OST in a probe's task key (``OST000a/r3``), for results without a payload (timeouts).
_KEY = re.compile(r"^OST([0-9a-f]{4,})/")
_ADMIN_LABELS = {"drained": "drain", "retired": "retir"}


def ost_row(index: int) -> str:
    """The row of OST ``index``: ``OST0010-001f`` for 16 to 31."""
    first = index - index % OSTS_PER_ROW
    return f"{ost_label(first)}-{first + OSTS_PER_ROW - 1:04x}"


def ost_column(index: int) -> str:
    """The column of OST ``index``: its last hex digit."""
    return f"{index % OSTS_PER_ROW:x}"


def _place(result: Result) -> tuple[str, str, str] | None:
    """The row, column and name of the OST (or directory) a result is about."""
    payload = result.payload or {}
    index = payload.get("index")
    if not isinstance(index, int):
        match = _KEY.match(result.key or "")
        index = int(match.group(1), 16) if match else None
    if index is not None:
        return ost_row(index), ost_column(index), f"{payload.get('fs', '')} {ost_label(index)}".strip()
    if payload.get("mode") == "plain" or (result.key or "").startswith("dir/"):
        return "directory", "dir", str(payload.get("fs") or "directory")
    return None


def io_cells(result: Result) -> list[Cell]:
    """The cell a ``lustre-ost-io`` result updates (none for one that names no OST)."""
    place = _place(result)
    if place is None:
        return []
    row, column, name = place
    payload = result.payload or {}
    state = payload.get("state")
    if result.status is not Status.OK:
        label = "t/o" if result.status is Status.TIMEOUT else "fail"
        return [Cell(row, column, label, "failed", None, f"{name}: {result.status.value}: {result.error or state}")]
    if state in _ADMIN_LABELS:
        return [Cell(row, column, _ADMIN_LABELS[state], "off", None, f"{name}: {payload.get('detail') or state}")]
    write, read = payload.get("write_bytes_per_second"), payload.get("read_bytes_per_second")
    if not isinstance(write, (int, float)) or not isinstance(read, (int, float)):
        return [Cell(row, column, "?", "unknown", None, f"{name}: no throughput in the result")]
    status = "slow" if payload.get("slow") else "ok"
    detail = f"{name}: write {write / _MIB:,.0f} MiB/s, read {read / _MIB:,.0f} MiB/s" + (
        f" (slower than {payload.get('slow_threshold')} s)" if status == "slow" else ""
    )
    return [Cell(row, column, f"{write / _MIB:.0f}", status, write / _MIB, detail)]


def io_panel() -> Panel:
    """The ``lustre-ost-io`` panel."""
    return Panel(
        name="lustre-ost-io",
        title="Lustre OST I/O probes: write MiB/s per OST (latest)",
        task_types=("lustre-ost-io",),
        fold=io_cells,
        better="higher",
        unit="write MiB/s",
    )
