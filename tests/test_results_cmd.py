"""``cyclone results`` and :func:`cyclone_core.results.read_results` on the files of real runs."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import pytest

from cyclone_core import CycloneError, Status
from cyclone_core.results import read_results
from cyclone_core.testing import run_cluster

SCRIPT = """#!/bin/sh
echo "cyclone-metric sim_score $(( $1 * 10 ))"
[ "$1" -ne 2 ] || { echo "value 2 is not allowed" >&2; exit 5; }
"""


@pytest.fixture(scope="module")
def stored(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Two runs of a sweep in which one point fails, in an SQLite file and a JSON-lines file."""
    directory = tmp_path_factory.mktemp("results")
    script = directory / "job"
    script.write_text(SCRIPT)
    script.chmod(0o755)
    database = directory / "results.sqlite"
    runs = []
    for mode in ("fast", "slow"):
        (directory / mode).mkdir()
        run = run_cluster(
            "sweep",
            {"argv": [str(script), "{n}"], "grid": {"n": "1-3", "mode": [mode]}},
            directory=directory / mode,
            sinks={"sqlite": {"path": str(database), "flush_interval": 0.05}},
        )
        runs.append(run.summary["run_id"])
    return {"database": database, "jsonl": directory / "slow" / "results.jsonl", "runs": runs}


def test_failed_results_as_json_with_their_errors_and_parameters(stored: dict[str, Any], run_cyclone: Any) -> None:
    done = run_cyclone("results", str(stored["database"]), "--status", "failed", "--json")
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)
    assert [(r["status"], r["error"]) for r in found] == [("failed", "exit code 5: value 2 is not allowed")] * 2
    assert sorted(r["payload"]["params"]["mode"] for r in found) == ["fast", "slow"]
    assert {r["payload"]["params"]["n"] for r in found} == {2}
    assert [r["payload"]["exit_code"] for r in found] == [5, 5]
    assert found[0]["metrics"][0]["name"] == "sim_score"


def test_one_run_as_csv_with_a_column_per_parameter(stored: dict[str, Any], run_cyclone: Any) -> None:
    run_id = stored["runs"][1]
    done = run_cyclone("results", str(stored["database"]), "--run", run_id, "--csv")
    assert done.returncode == 0, done.stderr
    rows = sorted(csv.DictReader(io.StringIO(done.stdout)), key=lambda row: row["n"])  # two workers: any order
    assert [(row["run_id"], row["n"], row["mode"], row["status"], row["exit_code"]) for row in rows] == [
        (run_id, "1", "slow", "ok", "0"),
        (run_id, "2", "slow", "failed", "5"),
        (run_id, "3", "slow", "ok", "0"),
    ]
    assert json.loads(rows[2]["metrics"]) == {"sim_score": 30.0}


def test_the_listing_shows_parameters_errors_and_metrics(stored: dict[str, Any], run_cyclone: Any) -> None:
    done = run_cyclone("results", str(stored["jsonl"]), "--task-type", "command")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 3
    failed = next(line for line in lines if " failed " in line)
    assert "n=2 mode=slow  error: exit code 5: value 2 is not allowed  sim_score=20" in failed
    assert done.stderr == "3 results\n"


def test_read_results_from_python(stored: dict[str, Any]) -> None:
    found = list(read_results(stored["database"], status=Status.OK, run=stored["runs"][0]))
    assert sorted(result.payload["params"]["n"] for result in found if result.payload) == [1, 3]
    assert all(result.metrics[0].kind == "gauge" for result in found)
    assert list(read_results(stored["jsonl"], task_type="noop")) == []


def test_errors_are_one_line(tmp_path: Path, run_cyclone: Any) -> None:
    missing = run_cyclone("results", str(tmp_path / "none.sqlite"))
    assert (missing.returncode, missing.stderr) == (
        1,
        f"error: {tmp_path / 'none.sqlite'}: no such results file (the sqlite sink writes cyclone-results.sqlite)\n",
    )
    bad = run_cyclone("results", str(tmp_path), "--status", "broken")
    assert bad.returncode == 2
    assert bad.stderr == "error: status 'broken': expected one of ok, failed, timeout, crashed, quarantined\n"
    junk = tmp_path / "junk.sqlite"
    junk.write_text("not a database")
    with pytest.raises(CycloneError, match="not a results database"):
        list(read_results(junk))
