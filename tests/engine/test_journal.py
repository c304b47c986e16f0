"""The journal: what a restarted master finds, and the outbox the sinks read."""

from __future__ import annotations

from pathlib import Path

import pytest

from cyclone_core.engine.journal import Journal, Outbox
from cyclone_core.engine.scheduler import TaskRecord
from cyclone_core.errors import ConfigError
from cyclone_core.model import Attempt, Metric, Result, Status


def fresh(path: Path) -> Journal:
    journal = Journal(path)
    journal.bind_run("benchmark", {"count": 10}, deterministic=True)
    return journal


def record(journal: Journal, seq: int) -> TaskRecord:
    return TaskRecord(seq, f"{journal.run_id}-{seq}", "sleep", {"seconds": seq}, key=f"k{seq}", timeout=5.0)


def test_a_new_journal_gets_a_run_id_that_survives_reopening(tmp_path: Path) -> None:
    journal = fresh(tmp_path / "j.sqlite")
    assert not journal.fresh
    run_id = journal.run_id
    journal.close()
    again = Journal(tmp_path / "j.sqlite")
    assert not again.fresh
    assert again.run_id == run_id
    assert Journal(tmp_path / "other.sqlite").run_id != run_id


def test_pending_tasks_and_high_water_survive_a_restart(tmp_path: Path) -> None:
    journal = fresh(tmp_path / "j.sqlite")
    records = [record(journal, seq) for seq in (1, 2, 3)]
    journal.add(records)
    journal.commit()
    records[1].failed = 1
    records[1].history.append(Attempt(1, Status.FAILED, "boom", "c1", 12.5))
    journal.retried([records[1]])
    journal.settled([(records[0], Result(records[0].id, "sleep", Status.OK, key="k1"))])
    journal.commit()
    journal.close()

    again = Journal(tmp_path / "j.sqlite")
    assert again.high_water == 3
    pending = again.pending()
    assert [(r.id, r.type, r.args, r.key, r.timeout) for r in pending] == [
        (f"{again.run_id}-2", "sleep", {"seconds": 2}, "k2", 5.0),
        (f"{again.run_id}-3", "sleep", {"seconds": 3}, "k3", 5.0),
    ]
    assert (pending[0].failed, pending[0].dispatched) == (1, 1)
    assert pending[0].history == [Attempt(1, Status.FAILED, "boom", "c1", 12.5)]
    assert again.last_result == 1


def test_uncommitted_changes_are_lost_like_a_killed_master_would_lose_them(tmp_path: Path) -> None:
    journal = fresh(tmp_path / "j.sqlite")
    journal.add([record(journal, 1)])
    journal.commit()
    journal.add([record(journal, 2)])
    journal.close()  # no commit: as if killed
    again = Journal(tmp_path / "j.sqlite")
    assert [r.seq for r in again.pending()] == [1]
    assert again.high_water == 1


def test_outbox_delivers_in_order_keeps_marks_and_purges_what_every_sink_has(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    journal = fresh(path)
    records = [record(journal, seq) for seq in range(1, 6)]
    journal.add(records)
    metric = Metric("bytes", 3.0, "B", {"ost": "OST0001"})
    journal.settled([(r, Result(r.id, "sleep", Status.OK, metrics=[metric])) for r in records])
    assert journal.commit() == 5
    journal.register_sinks(["a", "b"])

    a = Outbox(path, "a")
    last, batch = a.fetch(3)
    assert [r.task_id for r in batch] == [r.id for r in records[:3]]
    assert batch[0].metrics == [metric]
    a.delivered(last)
    b = Outbox(path, "b")
    b.delivered(b.fetch(2)[0])
    journal.compact([], ["a", "b"])
    # The five results are one outbox row, which "b" does not have all of: it stays.
    assert [r.task_id for r in Outbox(path, "b").fetch(10)[1]] == [r.id for r in records[2:]]
    assert [r.task_id for r in Outbox(path, "a").fetch(10)[1]] == [r.id for r in records[3:]]
    assert Outbox(path, "a").mark == last
    b.delivered(5)
    journal.compact([], ["a", "b"])
    assert Outbox(path, "b").fetch(10)[1] == []
    assert not Journal(path).pending()
    assert Journal(path).last_result == 5


def test_a_sink_new_to_a_journal_starts_at_the_oldest_result(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    journal = fresh(path)
    r = record(journal, 1)
    journal.add([r])
    journal.settled([(r, Result(r.id, "sleep", Status.OK))])
    journal.commit()
    journal.register_sinks(["late"])
    assert [x.task_id for x in Outbox(path, "late").fetch(10)[1]] == [r.id]


def test_resuming_with_another_generator_is_refused(tmp_path: Path) -> None:
    fresh(tmp_path / "j.sqlite").close()
    with pytest.raises(ConfigError, match="belongs to a run of generator 'benchmark', not 'tasks-file'"):
        Journal(tmp_path / "j.sqlite").bind_run("tasks-file", {}, deterministic=True)


def test_a_deterministic_generator_must_resume_with_the_same_options(tmp_path: Path) -> None:
    fresh(tmp_path / "j.sqlite").close()
    with pytest.raises(ConfigError, match="resume with the same options"):
        Journal(tmp_path / "j.sqlite").bind_run("benchmark", {"count": 11}, deterministic=True)
    Journal(tmp_path / "j.sqlite").bind_run("benchmark", {"count": 11}, deterministic=False)


def test_a_file_that_is_not_sqlite_is_one_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    path.write_text("not a database at all, " * 100)
    with pytest.raises(ConfigError, match=f"journal {path}"):
        Journal(path)


def test_compaction_keeps_the_window_and_the_result_numbering(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    journal = fresh(path)
    records = [record(journal, seq) for seq in range(1, 5)]
    journal.add(records)
    journal.commit()
    records[2].crashed = 2
    records[2].history.append(Attempt(1, Status.CRASHED, "segfault", "c1", 1.0))
    journal.retried([records[2]])
    journal.settled([(records[0], Result(records[0].id, "sleep", Status.OK))])
    journal.commit()
    journal.register_sinks(["s"])
    outbox = Outbox(path, "s")
    outbox.delivered(outbox.fetch(10)[0])
    journal.compact(records[1:], ["s"])
    journal.close()

    again = Journal(path)
    pending = again.pending()
    assert [(r.seq, r.crashed) for r in pending] == [(2, 0), (3, 2), (4, 0)]
    assert pending[1].history == [Attempt(1, Status.CRASHED, "segfault", "c1", 1.0)]
    assert again.last_result == 1
    r = record(again, 5)
    again.add([r])
    again.settled([(r, Result(r.id, "sleep", Status.OK))])
    again.commit()
    assert [x.task_id for x in Outbox(path, "s").fetch(10)[1]] == [r.id]
