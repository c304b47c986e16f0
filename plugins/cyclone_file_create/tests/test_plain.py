"""The check of a plain directory, and the time budget every check runs under."""

from __future__ import annotations

import threading

import pytest
from cyclone_core import Status, TaskContext
from cyclone_lustre_ost.local import LustreLocal

from cyclone_file_create import CheckStatus, FileCreateTask
from cyclone_file_create.check import Budget, CheckError, CheckReport, run_within
from cyclone_file_create.plain_check import scratch_name


def run(task: FileCreateTask):
    """Execute the task as a controller whose only root is the task's directory would."""
    return task.execute(TaskContext(task_id="test-1", local=LustreLocal(roots=(task.path,))))


def test_plain_directory(tmp_path) -> None:
    outcome = run(FileCreateTask(path=str(tmp_path), mode="plain", count=5))
    assert outcome.status is Status.OK
    assert outcome.error is None
    metrics = {metric.name: metric for metric in outcome.metrics}
    assert set(metrics) == {"cyclone_file_creation_seconds", "cyclone_file_creation_max_seconds"}
    assert all(metric.labels == {"path": str(tmp_path)} and metric.unit == "s" for metric in metrics.values())
    assert 0 < metrics["cyclone_file_creation_seconds"].value <= metrics["cyclone_file_creation_max_seconds"].value
    payload = outcome.payload
    assert payload["check"] == "ok"
    assert payload["mode"] == "plain"
    assert payload["files"] == 5
    for step in ("create", "stat", "unlink"):
        assert 0 < payload[f"{step}_seconds"]["mean"] <= payload[f"{step}_seconds"]["max"]
    assert list(tmp_path.iterdir()) == []  # every file deleted


def test_plain_directory_missing(tmp_path) -> None:
    outcome = run(FileCreateTask(path=str(tmp_path / "gone"), mode="plain"))
    assert outcome.status is Status.FAILED
    assert outcome.error == f"directory {tmp_path / 'gone'} does not exist"
    assert outcome.payload["check"] == "error"
    assert outcome.metrics == []


def test_plain_file_in_the_way(tmp_path) -> None:
    # A leftover with the check's own name (a killed worker's, say) is reported, not clobbered.
    (tmp_path / scratch_name("0")).write_text("")
    outcome = run(FileCreateTask(path=str(tmp_path), mode="plain", count=1))
    assert outcome.status is Status.FAILED
    assert outcome.error == f"create {tmp_path / scratch_name('0')}: File exists"


def test_budget_stops_a_stuck_check_on_time() -> None:
    release = threading.Event()
    finished = threading.Event()
    budget = Budget(200)

    def stuck() -> CheckReport:
        with budget.step("open /stuck/file"):
            release.wait(30)
        finished.set()
        return CheckReport(CheckStatus.OK)

    report = run_within(stuck, budget)
    assert report.status is CheckStatus.TIMEOUT
    assert report.error == "check did not finish within 200 ms; stuck in: open /stuck/file"
    assert budget.remaining() <= 0
    release.set()
    assert finished.wait(10)  # the check thread goes on to its end once unstuck


def test_budget_refuses_new_steps_but_runs_cleanup() -> None:
    budget = Budget(1, started=0.0)  # long used up
    with pytest.raises(CheckError, match="did not finish within 1 ms; stuck in: create x"), budget.step("create x"):
        pytest.fail("a step must not start once the budget is used up")
    ran = []
    with budget.step("delete x", cleanup=True):
        ran.append(True)
    assert ran == [True]


def test_budget_names_the_failed_step() -> None:
    with (
        pytest.raises(CheckError, match=r"^stat /nowhere: No such file or directory$"),
        Budget(1000).step("stat /nowhere"),
    ):
        raise FileNotFoundError(2, "No such file or directory")


def test_unexpected_exception_is_raised_in_the_task() -> None:
    def broken() -> CheckReport:
        raise RuntimeError("bug")

    with pytest.raises(RuntimeError, match="bug"):
        run_within(broken, Budget(1000))
