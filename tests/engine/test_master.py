"""The master's event loop against scripted peers on a real ROUTER socket (no controller)."""

from __future__ import annotations

import random
import time
import urllib.request
from collections.abc import Sequence
from typing import Any, ClassVar

import attrs
import msgpack
import pytest
from engine_support import damage

from cyclone_core.builtins.generators import BenchmarkGenerator
from cyclone_core.config import MasterSettings
from cyclone_core.engine import protocol as p
from cyclone_core.engine.master import Master
from cyclone_core.errors import ConfigError
from cyclone_core.model import Result, ResultSink, Status
from cyclone_core.testing import free_port


def ok(task: p.TaskEnvelope, controller: str = "c1") -> Result:
    return Result(task.id, task.type, Status.OK, key=task.key, attempt=task.attempt, controller=controller)


def status(peer: Any) -> dict[str, Any]:
    peer.send(p.StatusRequest())
    return peer.expect(p.StatusReply).snapshot


def test_a_controller_runs_a_whole_run_within_its_credit(start_master, peer, sink, wait) -> None:
    running = start_master(BenchmarkGenerator(count=10), [sink])
    c = peer(running.endpoint)
    welcome = c.hello("c1", credit=4)
    assert welcome.run_id
    done: list[str] = []
    while len(done) < 10:
        tasks = c.expect(p.Dispatch).tasks
        assert 1 <= len(tasks) <= 4
        c.send(p.Results([ok(t) for t in tasks], credit=len(tasks)))
        assert sorted(c.expect(p.Ack).task_ids) == sorted(t.id for t in tasks)
        done += [t.id for t in tasks]
    assert c.expect(p.Shutdown).reason == "all tasks are done"
    c.send(p.Goodbye())
    assert running.join() == 0
    assert sorted(sink.ids()) == sorted(done)
    assert sorted(t.key for t in sink.results) == sorted(str(i) for i in range(10))
    assert len({i.rsplit("-", 1)[0] for i in done}) == 1  # <run_id>-<seq>


def test_the_round_trip_counts_from_dispatch_to_the_result_arriving(start_master, peer, sink) -> None:
    running = start_master(BenchmarkGenerator(count=2), [sink])  # a second task keeps the run open
    c = peer(running.endpoint)
    c.hello("c1", credit=1)
    tasks = c.expect(p.Dispatch).tasks
    held = 0.3  # the task "runs" this long at the controller; the master waits in its poll meanwhile
    time.sleep(held)
    c.send(p.Results([ok(t) for t in tasks], credit=0))
    c.expect(p.Ack)
    # One observation, interpolated within its histogram bucket (5% wide).
    assert status(c)["latency_ms_p50"] >= held * 1000 * 0.95


def test_garbage_and_other_versions_are_refused_and_the_master_keeps_running(start_master, peer, sink) -> None:
    running = start_master(BenchmarkGenerator(count=3), [sink])
    stranger = peer(running.endpoint)
    stranger.send_raw(b"\xc1 certainly not msgpack")
    assert "bad message: not a msgpack message" in stranger.expect(p.Refuse).reason
    future = peer(running.endpoint)
    future.send_raw(msgpack.packb({"v": 2, "t": "hello", "controller_id": "x"}))
    assert "protocol version 2 is not supported (this side speaks 1)" in future.expect(p.Refuse).reason
    multi = peer(running.endpoint)
    multi.send_raw(b"a", b"b")
    assert "expected one frame, got 2" in multi.expect(p.Refuse).reason
    stranger.send_raw(b"more garbage")  # counted, but not answered again so soon
    c = peer(running.endpoint)
    c.hello("c1", credit=3)
    assert len(c.expect(p.Dispatch).tasks) == 3
    snap = status(c)
    assert snap["protocol_errors"] == 4
    assert [ctl["id"] for ctl in snap["controllers"]] == ["c1"]


def test_a_barrage_of_damaged_messages_neither_stops_nor_misleads_the_master(start_master, peer, sink) -> None:
    running = start_master(BenchmarkGenerator(count=20), [sink], controller_timeout=1.0, heartbeat_interval=0.2)
    c = peer(running.endpoint)
    c.hello("c1", credit=4)
    held = {t.id: t for t in c.expect(p.Dispatch).tasks}
    valid = [
        p.Hello(controller_id="h", host="x", pid=1, workers=1, credit=4, task_types=["noop"]),
        p.Results([ok(t, "h") for t in held.values()], credit=2),
        p.Heartbeat(running=list(held)),
        p.Handback(list(held)),
        p.Ack(list(held)),
        p.Goodbye(),
        p.StatusRequest(),
    ]
    rng = random.Random(2026)
    strangers = [peer(running.endpoint) for _ in range(3)]
    for n in range(600):
        strangers[n % 3].sock.send(damage(p.encode(rng.choice(valid)), rng))
    # The controller finishes the run; tasks a stranger took are re-queued when it falls silent.
    deadline = time.monotonic() + 60
    while True:
        assert time.monotonic() < deadline, "the run did not finish"
        if held:
            c.send(p.Results([ok(t) for t in held.values()], credit=len(held)))
            held.clear()
        if not c.sock.poll(100):
            c.send(p.Heartbeat(running=[]))
            continue
        message = c.recv()
        if isinstance(message, p.Dispatch):
            held = {t.id: t for t in message.tasks}
        elif isinstance(message, p.Shutdown):
            break
    c.send(p.Goodbye())
    assert running.join() == 0
    assert sorted(int(r.key) for r in sink.results) == list(range(20))  # each task once
    assert running.master.protocol_errors > 0


def test_a_hello_without_a_known_task_type_is_refused(start_master, peer) -> None:
    running = start_master(BenchmarkGenerator(count=1))
    c = peer(running.endpoint)
    c.send(p.Hello(controller_id="c9", host="h", pid=1, workers=1, credit=1, task_types=["warp-drive"]))
    assert c.expect(p.Refuse).reason == "this controller runs none of the task types the master knows"


def test_results_count_only_from_the_registered_lease_holder(start_master, peer, sink, wait) -> None:
    """A stranger's results (no Hello) are neither counted nor acknowledged, but it is asked to
    register; another registered controller's results for tasks it does not hold are refused."""
    running = start_master(BenchmarkGenerator(count=2), [sink])
    first = peer(running.endpoint)
    first.hello("c1", credit=2)
    tasks = first.expect(p.Dispatch).tasks
    stranger = peer(running.endpoint)
    stranger.send(p.Results([ok(t, "c1") for t in tasks], credit=2))
    assert isinstance(stranger.expect(p.Rehello), p.Rehello)
    other = peer(running.endpoint)
    other.hello("c2", credit=0)
    other.send(p.Results([ok(t, "c2") for t in tasks], credit=0))
    assert sorted(other.expect(p.Ack).task_ids) == sorted(t.id for t in tasks)  # forget them: refused
    snap = status(first)
    assert (snap["refused"], snap["succeeded"]) == (4, 0)
    first.send(p.Results([ok(t, "c1") for t in tasks], credit=0))
    first.expect(p.Ack)
    wait(lambda: len(sink.results) == 2, what="results in the sink")
    assert {r.controller for r in sink.results} == {"c1"}


def test_status_reports_controllers_queue_and_counters(start_master, peer) -> None:
    running = start_master(BenchmarkGenerator(count=50), window=20)
    c = peer(running.endpoint)
    c.hello("c1", credit=5)
    tasks = c.expect(p.Dispatch).tasks
    c.send(p.Results([ok(t) for t in tasks[:2]], credit=0))
    c.expect(p.Ack)
    snap = status(peer(running.endpoint))
    assert (snap["submitted"], snap["queued"], snap["in_flight"], snap["succeeded"]) == (
        22,
        17,
        3,
        2,
    )  # the window refilled
    assert snap["controllers"][0]["id"] == "c1"
    assert snap["controllers"][0]["in_flight"] == 3
    assert {"failed", "quarantined", "timed_out", "crashed", "tasks_per_second", "sinks", "run_id"} <= snap.keys()


class _Miscounting(BenchmarkGenerator):
    answer: ClassVar[Any] = None

    def total(self) -> Any:
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


@pytest.mark.parametrize(
    ("answer", "shown"), [(None, None), (7, 7), (-1, None), ("7", None), (RuntimeError("no"), None)]
)
def test_the_generator_s_total_is_shown_and_a_bad_one_ignored(start_master, peer, answer: Any, shown: Any) -> None:
    _Miscounting.answer = answer
    running = start_master(_Miscounting(count=50), window=10)
    generator = status(peer(running.endpoint))["generator"]
    assert (generator["total"], generator["exhausted"]) == (shown, False)


def test_an_exhausted_generator_s_total_is_what_it_handed_out(start_master, peer) -> None:
    running = start_master(BenchmarkGenerator(count=5), window=10)
    generator = status(peer(running.endpoint))["generator"]
    assert (generator["total"], generator["exhausted"]) == (5, True)


def test_stopping_tells_controllers_to_finish_and_waits_for_their_goodbye(start_master, peer, sink) -> None:
    running = start_master(BenchmarkGenerator(count=100), [sink], window=10)
    c = peer(running.endpoint)
    c.hello("c1", credit=4)
    tasks = c.expect(p.Dispatch).tasks
    running.master.request_stop()
    assert c.expect(p.Shutdown).reason == "master is stopping"
    c.send(p.Results([ok(tasks[0])], credit=1))
    c.send(p.Handback([t.id for t in tasks[1:]]))
    c.send(p.Goodbye())
    assert running.join() == 0
    assert running.master.interrupted
    assert sink.ids() == [tasks[0].id]


def test_a_master_resumes_its_journal_without_losing_or_repeating_a_task(start_master, peer, sink, tmp_path) -> None:
    journal = str(tmp_path / "resume.sqlite")
    first = start_master(BenchmarkGenerator(count=30), [sink], journal=journal, window=8)
    c = peer(first.endpoint)
    c.hello("c1", credit=5)
    tasks = c.expect(p.Dispatch).tasks
    c.send(p.Results([ok(t) for t in tasks[:3]], credit=0))
    c.expect(p.Ack)
    first.master.request_stop()
    first.master.request_stop()  # no drain: the two unreported tasks stay leased in the journal
    first.join()

    second = start_master(BenchmarkGenerator(count=30), [sink], journal=journal, window=8)
    c2 = peer(second.endpoint)
    c2.hello("c2", credit=100)
    seen: list[str] = []
    while True:
        message = c2.expect((p.Dispatch, p.Shutdown, p.Ack))
        if isinstance(message, p.Shutdown):
            break
        if isinstance(message, p.Ack):
            continue
        seen += [t.id for t in message.tasks]
        c2.send(p.Results([ok(t, "c2") for t in message.tasks], credit=len(message.tasks)))
    c2.send(p.Goodbye())
    assert second.join() == 0
    assert {t.id for t in tasks[3:]} <= set(seen)
    assert len(sink.ids()) == len(set(sink.ids())) == 30
    assert sorted(int(i.rsplit("-", 1)[1]) for i in sink.ids()) == list(range(1, 31))


def test_a_failing_sink_catches_up_without_holding_up_dispatch(start_master, peer, sink, wait) -> None:
    sink.down = "database is down"
    running = start_master(BenchmarkGenerator(count=40), [sink])
    c = peer(running.endpoint)
    c.hello("c1", credit=20)
    tasks = c.expect(p.Dispatch).tasks
    assert len(tasks) == 20
    c.send(p.Results([ok(t) for t in tasks], credit=0))
    c.expect(p.Ack)
    snap = wait(lambda: (s := status(c))["sinks"][0]["errors"] and s, what="a sink error in the status")
    assert snap["succeeded"] == 20
    assert snap["sinks"][0]["backlog"] == 20
    assert snap["sinks"][0]["last_error"] == "ConnectionError: database is down"
    sink.down = None
    wait(lambda: len(sink.results) == 20, what="the sink to catch up")
    assert wait(lambda: status(c)["sinks"][0]["backlog"] == 0, what="an empty backlog")


def test_results_that_cannot_be_delivered_make_the_exit_code_one(start_master, peer, sink, tmp_path) -> None:
    sink.down = "still down"
    running = start_master(BenchmarkGenerator(count=2), [sink])
    running.master.delivery_timeout = 0.5
    c = peer(running.endpoint)
    c.hello("c1", credit=2)
    tasks = c.expect(p.Dispatch).tasks
    c.send(p.Results([ok(t) for t in tasks], credit=2))
    c.expect(p.Ack)
    c.expect(p.Shutdown)
    c.send(p.Goodbye())
    assert running.join() == 1
    assert running.master.undelivered == 2


def test_metrics_are_served_over_http(start_master, peer, sink, wait) -> None:
    running = start_master(BenchmarkGenerator(count=5), [sink], metrics_port=free_port())
    c = peer(running.endpoint)
    c.hello("c1", credit=5)
    tasks = c.expect(p.Dispatch).tasks
    c.send(p.Results([ok(t) for t in tasks], credit=0))
    url = f"http://127.0.0.1:{running.master.settings.metrics_port}/metrics"

    def scrape() -> str:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.read().decode()

    def counted() -> str:
        text = scrape()
        return text if 'cyclone_tasks_total{outcome="succeeded"} 5.0' in text else ""

    text = wait(counted, what="metrics")
    assert "cyclone_controllers 1.0" in text
    assert 'cyclone_task_duration_seconds_bucket{le="+Inf"} 5.0' in text
    assert "cyclone_protocol_errors_total 0.0" in text
    assert 'cyclone_sink_errors_total{sink="memory"} 0.0' in text
    assert 'cyclone_sink_backlog{sink="memory"}' in text


@pytest.mark.parametrize("bind", ["tcp://256.1.1.1:5678", "nonsense"])
def test_an_endpoint_that_cannot_be_bound_is_one_clear_error(bind, tmp_path) -> None:
    settings = MasterSettings(bind=bind, journal=str(tmp_path / "j.sqlite"), insecure=True)
    master = Master(settings, BenchmarkGenerator(count=1), [])
    with pytest.raises(ConfigError, match=f"master cannot bind {bind}"):
        master.open()


def test_a_second_controller_id_on_one_connection_is_refused_and_the_master_keeps_running(
    start_master, peer, sink
) -> None:
    """Regression: one routing identity saying Hello as ``a`` and then as ``b`` left ``a``
    registered without a connection, and the next dispatch stopped the master (KeyError)."""
    running = start_master(BenchmarkGenerator(count=20), [sink])
    c = peer(running.endpoint)
    c.hello("a", credit=0)
    c.send(p.Hello(controller_id="b", host="testhost", pid=4242, workers=2, credit=2, task_types=["noop"]))
    assert c.expect(p.Refuse).reason == "this connection already speaks for controller 'a'"
    c.send(p.Results([], credit=6))  # credit for 'a': the dispatch that used to crash
    done = [t.id for t in c.expect(p.Dispatch).tasks]
    c.send(p.Results([ok(p.TaskEnvelope(i, "noop"), "a") for i in done], credit=0))
    c.expect(p.Ack)
    assert status(c)["succeeded"] == len(done)
    assert [ctl["id"] for ctl in status(c)["controllers"]] == ["a"]


@attrs.define(kw_only=True)
class PasswordSink(ResultSink):
    """A sink that always fails, its error message carrying its password as a careless
    database driver's might."""

    name: ClassVar[str] = "password"
    flush_interval: float = 0.05
    password: str = "hunter2-secret"

    def write(self, results: Sequence[Result]) -> None:
        raise ConnectionError(f"login as cyclone with password {self.password} refused")


def test_a_status_reply_never_carries_a_sinks_password(start_master, peer, wait) -> None:
    sink = PasswordSink()
    running = start_master(BenchmarkGenerator(count=3), [sink])
    c = peer(running.endpoint)
    c.hello("c1", credit=2)
    tasks = c.expect(p.Dispatch).tasks
    c.send(p.Results([ok(t) for t in tasks], credit=0))
    c.expect(p.Ack)
    client = peer(running.endpoint)
    snap = wait(lambda: (s := status(client))["sinks"][0]["last_error"] and s, what="the sink's error")
    assert snap["sinks"][0]["last_error"] == "ConnectionError: login as cyclone with password *** refused"
