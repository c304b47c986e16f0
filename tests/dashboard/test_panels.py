"""Panels and the dashboard's state without a master: cells, grids, bounds, and the Lustre folds."""

from __future__ import annotations

import json
import logging

import pytest

from cyclone_core.dashboard import Cell, Panel
from cyclone_core.dashboard.panels import MAX_CELLS, PanelGrid
from cyclone_core.dashboard.state import FAILURES, SAMPLES, DashboardState
from cyclone_core.engine.scheduler import Histogram
from cyclone_core.model import Attempt, Result, Status


def result(n: int, status: Status = Status.OK, type_: str = "noop", **fields: object) -> Result:
    return Result(f"run-{n}", type_, status, **fields)  # type: ignore[arg-type]


def snapshot(done: int = 0, **fields: object) -> dict[str, object]:
    return {
        "succeeded": done,
        "failed": 0,
        "quarantined": 0,
        "queued": 0,
        "in_flight": 0,
        "controllers": [],
        "sinks": [],
        **fields,
    }


def test_a_cell_takes_only_what_the_page_can_draw() -> None:
    cell = Cell("r" * 500, "c", "label", "purple", float("nan"), "d" * 1000)
    assert (len(cell.row), cell.status, cell.value, len(cell.detail)) == (64, "unknown", None, 300)
    assert Cell("r", "c", value=True).value is None  # not a number
    assert Cell("r", "c", value=3).as_dict()["value"] == 3.0


def test_a_grid_keeps_the_latest_cell_per_place_and_is_bounded(caplog: pytest.LogCaptureFixture) -> None:
    def fold(r: Result) -> list[Cell]:
        if r.key == "boom":
            raise KeyError("payload")
        return [Cell("row", r.key or "", r.status.value, "ok" if r.ok else "failed")]

    grid = PanelGrid(Panel(name="p", title="P", task_types=("probe",), fold=fold))
    grid.add_all([result(1, key="a", type_="probe"), result(2, Status.FAILED, key="a", type_="probe")])
    grid.add_all([result(3, key="b", type_="other")])  # not the panel's type
    assert [c.status for c in grid.cells.values()] == ["failed"]
    with caplog.at_level(logging.ERROR, "cyclone.dashboard"):
        grid.add(result(4, key="boom", type_="probe"))
    assert grid.errors == 1
    assert "dashboard panel 'p' failed on a result: KeyError" in caplog.text
    for n in range(MAX_CELLS + 10):
        grid.add(result(n, key=f"k{n}", type_="probe"))
    assert len(grid.cells) == MAX_CELLS
    assert grid.dropped == 11  # "a" was there already


def test_the_state_is_bounded_and_counts_by_type() -> None:
    state = DashboardState()
    latency = Histogram([0.001, 0.01, 0.1])
    failures = [
        result(n, Status.FAILED, "fail", error="x" * 1000, history=[Attempt(1, Status.FAILED, "first")])
        for n in range(FAILURES + 50)
    ]
    state.cyclone_results([*failures, *(result(n, type_=f"type{n}") for n in range(100))])
    for second in range(SAMPLES + 20):
        latency.observe([0.005] * 10)
        state.publish(snapshot(done=second), latency, now=1000.0 + second)
    s = json.loads(state.state_json())
    assert len(s["series"]["t"]) == SAMPLES
    assert s["series"]["rate"][-1] == 1.0
    assert 1 <= s["series"]["p50_ms"][-1] <= 10
    assert len(s["failures"]) == 25
    assert len(s["failures"][0]["error"]) == 300
    assert len(s["outcomes"]) == 65  # 64 types by name, the others together
    assert s["outcomes"]["(other types)"] == {"ok": 100 - 63}
    newest = s["failures"][0]["task_id"]
    assert newest == f"run-{FAILURES + 49}"
    detail = json.loads(state.failure_json(newest) or b"")
    assert detail["history"] == [
        {"attempt": 1, "status": "failed", "error": "first", "controller": None, "finished_at": 0.0}
    ]
    assert state.failure_json("run-0") is None  # no longer among the latest
    assert state.failure_json("../../etc/passwd") is None


def test_a_controller_that_left_is_remembered_with_its_host_until_it_is_back() -> None:
    state = DashboardState()
    ctl = {"id": "n1", "host": "node01", "pid": 1, "workers": 4, "in_flight": 0, "draining": False, "last_seen": 1.0}
    state.publish(snapshot(controllers=[ctl]), Histogram([1.0]))
    state.cyclone_controller_lost("n1", "silent for 20 s", 3)
    state.publish(snapshot(), Histogram([1.0]))
    gone = json.loads(state.state_json())["controllers"]
    assert gone["departed"][0] | {"at": 0} == {
        "id": "n1",
        "host": "node01",
        "workers": 4,
        "reason": "silent for 20 s",
        "requeued": 3,
        "lost": True,
        "at": 0,
    }
    state.publish(snapshot(controllers=[ctl]), Histogram([1.0]))
    assert json.loads(state.state_json())["controllers"]["departed"] == []


def test_hosts_are_folded_as_node_sets() -> None:
    state = DashboardState()
    ctls = [
        {"id": f"c{i}", "host": f"node{i:02d}", "workers": 2, "in_flight": 0, "draining": False, "last_seen": 0.0}
        for i in range(1, 33)
    ]
    state.publish(snapshot(controllers=ctls), Histogram([1.0]))
    assert json.loads(state.state_json())["controllers"]["hosts"] == "node[01-32]"
