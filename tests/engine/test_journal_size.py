"""The journal's size on disk follows what it holds (the window, undelivered results, dead
letters), not the length of the run: a run ten times longer leaves a journal no larger."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

#: Bytes a journal of a finished run takes at most, whatever the number of its tasks.
BOUND = 256 * 1024


def journal_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.parent.glob(path.name + "*"))


def test_the_journal_of_a_finished_run_is_as_small_after_20000_tasks_as_after_2000(tmp_path: Path, run_cyclone) -> None:
    sizes = {}
    for count in (2_000, 20_000):
        journal = tmp_path / f"journal-{count}.sqlite"
        run = run_cyclone(
            "run", "-g", f"count={count}", "--journal", str(journal),
            "--sink", "jsonl", "-s", f"jsonl.path={tmp_path / f'out-{count}.jsonl'}", "--json",
        )  # fmt: skip
        assert run.returncode == 0, run.stderr
        assert json.loads(run.stdout.strip().splitlines()[-1])["succeeded"] == count
        sizes[count] = journal_bytes(journal)
        with sqlite3.connect(journal) as db:  # what it holds: the run's marks, nothing per task
            assert db.execute("SELECT count(*) FROM results").fetchone() == (0,)
    assert max(sizes.values()) <= BOUND, sizes
