"""The worker pool with real worker processes, real signals and real kills."""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from engine_support import alive

from cyclone_core.engine import workers
from cyclone_core.engine.execution import MAX_RESULT_BYTES
from cyclone_core.engine.protocol import TaskEnvelope, result_from_row
from cyclone_core.engine.workers import WorkerPool
from cyclone_core.model import Result, Status
from cyclone_core.plugins import Plugins
from cyclone_core.testing import run_task, wait_until

Wait = Callable[..., Any]
MakePool = Callable[..., WorkerPool]

DEADLINE = 20.0


def run_until(pool: WorkerPool, condition: Callable[[], bool], what: str) -> None:
    """Run the pool's loop until ``condition`` holds."""
    deadline = time.monotonic() + DEADLINE
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {DEADLINE} s waiting for {what}")
        pool.wait(0.05)


def collect(pool: WorkerPool, count: int) -> list[Result]:
    """Run the pool until ``count`` results have come back; they are returned in order."""
    results: list[Result] = []
    deadline = time.monotonic() + DEADLINE
    while len(results) < count:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"only {len(results)} of {count} results: {results}")
        pool.wait(remaining)
        results += [result_from_row(row) for row in pool.results]
        pool.results = []
    return results


def by_id(results: list[Result]) -> dict[str, Result]:
    return {result.task_id: result for result in results}


@pytest.fixture
def make_pool() -> Iterator[MakePool]:
    pools: list[WorkerPool] = []

    def make(size: int = 2, **options: Any) -> WorkerPool:
        pool = WorkerPool(size, controller_id="test-controller", kill_grace=0.5, **options)
        pools.append(pool)
        pool.start()
        return pool

    yield make
    for pool in pools:
        pool.close()


def test_tasks_run_and_results_come_back_in_the_order_they_end(make_pool: MakePool) -> None:
    pool = make_pool()
    pool.submit([TaskEnvelope("slow", "sleep", {"seconds": 0.5}, key="k1", attempt=2)])
    pool.submit([TaskEnvelope(f"n{n}", "noop") for n in range(20)])
    results = collect(pool, 21)
    assert results[-1].task_id == "slow"
    assert sorted(r.task_id for r in results[:-1]) == sorted(f"n{n}" for n in range(20))
    slow = results[-1]
    assert (slow.status, slow.key, slow.attempt, slow.controller) == (Status.OK, "k1", 2, "test-controller")
    assert slow.duration >= 0.5
    assert abs(slow.started_at - time.time()) < 60
    assert not pool.busy


def test_failures_are_one_line_results_and_the_workers_live_on(make_pool: MakePool) -> None:
    pool = make_pool()
    pids = pool.pids()
    pool.submit(
        [
            TaskEnvelope("raises", "fail", {"message": "disk on fire\nsecond line"}),
            TaskEnvelope("unknown", "no-such-type"),
            TaskEnvelope("bad-arg", "sleep", {"seconds": "long"}),
            TaskEnvelope("extra-arg", "noop", {"colour": "red"}),
        ]
    )
    results = by_id(collect(pool, 4))
    assert {r.status for r in results.values()} == {Status.FAILED}
    assert results["raises"].error == "RuntimeError: disk on fire second line"
    assert results["unknown"].error.startswith("unknown task type 'no-such-type' (known: ")
    assert "noop" in results["unknown"].error
    assert results["bad-arg"].error == "arguments of task type 'sleep': seconds: expected a number, got 'long'"
    assert results["extra-arg"].error.startswith("arguments of task type 'noop': ")
    assert "colour" in results["extra-arg"].error
    assert all("\n" not in r.error for r in results.values())
    assert pool.pids() == pids


@pytest.mark.parametrize(("signum", "name"), [(signal.SIGKILL, "SIGKILL"), (signal.SIGSEGV, "SIGSEGV")])
def test_a_task_that_kills_its_worker_is_reported_crashed_and_the_worker_replaced(
    make_pool: MakePool, signum: int, name: str
) -> None:
    pool = make_pool()
    pids = set(pool.pids())
    pool.submit([TaskEnvelope("crash", "crash", {"signal": int(signum)}, attempt=3, key="boom")])
    (crashed,) = collect(pool, 1)
    assert (crashed.task_id, crashed.status, crashed.attempt, crashed.key) == ("crash", Status.CRASHED, 3, "boom")
    assert crashed.error == f"worker process killed by {name}"
    assert len(pool.pids()) == 2
    assert len(pids & set(pool.pids())) == 1
    pool.submit([TaskEnvelope(f"after{n}", "noop") for n in range(10)])
    assert {r.status for r in collect(pool, 10)} == {Status.OK}


def test_a_task_past_its_timeout_is_killed_and_its_worker_replaced(make_pool: MakePool, wait: Wait) -> None:
    pool = make_pool()
    pids = set(pool.pids())
    pool.submit(
        [TaskEnvelope("hang", "hang", timeout=0.5), TaskEnvelope("quick", "sleep", {"seconds": 0.1}, timeout=5)]
    )
    results = by_id(collect(pool, 2))
    hung = results["hang"]
    assert (hung.status, hung.error) == (Status.TIMEOUT, "timed out after 0.5 s")
    assert 0.5 <= hung.duration < 5
    assert results["quick"].status is Status.OK
    (gone,) = pids - set(pool.pids())
    wait(lambda: not alive(gone), what="the timed-out worker to exit")
    assert len(pool.pids()) == 2
    pool.submit([TaskEnvelope("after", "noop")])
    assert collect(pool, 1)[0].status is Status.OK


def test_a_lone_task_past_its_timeout_is_killed_on_time(make_pool: MakePool) -> None:
    pool = make_pool(1)
    pool.submit([TaskEnvelope("hang", "hang", timeout=0.3)])
    assert pool.next_deadline() is not None  # nothing else will wake the pool's owner
    (hung,) = collect(pool, 1)
    assert (hung.status, hung.error) == (Status.TIMEOUT, "timed out after 0.3 s")
    assert 0.3 <= hung.duration < 5


def test_a_worker_killed_from_outside_reports_its_task_crashed(make_pool: MakePool, wait: Wait) -> None:
    pool = make_pool(1)
    (pid,) = pool.pids()
    pool.submit([TaskEnvelope("victim", "sleep", {"seconds": 30}), TaskEnvelope("next", "noop")])
    wait(lambda: pool.running_ids() == ["victim"], what="the task to start")
    os.kill(pid, signal.SIGKILL)
    results = by_id(collect(pool, 2))
    assert (results["victim"].status, results["victim"].error) == (Status.CRASHED, "worker process killed by SIGKILL")
    assert results["next"].status is Status.OK  # was queued behind it: reassigned
    assert pool.pids() != [pid]


def test_draining_returns_queued_tasks_and_lets_running_ones_finish(make_pool: MakePool, wait: Wait) -> None:
    pool = make_pool(1)
    # Once the pool has seen a quick sleep, it queues several sleeps on the one worker.
    pool.submit([TaskEnvelope("learn", "sleep", {"seconds": 0})])
    collect(pool, 1)
    pool.submit([TaskEnvelope(f"s{n}", "sleep", {"seconds": 0.3}) for n in range(6)])
    wait(lambda: pool.running_ids() == ["s0"], what="the first sleep to start")
    pool.drain()
    results = collect(pool, 1)
    assert [(r.task_id, r.status) for r in results] == [("s0", Status.OK)]
    run_until(pool, lambda: not pool.busy, "the worker to return the others")
    assert sorted(pool.handed_back) == [f"s{n}" for n in range(1, 6)]
    assert pool.results == []


def test_abort_kills_running_tasks_and_hands_them_back(make_pool: MakePool, wait: Wait) -> None:
    pool = make_pool()
    pids = pool.pids()
    pool.submit([TaskEnvelope("h1", "hang"), TaskEnvelope("h2", "hang"), TaskEnvelope("h3", "hang")])
    wait(lambda: sorted(pool.running_ids()) == ["h1", "h2"], what="both workers to start a task")
    pool.drain()
    assert sorted(pool.abort()) == ["h1", "h2"]
    assert pool.handed_back == ["h3"]
    assert not pool.busy
    for pid in pids:
        run_until(pool, lambda pid=pid: not alive(pid), f"worker {pid} to be killed")
    assert pool.pids() == []  # not replaced while draining
    assert pool.results == []


def test_a_sigterm_to_every_process_leaves_the_workers_running(make_pool: MakePool, wait: Wait) -> None:
    """systemd and Slurm signal every process of a service or job; the controller decides."""
    pool = make_pool()
    pool.submit([TaskEnvelope(f"s{n}", "sleep", {"seconds": 0.5}) for n in range(2)])
    wait(lambda: sorted(pool.running_ids()) == ["s0", "s1"], what="both tasks to start")
    workers = pool.pids()
    (server,) = {parent(pid) for pid in workers}  # the fork server
    for pid in [server, *workers]:
        os.kill(pid, signal.SIGTERM)
    assert {(r.task_id, r.status) for r in collect(pool, 2)} == {("s0", Status.OK), ("s1", Status.OK)}
    wait(lambda: not alive(server), what="the fork server to end")
    assert pool.pids() == workers
    # Worker deaths are still noticed (by their sockets now), and replacements start.
    pool.submit([TaskEnvelope("crash", "crash")])
    (crashed,) = collect(pool, 1)
    assert crashed.status is Status.CRASHED
    pool.submit([TaskEnvelope(f"n{n}", "noop") for n in range(4)])
    assert {r.status for r in collect(pool, 4)} == {Status.OK}
    assert len(pool.pids()) == 2


def parent(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[1])


PLUGIN = """
from __future__ import annotations

import logging
import os
import subprocess
import threading
import time
from pathlib import Path
from typing import ClassVar

import attrs
import msgpack

from cyclone_core import Metric, Outcome, Task, hookimpl


@attrs.define(kw_only=True)
class Chatty(Task):
    name: ClassVar[str] = "chatty"

    def execute(self, ctx):
        ctx.log.warning("hello from %s", ctx.task_id)
        return Outcome(
            metrics=[Metric("answer", 42.0, "1", {"ost": "OST0001"})],
            payload={"mark": os.environ.get("CYCLONE_TEST_MARK")},
        )


@attrs.define(kw_only=True)
class Unsendable(Task):
    name: ClassVar[str] = "unsendable"

    def execute(self, ctx):
        return Outcome(payload={"thing": object()})


@attrs.define(kw_only=True)
class SpawnAndHang(Task):
    name: ClassVar[str] = "spawn-and-hang"
    pid_file: str

    def execute(self, ctx):
        child = subprocess.Popen(["sleep", "60"])
        Path(self.pid_file).write_text(str(child.pid))
        child.wait()


@attrs.define(kw_only=True)
class Huge(Task):
    name: ClassVar[str] = "huge"
    size: int

    def execute(self, ctx):
        return Outcome(payload={"blob": "x" * self.size})


@attrs.define(kw_only=True)
class WaitFor(Task):
    name: ClassVar[str] = "wait-for"
    path: str

    def execute(self, ctx):
        while not os.path.exists(self.path):
            time.sleep(0.005)


@attrs.define(kw_only=True)
class Rogue(Task):
    # Sends its controller a message that is not a list, then waits to be killed.
    name: ClassVar[str] = "rogue"

    def execute(self, ctx):
        send = logging.getLogger().handlers[0]._send  # the worker's channel to its controller
        send(msgpack.packb({"not": "a list"}))
        threading.Event().wait()


@hookimpl
def cyclone_task_types():
    return [Chatty, Unsendable, SpawnAndHang, Huge, WaitFor, Rogue]
"""


@pytest.fixture
def extra_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cyclone_plugins: Plugins) -> Iterator[None]:
    """A plugin registered in this process only (not installed): workers load it too."""
    (tmp_path / "cyclone_test_extra_tasks.py").write_text(textwrap.dedent(PLUGIN))
    monkeypatch.syspath_prepend(str(tmp_path))
    import cyclone_test_extra_tasks  # noqa: PLC0415

    cyclone_plugins.register(cyclone_test_extra_tasks, name="test-extra")
    yield
    sys.modules.pop("cyclone_test_extra_tasks", None)


@pytest.mark.usefixtures("extra_plugin")
def test_workers_get_inprocess_plugins_the_environment_and_forward_logs(
    make_pool: MakePool, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("CYCLONE_TEST_MARK", "from the controller")
    pool = make_pool(1)
    pool.submit([TaskEnvelope("c1", "chatty")])
    with caplog.at_level(logging.INFO):
        (chatty,) = collect(pool, 1)
    assert chatty.status is Status.OK, chatty.error
    assert chatty.payload == {"mark": "from the controller"}
    assert [(m.name, m.value, m.labels) for m in chatty.metrics] == [("answer", 42.0, {"ost": "OST0001"})]
    record = next(r for r in caplog.records if r.getMessage() == "hello from c1")
    assert record.name == "cyclone.task.chatty"
    assert record.process == pool.pids()[0]


@pytest.mark.usefixtures("extra_plugin")
def test_a_result_that_cannot_travel_is_a_failure_saying_why(make_pool: MakePool) -> None:
    pool = make_pool(1)
    pool.submit([TaskEnvelope("u1", "unsendable"), TaskEnvelope("h1", "huge", {"size": MAX_RESULT_BYTES + 1})])
    results = by_id(collect(pool, 2))
    unsendable = results["u1"]
    assert unsendable.status is Status.FAILED
    assert unsendable.error.startswith("the task's result is not plain data: ")
    huge = results["h1"]
    assert huge.status is Status.FAILED
    assert huge.error.endswith(f"bytes; at most {MAX_RESULT_BYTES} are allowed")
    assert huge.payload is None


@pytest.mark.usefixtures("extra_plugin")
def test_run_task_fails_an_oversized_result_as_a_worker_does(make_pool: MakePool) -> None:
    from cyclone_test_extra_tasks import Huge  # noqa: PLC0415  (written by the fixture)

    size = 16 * 1024 * 1024
    pool = make_pool(1)
    pool.submit([TaskEnvelope("h1", "huge", {"size": size})])
    (in_a_worker,) = collect(pool, 1)
    in_a_test = run_task(Huge(size=size))
    limit = rf"the task's result takes \d+ bytes; at most {MAX_RESULT_BYTES} are allowed"
    for result in (in_a_worker, in_a_test):
        assert (result.status, result.payload) == (Status.FAILED, None)
        assert re.fullmatch(limit, result.error or ""), result.error


@pytest.mark.usefixtures("extra_plugin")
def test_a_worker_sending_something_else_than_a_list_is_killed_and_its_task_crashed(
    make_pool: MakePool, caplog: pytest.LogCaptureFixture
) -> None:
    pool = make_pool(1)
    (pid,) = pool.pids()
    pool.submit([TaskEnvelope("r1", "rogue")])
    (rogue,) = collect(pool, 1)
    assert (rogue.status, rogue.error) == (Status.CRASHED, "worker process sent an invalid message")
    assert "sent an invalid message (expected a list, got dict); killing it" in caplog.text
    pool.submit([TaskEnvelope("after", "noop")])
    assert collect(pool, 1)[0].status is Status.OK
    assert pool.pids() != [pid]


class SlotWithRace:
    """A worker's shared slot as the pool reads it, with the race made certain: the first time
    the pool reads the start time of the running task, the real worker finishes that task and
    starts its next one before the read returns (the worker's writes go to the real slot)."""

    def __init__(self, slot: Any, gate: Path, next_seq: int) -> None:
        self.slot, self.gate, self.next_seq = slot, gate, next_seq
        self.raced = False

    def __getitem__(self, index: int) -> float:
        value = self.slot[index]
        if index == workers._STARTED and not self.raced:
            self.raced = True
            self.gate.touch()  # the running task ends
            wait_until(lambda: int(self.slot[workers._SEQ]) == self.next_seq, 10, "the worker to move on")
        return value

    def __setitem__(self, index: int, value: float) -> None:
        self.slot[index] = value


@pytest.mark.usefixtures("extra_plugin")
def test_a_task_that_ends_as_its_timeout_is_checked_is_not_killed_nor_is_the_next(
    make_pool: MakePool, tmp_path: Path, wait: Wait
) -> None:
    pool = make_pool(1, budget=1.0)
    (pid,) = pool.pids()
    # Once the pool has seen a quick wait-for, it queues the next task behind one at the worker.
    (tmp_path / "open").touch()
    pool.submit([TaskEnvelope("learn", "wait-for", {"path": str(tmp_path / "open")})])
    collect(pool, 1)
    gate = tmp_path / "gate"
    pool.submit([TaskEnvelope("first", "wait-for", {"path": str(gate)}, timeout=0.2), TaskEnvelope("next", "noop")])
    (book,) = pool.state.workers
    _, following = book.queue
    assert following.envelope.id == "next"
    wait(lambda: pool.running_ids() == ["first"], what="the first task to start")
    (worker,) = pool._workers.values()
    overdue = worker.slot[workers._STARTED] + 0.2
    wait(lambda: time.monotonic() > overdue, what="the first task to pass its timeout")
    worker.slot = race = SlotWithRace(worker.slot, gate, following.seq)
    results = by_id(collect(pool, 2))
    assert race.raced
    assert {task_id: r.status for task_id, r in results.items()} == {"first": Status.OK, "next": Status.OK}
    assert pool.pids() == [pid]
    assert not pool.busy
    assert pool.handed_back == []


@pytest.mark.usefixtures("extra_plugin")
def test_a_timed_out_task_takes_its_subprocesses_with_it(make_pool: MakePool, tmp_path: Path, wait: Wait) -> None:
    pool = make_pool(1)
    pid_file = tmp_path / "child.pid"
    pool.submit([TaskEnvelope("spawn", "spawn-and-hang", {"pid_file": str(pid_file)}, timeout=1.0)])
    (result,) = collect(pool, 1)
    assert result.status is Status.TIMEOUT
    child = int(pid_file.read_text())
    wait(lambda: not alive(child), what="the task's subprocess to be killed")


POOL_IN_A_PROCESS = """
import json, sys
from cyclone_core.engine.protocol import TaskEnvelope
from cyclone_core.engine.workers import WorkerPool
pool = WorkerPool(2, controller_id="doomed")
pool.start()
pool.submit([TaskEnvelope("h", "hang")])
while not pool.busy or len(pool.pids()) < 2:
    pool.wait(0.1)
pool.wait(0.5)
print(json.dumps(pool.pids()), flush=True)
while True:
    pool.wait(None)
"""


def test_workers_exit_when_their_controller_is_killed(tmp_path: Path, wait: Wait) -> None:
    stderr = tmp_path / "stderr"
    with stderr.open("w") as errors:
        process = subprocess.Popen(
            [sys.executable, "-c", POOL_IN_A_PROCESS], stdout=subprocess.PIPE, stderr=errors, text=True
        )
    try:
        assert process.stdout is not None
        pids = json.loads(process.stdout.readline())
        assert len(pids) == 2
        assert all(alive(pid) for pid in pids)
        process.kill()  # SIGKILL: no clean-up code runs in the controller
        process.wait(10)
        for pid in pids:  # one idle in recv, one busy with a task that never ends
            wait(lambda pid=pid: not alive(pid), what=f"worker {pid} to exit")
        assert "Traceback" not in stderr.read_text()  # they leave quietly
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
