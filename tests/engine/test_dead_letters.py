"""Results a sink cannot store: rejected into the journal's dead letters while the rest flows,
shown in status, metrics and ``cyclone results --dead-letters``; an outage rejects nothing."""

from __future__ import annotations

import json
import sqlite3
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import attrs
import msgpack
import pytest
from conftest import RunningMaster
from rich.console import Console

from cyclone_core import ResultsRejected, unstructure
from cyclone_core.builtins.generators import BenchmarkGenerator
from cyclone_core.builtins.sinks import JsonlSink, SqliteSink
from cyclone_core.engine import protocol as p
from cyclone_core.engine.journal import Journal, Outbox, read_dead_letters
from cyclone_core.engine.scheduler import Scheduler, TaskRecord
from cyclone_core.engine.status import render_status
from cyclone_core.model import Result, ResultSink, Status
from cyclone_core.settings import MasterSettings
from cyclone_core.testing import free_port, wait_until


def nested(depth: int) -> dict[str, Any]:
    payload: dict[str, Any] = {}
    for _ in range(depth):
        payload = {"x": payload}
    return payload


def test_the_built_in_sinks_name_the_results_they_cannot_store(tmp_path: Path) -> None:
    good = Result("r-1", "noop", Status.OK)
    deep = Result("r-2", "noop", Status.OK, payload=nested(500))
    huge = Result("r-3", "noop", Status.OK, attempt=2**63)
    jsonl = JsonlSink(path=str(tmp_path / "out.jsonl"))
    sqlite = SqliteSink(path=str(tmp_path / "out.sqlite"))
    for sink, poison in ((jsonl, deep), (sqlite, huge)):
        sink.open()
        with pytest.raises(ResultsRejected) as rejected:
            sink.write([good, poison])
        assert [r.task_id for r in rejected.value.results] == [poison.task_id]
        assert "\n" not in rejected.value.reason
        sink.write([good])
        sink.close()
    assert [json.loads(line)["task_id"] for line in (tmp_path / "out.jsonl").read_text().splitlines()] == ["r-1"]
    with sqlite3.connect(tmp_path / "out.sqlite") as db:
        assert db.execute("SELECT task_id FROM results").fetchall() == [("r-1",)]


def seed_journal(path: Path, poison: Sequence[Result]) -> int:
    """A journal as a master left it: ``poison`` journaled (built by that master) and not
    delivered, the run's generator not started yet.  Returns the number of results in it."""
    journal = Journal(path)
    journal.bind_run("benchmark", unstructure(GENERATOR), deterministic=True)
    records = [TaskRecord(seq, f"old-{seq}", "noop", {}) for seq in range(1, len(poison) + 1)]
    journal.settled(zip(records, poison, strict=True))
    journal.commit()
    journal.close()
    return len(poison)


GENERATOR = BenchmarkGenerator(count=40, task="noop")


def run_master(start_master: Callable[..., RunningMaster], journal: Path, sinks: list[ResultSink]) -> RunningMaster:
    return start_master(
        GENERATOR,
        sinks,
        journal=str(journal),
        metrics_port=free_port(),
        heartbeat_interval=0.3,
        controller_timeout=2.0,
    )


def test_poison_results_become_dead_letters_and_the_rest_reaches_the_built_in_sinks(
    start_master, cyclone, tmp_path: Path, run_cyclone
) -> None:
    """A previous master journaled results the sinks cannot take (a payload nested 500 deep,
    an attempt of 2**63) and stopped before delivering them: they used to stop delivery to the
    sinks for good, across restarts."""
    journal = tmp_path / "journal.sqlite"
    good = Result("old-2", "noop", Status.OK)
    seed_journal(
        journal,
        [
            Result("old-1", "noop", Status.OK, payload=nested(500)),
            good,
            Result("old-3", "noop", Status.OK, attempt=2**63),
        ],
    )
    jsonl = JsonlSink(path=str(tmp_path / "out.jsonl"), batch_size=10, flush_interval=0.05)
    sqlite = SqliteSink(path=str(tmp_path / "out.sqlite"), batch_size=10, flush_interval=0.05)
    master = run_master(start_master, journal, [jsonl, sqlite])
    cyclone("controller", "--master", master.endpoint, "--insecure", "--workers", "1")
    assert master.join(60) == 0
    status = master.master.status()
    assert status["dead_letters"]["count"] == 4  # two for each sink
    assert {(d["sink"], d["task_id"]) for d in status["dead_letters"]["latest"]} >= {
        ("jsonl", "old-1"),
        ("sqlite", "old-3"),
    }
    assert {s["name"]: s["dead_letters"] for s in status["sinks"]} == {"jsonl": 2, "sqlite": 2}
    console = Console(record=True, width=200)
    render_status(status, console)
    shown = console.export_text()
    assert "4 results rejected by sinks (cyclone results --dead-letters), latest:" in shown
    assert "- old-3 (sqlite, " in shown
    stored = [json.loads(line)["task_id"] for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert sorted(stored) == sorted(["old-2", *(f"{master.master.run_id}-{i}" for i in range(1, 41))])
    with sqlite3.connect(tmp_path / "out.sqlite") as db:
        assert db.execute("SELECT count(*), count(DISTINCT task_id) FROM results").fetchone() == (41, 41)
    letters = read_dead_letters(journal)
    assert {(d.sink, d.task_id) for d in letters} == {(s, f"old-{i}") for s in ("jsonl", "sqlite") for i in (1, 3)}
    assert all(d.error for d in letters)
    # Listed by cyclone results, as lines and as JSON.
    listed = run_cyclone("results", "--dead-letters", str(journal))
    assert listed.returncode == 0, listed.stderr
    assert "old-1" in listed.stdout
    assert "old-3" in listed.stdout
    assert "4 dead letters" in listed.stderr
    as_json = json.loads(run_cyclone("results", "--dead-letters", str(journal), "--json").stdout)
    assert {d["task_id"] for d in as_json} == {"old-1", "old-3"}


@attrs.define(kw_only=True)
class PickySink(ResultSink):
    """A third-party sink that fails, with no word of which result is at fault, on any batch
    holding the result of task key ``bad``; or on every batch (``down``, or once it has stored
    ``down_after`` results)."""

    name: ClassVar[str] = "picky"
    bad: str = "7"
    down: bool = False
    down_after: int | None = None
    stored: list[str] = attrs.field(factory=list)

    def write(self, results: Sequence[Result]) -> None:
        if self.down or (self.down_after is not None and len(self.stored) >= self.down_after):
            raise ConnectionError("picky sink's server is down")
        if any(r.key == self.bad for r in results):
            raise ValueError(f"value too long for column (key {self.bad})")
        self.stored.extend(r.task_id for r in results if r.task_id not in self.stored)  # idempotent, as it must


def test_a_batch_that_fails_is_retried_result_by_result_and_the_one_that_fails_alone_is_dead_lettered(
    start_master, cyclone, tmp_path: Path
) -> None:
    sink = PickySink(batch_size=8, flush_interval=0.05)
    master = run_master(start_master, tmp_path / "journal.sqlite", [sink])
    cyclone("controller", "--master", master.endpoint, "--insecure", "--workers", "1")
    assert master.join(60) == 0
    run_id = master.master.run_id
    assert sorted(sink.stored) == sorted(f"{run_id}-{i}" for i in range(1, 41) if i != 8)  # key "7" is task 8
    (letter,) = read_dead_letters(tmp_path / "journal.sqlite")
    assert (letter.sink, letter.task_id) == ("picky", f"{run_id}-8")
    assert letter.error == "ValueError: value too long for column (key 7)"
    assert letter.result is not None
    assert letter.result.key == "7"
    assert master.master.undelivered == 0


def test_a_sink_that_is_down_dead_letters_nothing(start_master, cyclone, tmp_path: Path) -> None:
    sink = PickySink(down=True, batch_size=8, flush_interval=0.05)
    master = run_master(start_master, tmp_path / "journal.sqlite", [sink])
    assert master.master.core is not None
    master.master.core.delivery_timeout = 1.0
    cyclone("controller", "--master", master.endpoint, "--insecure", "--workers", "1")
    port = master.master.settings.metrics_port
    wait_until(lambda: master.master.status()["sinks"][0]["errors"] >= 2, 30, "a few failed deliveries")
    metrics = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics").read().decode()
    assert 'cyclone_dead_letters_total{sink="picky"} 0.0' in metrics
    master.stop()
    assert master.master.undelivered == 40
    assert read_dead_letters(tmp_path / "journal.sqlite") == []
    outbox = Outbox(tmp_path / "journal.sqlite", "picky")
    assert outbox.dead_letters(5) == (0, [])
    outbox.close()


def test_a_poison_result_left_to_a_restarted_master_is_dead_lettered(start_master, cyclone, tmp_path: Path) -> None:
    """The run's last result is one the sink cannot store, and the sink went down just before
    it: the master stops with that result undelivered.  Restarted on its journal, the master
    used to take the sink for down for good, as no later result could show that it works."""
    journal = tmp_path / "journal.sqlite"
    sink = PickySink(bad="39", down_after=39, batch_size=8, flush_interval=0.05)  # key "39": task 40
    first = run_master(start_master, journal, [sink])
    assert first.master.core is not None
    first.master.core.delivery_timeout = 1.0
    cyclone("controller", "--master", first.endpoint, "--insecure", "--workers", "1")
    assert first.join(60) == 1
    assert (first.master.undelivered, len(sink.stored)) == (1, 39)
    assert read_dead_letters(journal) == []
    restarted = PickySink(bad="39", batch_size=8, flush_interval=0.05)
    second = run_master(start_master, journal, [restarted])
    assert second.master.core is not None
    second.master.core.delivery_timeout = 1.0
    assert second.join(60) == 0
    assert second.master.undelivered == 0
    assert restarted.stored == sink.stored[-1:]  # stored again, to show that the sink works
    (letter,) = read_dead_letters(journal)
    assert (letter.sink, letter.task_id) == ("picky", f"{second.master.run_id}-40")


def test_poison_from_a_controller_reaches_the_built_in_sinks_as_a_failed_result_they_store(
    start_master, peer, tmp_path: Path
) -> None:
    """What the wire lets through, the sinks can store: a result row too deep, or with numbers
    beyond SQLite's signed 64 bits (msgpack carries unsigned ones up to 2**64 - 1), becomes a
    failed result saying what is wrong, stored like any other."""
    jsonl = JsonlSink(path=str(tmp_path / "out.jsonl"), batch_size=10, flush_interval=0.05)
    sqlite = SqliteSink(path=str(tmp_path / "out.sqlite"), batch_size=10, flush_interval=0.05)
    master = start_master(BenchmarkGenerator(count=5), [jsonl, sqlite])
    c = peer(master.endpoint)
    c.hello("c1", credit=5)
    tasks = c.expect(p.Dispatch).tasks
    assert len(tasks) == 5
    rows = [p.result_to_row(Result(t.id, t.type, Status.OK, key=t.key, attempt=t.attempt)) for t in tasks]
    rows[0][9] = nested(500)  # payload
    rows[1][4] = 2**63  # attempt
    rows[2][9] = {"n": 2**63}
    rows[3][8] = [["m", 1.0, "", {}, 2**64 - 1, "gauge"]]  # a metric's timestamp
    c.send_raw(msgpack.packb({"v": p.PROTOCOL_VERSION, "t": "results", "results": rows, "credit": 0}))
    assert sorted(c.expect(p.Ack).task_ids) == sorted(t.id for t in tasks)
    assert c.expect(p.Shutdown).reason == "all tasks are done"
    c.send(p.Goodbye())
    assert master.join(30) == 0
    stored = {r["task_id"]: r for r in map(json.loads, (tmp_path / "out.jsonl").read_text().splitlines())}
    assert [stored[t.id]["status"] for t in tasks] == ["failed"] * 4 + ["ok"]
    assert all(stored[t.id]["error"].startswith("malformed result: ") for t in tasks[:4])
    with sqlite3.connect(tmp_path / "out.sqlite") as db:
        assert db.execute("SELECT count(*) FROM results").fetchone() == (5,)
    assert read_dead_letters(master.master.settings.journal) == []


def test_a_quarantine_of_a_task_with_the_longest_error_reads_back_from_the_journal(tmp_path: Path) -> None:
    """The master's own verdict must stay within what a result may carry: a quarantine naming
    an error of the largest size read back as an unreadable row (and stopped delivery)."""
    scheduler = Scheduler(MasterSettings(max_crash_retries=0))
    journal = Journal(tmp_path / "journal.sqlite")
    journal.bind_run("benchmark", {}, deterministic=True)
    record = TaskRecord(1, "r-1", "noop", {})
    scheduler.submit([record])
    scheduler.register("c1", host="h", pid=1, workers=1, credit=1, task_types=["noop"], now=0.0)
    (_, (leased,)), *_ = scheduler.take(0.0).dispatch.items()
    crash = Result("r-1", "noop", Status.CRASHED, attempt=leased.attempt, error="x" * p.MAX_ERROR, controller="c1")
    scheduler.results("c1", [crash], 1.0)
    (settled,) = scheduler.take(1.0).settled
    assert settled[1].status is Status.QUARANTINED
    journal.settled([settled])
    journal.commit()
    outbox = Outbox(journal.path, "sink")
    _, (result,) = outbox.fetch(10)
    assert result.status is Status.QUARANTINED
    assert len(result.error or "") == p.MAX_ERROR
    outbox.close()
    journal.close()
