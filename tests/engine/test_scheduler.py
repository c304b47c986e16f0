"""The master's scheduler, driven by events alone: no sockets, no processes, no clocks."""

from __future__ import annotations

import pytest

from cyclone_core.config import MasterSettings
from cyclone_core.engine.scheduler import Histogram, Scheduler, TaskRecord, TaskState
from cyclone_core.model import Result, Status


def make(window: int = 100, known: tuple[str, ...] | None = ("noop", "sleep"), **settings: float) -> Scheduler:
    return Scheduler(MasterSettings(window=window, **settings), known_types=known)  # type: ignore[arg-type]


def records(count: int, type_: str = "noop", start: int = 1, timeout: float | None = None) -> list[TaskRecord]:
    return [TaskRecord(seq, f"r-{seq}", type_, {}, timeout=timeout) for seq in range(start, start + count)]


def join(s: Scheduler, cid: str = "c1", credit: int = 4, types: tuple[str, ...] = ("noop",), now: float = 0.0) -> None:
    assert s.register(cid, host="h", pid=hash(cid) % 10000, workers=2, credit=credit, task_types=types, now=now) is None


def result(task_id: str, status: Status = Status.OK, attempt: int = 1, error: str | None = None) -> Result:
    return Result(task_id, "noop", status, attempt=attempt, error=error, duration=0.01)


def dispatched(s: Scheduler, now: float = 0.0) -> dict[str, list[str]]:
    return {cid: [r.id for r in batch] for cid, batch in s.take(now).dispatch.items()}


def test_credit_is_filled_in_fifo_order_in_one_batch() -> None:
    s = make()
    s.submit(records(10))
    join(s, credit=4)
    assert dispatched(s) == {"c1": ["r-1", "r-2", "r-3", "r-4"]}
    assert dispatched(s) == {}  # no credit left
    s.results("c1", [result("r-1"), result("r-2")], 1.0)
    s.grant("c1", 2, 1.0)
    assert dispatched(s, 1.0) == {"c1": ["r-5", "r-6"]}
    assert (s.queued, s.in_flight) == (4, 4)


def test_controllers_are_served_first_come_first_served() -> None:
    s = make()
    join(s, "early", credit=3)
    join(s, "late", credit=3)
    s.submit(records(4))
    assert dispatched(s) == {"early": ["r-1", "r-2", "r-3"], "late": ["r-4"]}


def test_a_controller_gets_only_task_types_it_runs() -> None:
    s = make()
    s.submit([*records(2, "sleep"), *records(2, "noop", start=3)])
    join(s, "noop-only", credit=10, types=("noop",))
    assert dispatched(s) == {"noop-only": ["r-3", "r-4"]}
    join(s, "both", credit=10, types=("noop", "sleep"))
    assert dispatched(s) == {"both": ["r-1", "r-2"]}


def test_mixed_types_keep_their_order_across_queues() -> None:
    s = make()
    s.submit([TaskRecord(i, f"r-{i}", "noop" if i % 2 else "sleep", {}) for i in range(1, 7)])
    join(s, credit=6, types=("noop", "sleep"))
    assert dispatched(s) == {"c1": [f"r-{i}" for i in range(1, 7)]}


def test_the_window_bounds_live_tasks() -> None:
    s = make(window=5)
    assert s.room == 5
    s.submit(records(5))
    assert s.room == 0
    join(s, credit=2)
    s.take(0.0)
    s.results("c1", [result("r-1")], 1.0)
    assert s.room == 1
    assert [r.id for r, _ in s.take(1.0).settled] == ["r-1"]


def test_only_the_first_terminal_result_counts() -> None:
    s = make()
    s.submit(records(1))
    join(s)
    s.take(0.0)
    s.results("c1", [result("r-1"), result("r-1")], 1.0)
    s.results("c1", [result("r-1", Status.FAILED)], 2.0)
    actions = s.take(2.0)
    assert [(r.id, res.status) for r, res in actions.settled] == [("r-1", Status.OK)]
    assert (s.stats.succeeded, s.stats.failed, s.stats.duplicates) == (1, 0, 2)


def test_a_failure_is_retried_within_its_budget_then_final_with_history() -> None:
    s = make(max_failed_retries=1)
    s.submit(records(1))
    join(s, credit=1)
    s.take(0.0)
    s.results("c1", [result("r-1", Status.FAILED, attempt=1, error="boom 1")], 1.0)
    s.grant("c1", 1, 1.0)
    actions = s.take(1.0)
    assert [r.id for r in actions.requeued] == ["r-1"]
    assert [(r.id, r.attempt) for r in actions.dispatch["c1"]] == [("r-1", 2)]
    s.results("c1", [result("r-1", Status.FAILED, attempt=2, error="boom 2")], 2.0)
    ((_, final),) = s.take(2.0).settled
    assert final.status is Status.FAILED
    assert final.error == "boom 2"
    assert [(a.attempt, a.status, a.error) for a in final.history] == [(1, Status.FAILED, "boom 1")]
    assert (s.stats.failed, s.stats.retried) == (1, 1)


def test_a_task_that_keeps_crashing_is_quarantined_with_its_attempts() -> None:
    s = make(max_crash_retries=2)
    s.submit(records(1))
    join(s, credit=1)
    statuses = [Status.CRASHED, Status.TIMEOUT, Status.CRASHED]
    for attempt, status in enumerate(statuses, start=1):
        batch = s.take(float(attempt)).dispatch["c1"]
        assert [r.attempt for r in batch] == [attempt]
        s.results("c1", [result("r-1", status, attempt=attempt, error=f"attempt {attempt}")], float(attempt))
        s.grant("c1", 1, float(attempt))
    settled = s.take(9.0).settled
    ((_, final),) = settled
    assert final.status is Status.QUARANTINED
    assert [a.status for a in final.history] == statuses
    assert "quarantined after 3 attempts (crashed or timed out 3 times)" in (final.error or "")
    assert (s.stats.quarantined, s.stats.crashed, s.stats.timed_out) == (1, 2, 1)
    assert not s.tasks


def test_a_late_copy_of_a_counted_failure_is_dropped() -> None:
    s = make(max_failed_retries=5)
    s.submit(records(1))
    join(s, credit=2)
    s.take(0.0)
    s.results("c1", [result("r-1", Status.FAILED, attempt=1)], 1.0)
    s.take(1.0)  # attempt 2 leased
    s.results("c1", [result("r-1", Status.FAILED, attempt=1)], 2.0)  # re-sent after a reconnect
    assert s.tasks["r-1"].failed == 1
    assert s.stats.duplicates == 1


def test_a_silent_controller_is_lost_and_its_tasks_requeued() -> None:
    s = make(controller_timeout=10)
    s.submit(records(3))
    join(s, "c1", credit=2)
    s.take(0.0)
    join(s, "c2", credit=0, now=5.0)
    s.heartbeat("c2", [], False, 12.0)
    s.tick(12.0)
    actions = s.take(12.0)
    assert [(lost.id, lost.requeued) for lost in actions.lost] == [("c1", 2)]
    assert not s.knows("c1")
    s.grant("c2", 3, 12.0)
    assert dispatched(s, 12.0) == {"c2": ["r-2", "r-1", "r-3"]}  # re-queued ones first
    assert s.tasks["r-1"].lost == 1
    assert s.tasks["r-1"].history[0].error == "lost: controller c1 silent for 12 s"


def test_losing_a_task_too_often_quarantines_it() -> None:
    s = make(controller_timeout=10, max_lost_retries=1)
    s.submit(records(1))
    for round_, now in enumerate((0.0, 20.0)):
        join(s, f"c{round_}", credit=1, now=now)
        s.take(now)
        s.tick(now + 11)
    ((_, final),) = s.take(40.0).settled
    assert final.status is Status.QUARANTINED
    assert "lost 2 times" in (final.error or "")


def test_heartbeat_takes_back_tasks_missing_twice_a_heartbeat_apart() -> None:
    s = make(heartbeat_interval=2)
    s.submit(records(2))
    join(s, credit=2)
    s.take(0.0)
    s.heartbeat("c1", ["r-1"], False, 0.5)  # crossed the dispatch of r-2: not yet
    s.heartbeat("c1", ["r-1"], False, 1.5)  # missing again, but within one interval
    assert s.tasks["r-2"].state is TaskState.LEASED
    s.heartbeat("c1", ["r-1"], False, 2.6)
    assert s.tasks["r-2"].state is TaskState.PENDING
    assert s.tasks["r-2"].lost == 1
    s.heartbeat("c1", ["r-1"], False, 9.0)
    assert s.tasks["r-1"].state is TaskState.LEASED


def test_a_task_seen_again_is_no_longer_missing() -> None:
    s = make(heartbeat_interval=2)
    s.submit(records(1))
    join(s, credit=1)
    s.take(0.0)
    s.heartbeat("c1", [], False, 0.5)
    s.heartbeat("c1", ["r-1"], False, 1.0)
    s.heartbeat("c1", [], False, 3.0)
    assert s.tasks["r-1"].state is TaskState.LEASED


def test_handback_requeues_at_the_front_without_counting_an_attempt() -> None:
    s = make()
    s.submit(records(3))
    join(s, "c1", credit=2)
    s.take(0.0)
    s.heartbeat("c1", ["r-1", "r-2"], True, 1.0)
    s.handback("c1", ["r-2"], 1.0)
    join(s, "c2", credit=1, now=1.0)
    batch = s.take(1.0).dispatch["c2"]
    assert [(r.id, r.attempt) for r in batch] == [("r-2", 1)]
    assert s.tasks["r-2"].lost == 0


def test_a_draining_controller_gets_nothing_more() -> None:
    s = make()
    s.submit(records(4))
    join(s, credit=1)
    s.take(0.0)
    s.heartbeat("c1", ["r-1"], True, 1.0)
    s.grant("c1", 3, 1.0)
    assert dispatched(s, 1.0) == {}


def test_goodbye_ends_leases_and_counts_leftovers_as_lost() -> None:
    s = make()
    s.submit(records(1))
    join(s, credit=1)
    s.take(0.0)
    s.goodbye("c1", 1.0)
    actions = s.take(1.0)
    assert [(lost.id, lost.reason, lost.requeued) for lost in actions.lost] == [("c1", "goodbye", 1)]
    assert s.tasks["r-1"].state is TaskState.PENDING


def test_a_lease_ends_at_the_timeout_plus_grace() -> None:
    s = make(controller_timeout=5)
    s.submit(records(1, timeout=10.0))
    join(s, credit=1)
    s.take(0.0)
    s.heartbeat("c1", ["r-1"], False, 14.0)
    s.tick(14.0)
    assert s.tasks["r-1"].state is TaskState.LEASED
    s.heartbeat("c1", ["r-1"], False, 15.5)
    s.tick(15.5)
    assert s.tasks["r-1"].state is TaskState.PENDING
    assert "after its timeout" in (s.tasks["r-1"].history[0].error or "")


def test_deadlines_allow_for_tasks_queued_ahead_in_the_controller() -> None:
    s = make(controller_timeout=5)
    s.submit(records(4, timeout=10.0))
    join(s, credit=4)  # two workers: the 3rd and 4th tasks wait for a free worker
    batch = s.take(0.0).dispatch["c1"]
    assert [r.deadline for r in batch] == [15.0, 15.0, 25.0, 25.0]


def test_a_result_counts_only_from_the_controller_holding_the_lease() -> None:
    s = make()
    s.submit(records(1))
    join(s, "c1", credit=1)
    join(s, "c2", credit=1)
    s.take(0.0)
    s.results("c2", [result("r-1")], 1.0)  # c2 does not hold r-1
    assert s.stats.refused == 1
    assert not s.take(1.0).settled
    assert s.tasks["r-1"].controller is s.controllers["c1"]
    s.results("c1", [result("r-1")], 2.0)
    ((_, final),) = s.take(2.0).settled
    assert final.ok
    assert final.controller == "c1"
    assert not s.controllers["c1"].leases


def test_a_result_for_a_task_leased_before_a_restart_counts_from_a_registered_controller() -> None:
    s = make()
    s.submit(records(1))  # as a resumed journal hands it back: never leased by this master
    join(s, "c1", credit=0)
    s.results("c1", [result("r-1")], 1.0)
    ((_, final),) = s.take(1.0).settled
    assert final.ok


def test_a_stale_result_from_a_controller_whose_lease_ended_is_refused() -> None:
    s = make(max_failed_retries=3)
    s.submit(records(1))
    join(s, "c1", credit=1)
    s.take(0.0)
    s.tick(100.0)  # c1 lost: attempt 1 counted as lost, attempt 2 goes elsewhere
    join(s, "c2", credit=1, now=100.0)
    assert [r.attempt for r in s.take(100.0).dispatch["c2"]] == [2]
    join(s, "c1", credit=0, now=101.0)  # the zombie comes back with its old result
    s.results("c1", [result("r-1", Status.FAILED, attempt=1)], 101.0)
    assert s.stats.refused == 1
    assert s.tasks["r-1"].state is TaskState.LEASED
    assert s.tasks["r-1"].failed == 0


def test_credit_is_capped_per_controller() -> None:
    s = make(max_credit=3)
    s.submit(records(10))
    join(s, "c1", credit=2**20)
    assert len(s.take(0.0).dispatch["c1"]) == 3
    s.grant("c1", 2**20, 1.0)
    assert s.controllers["c1"].credit == 0  # it holds its maximum already


def test_registration_is_refused_without_a_known_task_type() -> None:
    s = make()
    reason = s.register("c1", host="h", pid=1, workers=1, credit=1, task_types=["lustre-ost-io"], now=0.0)
    assert reason == "this controller runs none of the task types the master knows"
    assert not s.knows("c1")


def test_an_id_in_use_by_another_live_process_is_refused_then_replaced_once_silent() -> None:
    s = make(controller_timeout=10)
    s.submit(records(1))
    assert s.register("c1", host="a", pid=1, workers=1, credit=1, task_types=["noop"], now=0.0) is None
    s.take(0.0)
    reason = s.register("c1", host="b", pid=2, workers=1, credit=1, task_types=["noop"], now=5.0)
    assert reason == "controller id 'c1' is in use by pid 1 on a"
    assert s.in_use_for("c1", "b", 2, 5.0) == 5.0
    assert s.in_use_for("c1", "a", 1, 5.0) == 0.0  # its own holder
    assert s.register("c1", host="b", pid=2, workers=1, credit=1, task_types=["noop"], now=11.0) is None
    assert s.controllers["c1"].pid == 2
    assert s.tasks["r-1"].lost == 1
    assert dispatched(s, 11.0) == {"c1": ["r-1"]}


def test_a_reconnect_keeps_the_leases_and_takes_the_new_credit() -> None:
    s = make()
    s.submit(records(3))
    join(s, credit=2)
    s.take(0.0)
    join(s, credit=1, now=1.0)
    assert len(s.controllers["c1"].leases) == 2
    assert dispatched(s, 1.0) == {"c1": ["r-3"]}


def test_a_task_of_an_unknown_type_fails_at_once() -> None:
    s = make()
    s.submit(records(1, "teleport"))
    ((_, final),) = s.take(0.0).settled
    assert final.status is Status.FAILED
    assert final.error == "task type 'teleport' is not registered on the master"
    assert s.queued == 0


def test_stop_dispatching_holds_everything_back() -> None:
    s = make()
    s.submit(records(2))
    join(s, credit=2)
    s.stop_dispatching()
    assert dispatched(s) == {}


def test_snapshot_counts_controllers_and_tasks() -> None:
    s = make()
    s.submit(records(3))
    join(s, credit=2)
    s.take(0.0)
    snap = s.snapshot()
    assert (snap["queued"], snap["in_flight"], snap["submitted"]) == (1, 2, 3)
    assert [(c["id"], c["in_flight"], c["workers"]) for c in snap["controllers"]] == [("c1", 2, 2)]


def test_histogram_quantiles_are_close() -> None:
    h = Histogram.log_spaced()
    h.observe([value / 1000 for value in range(1, 501)])
    h.observe([value / 1000 for value in range(501, 1001)])
    assert h.quantile(0.5) == pytest.approx(0.5, rel=0.05)
    assert h.quantile(0.99) == pytest.approx(0.99, rel=0.05)
    assert h.cumulative()[-1][1] == h.count == 1000
    assert h.sum == pytest.approx(500.5)
    assert Histogram.log_spaced().quantile(0.5) is None


def test_the_master_s_record_names_the_task_whatever_a_result_claims() -> None:
    s = make()
    s.submit([TaskRecord(1, "r-1", "sleep", {}, key="ost7")])
    join(s, credit=1, types=("sleep",))
    s.take(0.0)
    s.results("c1", [Result("r-1", "warp-drive", Status.OK, key="ost99")], 1.0)
    [(_, settled)] = s.take(1.0).settled
    assert (settled.task_id, settled.task_type, settled.key, settled.status) == ("r-1", "sleep", "ost7", Status.OK)
