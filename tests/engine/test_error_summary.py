"""The most common errors of a run: grouping, bounds, one line each, and ``cyclone run``'s end."""

from __future__ import annotations

import json
import time
from pathlib import Path

from engine_support import toml

from cyclone_core.engine import error_summary
from cyclone_core.engine.error_summary import ErrorGroup, ErrorSummary, format_error_line, normalise_error, one_line
from cyclone_core.model import Result, Status


def result(task_id: str, status: Status, error: str | None) -> Result:
    return Result(task_id=task_id, task_type="command", status=status, started_at=time.time(), error=error)


def test_numbers_and_ids_are_normalised_so_that_errors_of_one_cause_group() -> None:
    assert normalise_error("exit code 3: seed 17 diverged") == normalise_error("exit code 3: seed 42 diverged")
    assert normalise_error("segfault at 0x7ffd1a2b in pid 4242") == "segfault at <id> in pid #"
    assert normalise_error("object 3f2a9c1d0b7e not found") == "object <id> not found"
    assert normalise_error("alpha 0.25 out of range") == "alpha # out of range"
    assert normalise_error("deadbeefcafe") == "deadbeefcafe"  # a word without a digit is a word
    assert one_line("Traceback (most recent call last):\n  File x\nValueError: bad") == (
        "Traceback (most recent call last): File x ValueError: bad"
    )


def test_groups_count_keep_three_tasks_and_show_the_common_text_when_errors_differ() -> None:
    summary = ErrorSummary()
    summary.cyclone_results(
        [
            result("r-1", Status.FAILED, "exit code 3: seed 1 diverged"),
            result("r-2", Status.OK, None),
            result("r-3", Status.QUARANTINED, "killed by SIGSEGV"),
            result("r-4", Status.FAILED, "exit code 3: seed 4 diverged"),
            result("r-5", Status.FAILED, "exit code 3: seed 5 diverged"),
            result("r-6", Status.FAILED, "exit code 3: seed 6 diverged"),
            result("r-7", Status.FAILED, None),
        ]
    )
    assert [group.as_dict() for group in summary.top()] == [
        {"error": "exit code #: seed # diverged", "count": 4, "tasks": ["r-1", "r-4", "r-5"]},
        {"error": "killed by SIGSEGV", "count": 1, "tasks": ["r-3"]},
        {"error": "failed, without an error message", "count": 1, "tasks": ["r-7"]},
    ]
    assert len(summary.top(2)) == 2


def test_the_number_of_groups_is_bounded(monkeypatch) -> None:
    monkeypatch.setattr(error_summary, "MAX_GROUPS", 3)
    summary = ErrorSummary()
    summary.add([result(f"r-{i}", Status.FAILED, f"error {chr(97 + i % 26)}") for i in range(100)])
    assert len(summary.top(100)) == 3
    assert sum(group.count for group in summary.top()) + summary.others == 100


def test_a_line_fits_the_width_and_keeps_the_head_and_tail_of_a_long_error() -> None:
    error = "exit code 1: Traceback (most recent call last): " + "File x, line 1, in f " * 20 + "ValueError: alpha"
    line = format_error_line(ErrorGroup(error, 2, ["run7-12", "run7-40"]), 100, "run7")
    assert len(line) == 100
    assert line.startswith("    2x  exit code 1: Traceback")
    assert line.endswith("ValueError: alpha   (tasks 12, 40)")
    assert format_error_line(ErrorGroup("killed by SIGSEGV", 1, ["run7-7"]), 100, "run7") == (
        "    1x  killed by SIGSEGV   (task 7)"
    )


def test_cyclone_run_ends_with_the_most_common_errors(cyclone, tmp_path: Path) -> None:
    tasks = [
        *({"type": "fail", "key": f"a{i}", "args": {"message": f"alpha {i} out of range"}} for i in range(4)),
        {"type": "fail", "key": "b", "args": {"message": "no input file"}},
        *({"type": "noop", "key": f"n{i}"} for i in range(10)),
    ]
    tasks_file = tmp_path / "tasks.json"
    tasks_file.write_text(json.dumps(tasks))
    settings = tmp_path / "run.toml"
    settings.write_text(toml({"master": {"max_failed_retries": 0}}))
    args = ("run", "--config", str(settings), "--workers", "2", "--generator", "tasks-file",
            "-g", f"path={tasks_file}", "-s", f"sqlite.path={tmp_path / 'results.sqlite'}")  # fmt: skip
    text = cyclone(*args)
    assert text.wait(120) == 1, text.output()
    lines = text.output().splitlines()
    at = lines.index("  most common errors:")
    assert "4x  RuntimeError: alpha # out of range   (tasks " in lines[at + 1], lines
    assert "1x  RuntimeError: no input file   (task " in lines[at + 2], lines
    as_json = cyclone(*args, "--json")
    assert as_json.wait(120) == 1, as_json.output()
    errors = json.loads(as_json.output().strip().splitlines()[-1])["errors"]
    assert [(e["error"], e["count"], len(e["tasks"])) for e in errors] == [
        ("RuntimeError: alpha # out of range", 4, 3),
        ("RuntimeError: no input file", 1, 1),
    ]
