"""The dashboard panel of the I/O probes: real probe results on the stand-in, folded into cells."""

from __future__ import annotations

from cyclone_lustre_ost.panel import io_cells, io_panel, ost_column, ost_row
from cyclone_lustre_ost.probe import LustreOstIoTask

from cyclone_core import Result, Status, TaskSpec, get_plugins
from cyclone_core.testing import run_task


def probe(fs, ost: int, **options) -> Result:
    task = LustreOstIoTask(path=str(fs.mount), ost=ost, fsname=fs.fsname, total_size="64K", block_size="64K", **options)
    return run_task(TaskSpec(task=task, key=f"OST{ost:04x}/r1"), local=fs.local())


def test_an_ost_has_its_place_sixteen_to_a_row() -> None:
    assert (ost_row(0), ost_column(0)) == ("OST0000-000f", "0")
    assert (ost_row(26), ost_column(26)) == ("OST0010-001f", "a")
    assert (ost_row(0x1FF), ost_column(0x1FF)) == ("OST01f0-01ff", "f")


def test_the_panel_is_registered_for_the_probe() -> None:
    panels = {panel.name: panel for panel in get_plugins().dashboard_panels()}
    assert panels["lustre-ost-io"].task_types == ("lustre-ost-io",)
    assert panels["lustre-ost-io"] == io_panel()


def test_probe_results_become_cells_by_status_and_speed(lustre_standin) -> None:
    fs = lustre_standin(osts=24, io_error=[5], drained=[20], inactive=[13])
    (ok,) = io_cells(probe(fs, 17, slow_threshold=3600))
    assert (ok.row, ok.column, ok.status) == ("OST0010-001f", "1", "ok")
    assert ok.value is not None
    assert ok.value > 0
    assert ok.label == f"{ok.value:.0f}"
    assert ok.detail.startswith("testfs OST0011: write ")
    (slow,) = io_cells(probe(fs, 1, slow_threshold=1e-9))
    assert slow.status == "slow"
    (failed,) = io_cells(probe(fs, 5))
    assert (failed.status, failed.label) == ("failed", "fail")
    assert "write to" in failed.detail
    (inactive,) = io_cells(probe(fs, 13, active=False, inactive_reason="deactivated"))
    assert inactive.status == "failed"
    (drained,) = io_cells(probe(fs, 20, admin_state="drained"))
    assert (drained.status, drained.label) == ("off", "drain")


def test_a_result_without_payload_is_placed_by_its_key() -> None:
    timed_out = Result("run-1", "lustre-ost-io", Status.TIMEOUT, key="OST001a/r4", error="killed after 60 s")
    (cell,) = io_cells(timed_out)
    assert (cell.row, cell.column, cell.label, cell.status) == ("OST0010-001f", "a", "t/o", "failed")
    assert io_cells(Result("run-2", "lustre-ost-io", Status.CRASHED, key="elsewhere")) == []
