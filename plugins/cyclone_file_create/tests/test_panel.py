"""The dashboard panel of the file-create checks: real checks on the stand-in, folded into cells."""

from __future__ import annotations

from cyclone_core import Result, Status, TaskSpec, get_plugins
from cyclone_core.testing import run_task

from cyclone_file_create.panel import create_cells, create_panel
from cyclone_file_create.task import FileCreateTask


def check(fs, mdt: int, ost: int, **options) -> Result:
    task = FileCreateTask(path=str(fs.mount), mode="lustre", fsname=fs.fsname, mdt_index=mdt, ost_index=ost, **options)
    return run_task(TaskSpec(task=task, key=f"mdt{mdt}-ost{ost}"), local=fs.local())


def test_the_panel_is_registered_for_the_check() -> None:
    panels = {panel.name: panel for panel in get_plugins().dashboard_panels()}
    assert panels["file-create"] == create_panel()


def test_checks_become_cells_per_mdt_and_ost(lustre_standin) -> None:
    fs = lustre_standin(osts=20, mdt_count=2, place_on={9: 3})
    (ok,) = create_cells(check(fs, 1, 18))
    assert (ok.row, ok.column, ok.status) == ("MDT0001 OST0010-001f", "2", "ok")
    assert ok.value is not None
    assert ok.value > 0
    assert ok.detail.startswith("testfs-MDT0001 x OST0012: created in ")
    (misplaced,) = create_cells(check(fs, 0, 9))
    assert (misplaced.row, misplaced.column, misplaced.status) == ("MDT0000 OST0000-000f", "9", "failed")
    assert "placed on OST0003" in misplaced.detail
    (inactive,) = create_cells(check(fs, 0, 4, ost_active=False))
    assert inactive.status == "failed"
    assert "inactive" in inactive.detail


def test_a_result_without_payload_is_placed_by_its_key() -> None:
    (cell,) = create_cells(Result("run-1", "file-create", Status.TIMEOUT, key="mdt1-ost17", error="killed"))
    assert (cell.row, cell.column, cell.label, cell.status) == ("MDT0001 OST0010-001f", "1", "t/o", "failed")
    (plain,) = create_cells(Result("run-2", "file-create", Status.CRASHED, key="plain"))
    assert (plain.row, plain.status) == ("directory", "failed")
