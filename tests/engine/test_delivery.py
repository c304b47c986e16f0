"""Delivery threads: results handed over in memory, and the journal behind them."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from contextlib import closing
from pathlib import Path
from typing import Any, ClassVar

import pytest
from conftest import MemorySink

from cyclone_core.engine import delivery as delivery_module
from cyclone_core.engine.delivery import SinkDelivery
from cyclone_core.engine.journal import Journal, Outbox
from cyclone_core.engine.scheduler import TaskRecord
from cyclone_core.model import Result, Status


class Settler:
    """Journals tasks and their results as the master does: commit, then offer."""

    def __init__(self, path: Path) -> None:
        self.journal = Journal(path)
        self.journal.bind_run("benchmark", {}, deterministic=True)
        self.seq = 0

    def settle(self, count: int, deliveries: list[SinkDelivery]) -> None:
        records = []
        for _ in range(count):
            self.seq += 1
            records.append(TaskRecord(self.seq, f"{self.journal.run_id}-{self.seq}", "noop", {}))
        self.journal.add(records)
        results = [Result(r.id, "noop", Status.OK, key=str(r.seq)) for r in records]
        self.journal.settled(zip(records, results, strict=True))
        added = self.journal.commit()
        for delivery in deliveries:
            delivery.offer(self.journal.last_result - added + 1, 0.0, results)


def test_a_sink_gets_every_result_once_and_in_order_when_memory_overflows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, wait: Callable[..., Any], sink: Any
) -> None:
    # A sink that is down lets more results wait than memory keeps: those come from the journal.
    monkeypatch.setattr(delivery_module, "MEMORY_RESULTS", 25)
    settler = Settler(tmp_path / "journal.sqlite")
    sink.batch_size, sink.flush_interval, sink.down = 7, 0.0, "database is down"
    delivery = SinkDelivery(sink, settler.journal, backoff_max=0.05)
    delivery.start()
    try:
        for _ in range(12):
            settler.settle(5, [delivery])
        wait(lambda: delivery.errors >= 2, what="the sink to fail")
        sink.down = None
        for _ in range(4):
            settler.settle(3, [delivery])
        wait(lambda: delivery.backlog == 0, what="the sink to catch up")
    finally:
        delivery.stop(5.0)
    assert [int(r.key or 0) for r in sink.results] == list(range(1, 73))
    assert delivery.mark == settler.journal.last_result == 72


def test_a_resumed_journal_delivers_what_the_sink_missed_then_takes_new_results_from_memory(
    tmp_path: Path, wait: Callable[..., Any], sink: Any
) -> None:
    path = tmp_path / "journal.sqlite"
    first = Settler(path)
    first.settle(10, [])  # committed, never delivered: the master was killed
    first.journal.close()
    settler = Settler(path)
    settler.seq = 10
    settler.journal.register_sinks(["memory"])
    sink.batch_size, sink.flush_interval = 4, 0.0
    delivery = SinkDelivery(sink, settler.journal)
    delivery.start()
    try:
        settler.settle(6, [delivery])
        wait(lambda: delivery.backlog == 0, what="the sink to catch up")
    finally:
        delivery.stop(5.0)
    assert [int(r.key or 0) for r in sink.results] == list(range(1, 17))


def test_a_journal_that_cannot_be_read_stops_delivery_and_is_not_blamed_on_the_sink(
    tmp_path: Path, wait: Callable[..., Any], sink: Any, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "journal.sqlite"
    settler = Settler(path)
    settler.settle(3, [])  # journaled only: the delivery thread reads them from the journal
    with closing(sqlite3.connect(path)) as damage:
        damage.execute("UPDATE results SET data = x'c1'")  # not msgpack
        damage.commit()
    sink.flush_interval = 0.0
    delivery = SinkDelivery(sink, settler.journal, backoff_max=0.05)
    delivery.start()
    try:
        wait(lambda: delivery.finished, what="delivery to stop")
    finally:
        delivery.stop(5.0)
    assert (delivery.errors, sink.writes, delivery.mark) == (0, 0, 0)
    assert delivery.last_error is not None
    assert delivery.last_error.startswith("delivery stopped by an internal error: ")
    (record,) = [r for r in caplog.records if r.name == "cyclone.delivery"]
    assert record.getMessage() == f"sink 'memory': {delivery.last_error}"
    assert record.exc_info is not None


def test_results_journaled_under_a_clock_that_was_later_set_back_are_delivered_at_once(
    tmp_path: Path, wait: Callable[..., Any], sink: Any
) -> None:
    """A master restarted with its wall clock an hour behind the time its journal recorded
    used to hold those results back until the hour had passed."""
    path = tmp_path / "journal.sqlite"
    first = Settler(path)
    first.settle(3, [])  # committed, never delivered
    first.journal.close()
    with closing(sqlite3.connect(path)) as conn, conn:
        conn.execute("UPDATE results SET at = at + 3600")  # journaled an hour 'ahead' of now
    settler = Settler(path)
    settler.journal.register_sinks(["memory"])
    sink.batch_size, sink.flush_interval = 100, 0.2  # a batch that waits out its flush interval
    delivery = SinkDelivery(sink, settler.journal)
    delivery.start()
    try:
        wait(lambda: len(sink.results) == 3, timeout=10, what="the journaled results in the sink")
    finally:
        delivery.stop(5.0)


class FlakySink(MemorySink):
    """Fails on any batch holding one of ``poison`` (by key); from its ``fail_after``-th
    single-result write on, fails those too (an outage that begins meanwhile)."""

    poison: frozenset[str] = frozenset()
    singles = 0
    fail_after: int | None = None

    def write(self, results: Sequence[Result]) -> None:
        if len(results) == 1:
            self.singles += 1
            if self.fail_after is not None and self.singles > self.fail_after:
                raise ConnectionError("lost the connection")
        if any(r.key in self.poison for r in results):
            raise ValueError("cannot store it")
        super().write(results)


def test_results_that_fail_alone_while_others_succeed_are_dead_lettered_and_no_others(
    tmp_path: Path, wait: Callable[..., Any]
) -> None:
    settler = Settler(tmp_path / "journal.sqlite")
    run = settler.journal.run_id
    sink = FlakySink(batch_size=10, flush_interval=0.0)
    sink.poison = frozenset({"2", "5", "11"})
    sink.fail_after = 8  # an outage begins while the batch is written one by one, after "8"
    delivery = SinkDelivery(sink, settler.journal, backoff_max=0.05)
    delivery.start()
    try:
        settler.settle(10, [delivery])
        wait(lambda: delivery.backlog == 0, what="the first ten")
        # "9" and "10" failed alone after the last result stored: the outage may have been why,
        # so they are written again (and stored, in a batch of their own), not rejected.
        assert [d.task_id for d in delivery.latest_dead_letters] == [f"{run}-5", f"{run}-2"]
        sink.fail_after = None
        # A result that fails alone in its batch: the sink stores the last one it has again, so
        # it works, and that one is rejected.
        settler.settle(1, [delivery])
        wait(lambda: delivery.backlog == 0, what="the lone result")
    finally:
        delivery.stop(5.0)
    assert [d.task_id for d in delivery.latest_dead_letters] == [f"{run}-{i}" for i in (11, 5, 2)]
    assert {r.key for r in sink.results} == {"1", "3", "4", "6", "7", "8", "9", "10"}


def test_a_poison_result_alone_after_a_restart_is_dead_lettered_as_the_sink_stored_before(
    tmp_path: Path, wait: Callable[..., Any]
) -> None:
    """The last result a sink stored is kept in the journal: a result the sink cannot store,
    alone in the outbox when the master restarts, used to be taken for an outage for good."""
    path = tmp_path / "journal.sqlite"
    settler = Settler(path)
    run = settler.journal.run_id
    sink = FlakySink(batch_size=10, flush_interval=0.0)
    sink.poison = frozenset({"1", "4"})
    settler.journal.register_sinks(["memory"])
    delivery = SinkDelivery(sink, settler.journal, backoff_max=0.05)
    delivery.start()
    try:
        # A sink that has never stored anything cannot be told from one that is down: nothing
        # is rejected until a result after that one is stored.
        settler.settle(1, [delivery])
        wait(lambda: delivery.errors >= 2, what="the sink to fail")
        assert delivery.dead_letters == 0
        settler.settle(2, [delivery])
        wait(lambda: delivery.backlog == 0, what="the first three")
    finally:
        delivery.stop(5.0)
    settler.settle(1, [])  # journaled; the master stops before delivering it
    settler.journal.close()
    restarted = Settler(path)
    again = FlakySink(batch_size=10, flush_interval=0.0)
    again.poison = sink.poison
    delivery = SinkDelivery(again, restarted.journal, backoff_max=0.05)
    delivery.start()
    try:
        wait(lambda: delivery.backlog == 0, timeout=10, what="the lone poison result to be dead-lettered")
    finally:
        delivery.stop(5.0)
    assert [d.task_id for d in delivery.latest_dead_letters] == [f"{run}-4", f"{run}-1"]
    assert again.ids() == [f"{run}-3"]  # stored again, to show that the sink works
    assert (delivery.mark, delivery.errors) == (4, 0)


class OtherSink(FlakySink):
    name: ClassVar[str] = "other"


def test_the_last_result_each_sink_stored_is_one_row_of_the_journal_kept_by_compaction(
    tmp_path: Path, wait: Callable[..., Any]
) -> None:
    path = tmp_path / "journal.sqlite"
    settler = Settler(path)
    run = settler.journal.run_id
    names = ["memory", "other"]

    def deliver(sinks: list[FlakySink], batches: int, what: str) -> list[SinkDelivery]:
        """Deliver what the journal holds and ``batches`` batches of four new results."""
        settler.journal.register_sinks(names)
        deliveries = [SinkDelivery(s, settler.journal, backoff_max=0.05) for s in sinks]
        for d in deliveries:
            d.start()
        try:
            for _ in range(batches):
                settler.settle(4, deliveries)
            wait(lambda: all(d.backlog == 0 for d in deliveries), timeout=10, what=what)
        finally:
            for d in deliveries:
                d.stop(5.0)
        return deliveries

    deliver([FlakySink(batch_size=3, flush_interval=0.0), OtherSink(batch_size=3, flush_interval=0.0)], 3, "twelve")
    settler.journal.compact([], names)  # every sink has every result: the outbox is emptied
    with closing(sqlite3.connect(path)) as conn:
        assert conn.execute("SELECT count(*) FROM results").fetchone() == (0,)
        stored = conn.execute("SELECT sink, stored IS NOT NULL FROM delivered ORDER BY sink").fetchall()
        assert stored == [(n, 1) for n in names]
    settler.settle(1, [])  # a result neither sink can store alone, left for the next master
    settler.journal.close()
    settler = Settler(path)
    sinks = [FlakySink(batch_size=3, flush_interval=0.0), OtherSink(batch_size=3, flush_interval=0.0)]
    for sink in sinks:
        sink.poison = frozenset({"13"})
    deliveries = deliver(sinks, 0, "the poison result to be dead-lettered")
    assert [[d.task_id for d in delivery.latest_dead_letters] for delivery in deliveries] == [[f"{run}-13"]] * 2
    assert [sink.ids() for sink in sinks] == [[f"{run}-12"]] * 2


def test_a_journal_of_an_older_master_takes_the_last_stored_result_from_then_on(
    tmp_path: Path, wait: Callable[..., Any], sink: Any
) -> None:
    path = tmp_path / "journal.sqlite"
    settler = Settler(path)
    settler.journal.register_sinks(["memory"])
    settler.settle(2, [])
    settler.journal.close()
    with closing(sqlite3.connect(path)) as conn, conn:
        conn.execute("ALTER TABLE delivered DROP COLUMN stored")  # as an older master made it
    settler = Settler(path)
    sink.flush_interval = 0.0
    delivery = SinkDelivery(sink, settler.journal)
    delivery.start()
    try:
        wait(lambda: delivery.backlog == 0, what="the sink to catch up")
    finally:
        delivery.stop(5.0)
    with closing(Outbox(path, "memory")) as outbox:
        assert outbox.stored is not None
        assert outbox.stored.task_id == f"{settler.journal.run_id}-2"
