"""The worker pool's bookkeeping, without processes (cyclone_core.engine.pool_state)."""

from __future__ import annotations

import math

import pytest

from cyclone_core.engine.pool_state import PoolState
from cyclone_core.engine.protocol import TaskEnvelope


def tasks(*specs: str) -> list[TaskEnvelope]:
    """``"a:noop"`` -> a task with id ``a`` of type ``noop``."""
    return [TaskEnvelope(spec.split(":")[0], spec.split(":")[1]) for spec in specs]


def assigned(state: PoolState) -> dict[str, list[str]]:
    return {book.name: [job.envelope.id for job in book.queue] for book in state.workers}


def fast_state(depth: int = 4, budget: float = 0.01) -> PoolState:
    state = PoolState(depth, budget)
    state.add_worker("w1")
    state.add_worker("w2")
    state.learn("noop", 0.001)
    return state


def test_known_fast_tasks_are_spread_then_batched_up_to_depth() -> None:
    state = fast_state(depth=3)
    state.add(tasks(*(f"t{n}:noop" for n in range(8))))
    batches = state.assign()
    assert assigned(state) == {"w1": ["t0", "t2", "t4"], "w2": ["t1", "t3", "t5"]}
    assert [job.envelope.id for job in state.waiting] == ["t6", "t7"]
    # One batch per worker, in the order each worker runs them; seqs grow.
    assert [[job.seq for job in jobs] for _, jobs in batches] == [[1, 3, 5], [2, 4, 6]]


def test_nothing_is_queued_behind_a_task_of_slow_or_unknown_type() -> None:
    state = fast_state()
    state.learn("sleep", 5.0)
    state.add(tasks("s1:sleep", "u1:mystery", "n1:noop", "s2:sleep"))
    state.assign()
    assert assigned(state) == {"w1": ["s1"], "w2": ["u1"]}
    # The oldest waiting task is not overtaken by the fast one behind it.
    assert [job.envelope.id for job in state.waiting] == ["n1", "s2"]
    assert math.isinf(state.workers[1].queue[0].cost)
    state.done(state.workers[0], state.workers[0].queue[0].seq)
    state.assign()
    # A slow task may wait behind a fast one (within the budget), not the other way round.
    assert assigned(state) == {"w1": ["n1", "s2"], "w2": ["u1"]}


def test_the_budget_limits_how_much_work_one_worker_queues() -> None:
    state = PoolState(depth=10, budget=0.01)
    state.add_worker("w1")
    state.learn("probe", 0.004)
    state.add(tasks(*(f"p{n}:probe" for n in range(5))))
    state.assign()
    assert assigned(state) == {"w1": ["p0", "p1", "p2"]}  # 0.008 s of work ahead fits, 0.012 s does not


def test_a_task_of_a_millisecond_or_two_has_the_next_one_waiting_at_its_worker() -> None:
    state = PoolState(depth=16, budget=0.002)
    state.add_worker("w1")
    state.add_worker("w2")
    state.learn("sweep", 0.0015)
    state.add(tasks(*(f"s{n}:sweep" for n in range(6))))
    state.assign()
    assert assigned(state) == {"w1": ["s0", "s2"], "w2": ["s1", "s3"]}


def test_nothing_is_assigned_while_draining_and_waiting_jobs_are_handed_back() -> None:
    state = fast_state(depth=1)
    state.add(tasks("a:noop", "b:noop", "c:noop"))
    state.assign()
    handed_back = state.drain()
    assert [job.envelope.id for job in handed_back] == ["c"]
    state.add(tasks("d:noop"))
    assert state.assign() == []
    assert sorted(state.held_ids()) == ["a", "b", "d"]


def test_duplicate_dispatch_is_ignored_while_held() -> None:
    state = fast_state()
    assert state.add(tasks("a:noop")) == []
    assert [t.id for t in state.add(tasks("a:noop", "b:noop"))] == ["a"]
    assert state.held_ids() == ["a", "b"]


def test_results_must_come_in_the_order_jobs_were_given() -> None:
    state = fast_state()
    state.add(tasks("a:noop", "b:noop", "c:noop"))
    state.assign()
    book = state.workers[0]
    first, second = book.queue
    with pytest.raises(ValueError, match=f"reported task #{second.seq}, expected #{first.seq}"):
        state.done(book, second.seq)
    assert state.done(book, first.seq) is first
    assert "a" not in state.jobs


def test_running_job_is_the_one_whose_seq_the_worker_announced() -> None:
    state = fast_state()
    state.add(tasks("a:noop", "b:noop", "c:noop"))
    state.assign()
    book = state.workers[0]
    a, c = book.queue
    assert state.running(book, 0) is None  # nothing started yet
    assert state.running(book, a.seq) is a
    assert state.running(book, c.seq) is c  # a ended; its result is on the way
    assert state.running(book, c.seq + 1) is None


def test_a_lost_worker_gives_its_running_job_and_requeues_the_rest_in_order() -> None:
    state = fast_state(depth=4)
    state.add_worker("w3")
    state.add(tasks(*(f"t{n}:noop" for n in range(9))))
    state.assign()
    book = state.workers[0]
    ended, running, queued = book.queue
    # ended's result was lost with the process: it runs again, as do the unstarted ones.
    lost, handed_back = state.remove_worker(book, running.seq)
    assert lost is running
    assert handed_back == []
    assert [job.envelope.id for job in state.waiting] == [ended.envelope.id, queued.envelope.id]
    assert all(job.seq == 0 for job in state.waiting)
    assert running.envelope.id not in state.jobs
    assert book not in state.workers


def test_a_lost_worker_while_draining_hands_its_jobs_back() -> None:
    state = fast_state()
    state.add(tasks("a:noop", "b:noop", "c:noop"))
    state.assign()
    state.drain()
    book = state.workers[0]
    lost, handed_back = state.remove_worker(book, 0)
    assert lost is None
    assert [job.envelope.id for job in handed_back] == ["a", "c"]
    assert state.held_ids() == ["b"]


def test_durations_are_moving_averages() -> None:
    state = PoolState(4, 0.01)
    assert state.mean_duration is None
    state.learn("a", 1.0)
    state.learn("b", 0.0)
    assert state.durations == {"a": 1.0, "b": 0.0}
    assert state.mean_duration == pytest.approx(0.9)
    state.learn("a", 0.0)
    assert state.durations["a"] == pytest.approx(0.9)
