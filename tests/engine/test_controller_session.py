"""The controller's session, without sockets or processes: events in, effects out, a fake clock."""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs
import pytest

from cyclone_core.config import ControllerSettings
from cyclone_core.engine.controller_session import (
    COMPLAIN_EVERY,
    HOLD_BUDGET,
    IN_USE_TRIES,
    INITIAL_PREFETCH,
    MAX_PREFETCH,
    RUN_OVER_TIMEOUTS,
    WELCOME_LIMITS,
    AbortPool,
    Connect,
    ControllerSession,
    Disconnect,
    DrainPool,
    Effect,
    Exit,
    RecordEnrollment,
    ResumePool,
    Send,
    SendResults,
    Submit,
)
from cyclone_core.engine.protocol import (
    Ack,
    Dispatch,
    Enroll,
    Enrolled,
    Goodbye,
    Handback,
    Heartbeat,
    Hello,
    Message,
    Ping,
    Refuse,
    Rehello,
    Shutdown,
    StatusReply,
    TaskEnvelope,
    Welcome,
)

WORKERS = 2
SETTINGS: dict[str, Any] = {
    "heartbeat_interval": 1.0,
    "master_timeout": 60.0,
    "reconnect_interval": 0.5,
    "reconnect_max": 4.0,
    "drain_timeout": 30.0,
}
HELLO = Hello(
    controller_id="node1-42", host="node1", pid=42, workers=WORKERS, credit=0, task_types=["noop"], version="2.0"
)


class FakePool:
    """The worker pool's books, and what the controller's loop does with the pool effects:
    tasks are held until :meth:`Harness.finish`; ``started`` ones are running."""

    def __init__(self) -> None:
        self.jobs: dict[str, TaskEnvelope] = {}
        self.mean_duration: float | None = None
        self.started: set[str] = set()
        self.handed_back: list[str] = []
        self.draining = False

    def held_ids(self) -> list[str]:
        return list(self.jobs)

    def drain(self) -> None:
        self.draining = True
        waiting = [task_id for task_id in self.jobs if task_id not in self.started]
        for task_id in waiting:
            del self.jobs[task_id]
        self.handed_back += waiting

    def abort(self) -> list[str]:
        killed = [task_id for task_id in self.jobs if task_id in self.started]
        self.jobs.clear()
        return killed


class Harness:
    """A session, its fake pool and a fake clock; carries out the effects as the controller's
    loop does, and keeps what reached the master."""

    def __init__(
        self,
        mean_duration: float | None = None,
        *,
        enroll: str | None = None,
        key_dir: Path | None = None,
        **settings: Any,
    ) -> None:
        self.now = 1000.0
        self.pool = FakePool()
        self.pool.mean_duration = mean_duration
        self.session = ControllerSession(
            ControllerSettings(**{**SETTINGS, **settings}), HELLO, self.pool, enroll=enroll, key_dir=key_dir
        )
        #: The enrollments recorded in the key directory.
        self.recorded: list[RecordEnrollment] = []
        #: Messages sent while a socket was open, ``SendResults`` as they are.
        self.sent: list[Message | SendResults] = []
        self.connected = True
        #: When each new socket was opened, and when each was closed.
        self.connects: list[float] = []
        self.disconnects: list[float] = []
        self.exit_code: int | None = None
        self.apply(self.session.start(self.now))

    def apply(self, effects: Sequence[Effect]) -> None:
        assert self.exit_code is None, f"effects after the exit: {effects}"
        for effect in effects:
            if isinstance(effect, Send):
                if self.connected:
                    self.sent.append(effect.message)
            elif isinstance(effect, SendResults):
                if self.connected:
                    self.sent.append(effect)
            elif isinstance(effect, Submit):
                assert not self.pool.draining
                self.pool.jobs.update((task.id, task) for task in effect.tasks)
            elif isinstance(effect, Connect):
                assert not self.connected
                self.connected = True
                self.connects.append(self.now)
            elif isinstance(effect, Disconnect):
                self.connected = False
                self.disconnects.append(self.now)
            elif isinstance(effect, DrainPool):
                self.pool.drain()
            elif isinstance(effect, ResumePool):
                assert not self.pool.jobs
                self.pool.draining = False
            elif isinstance(effect, AbortPool):
                self.session.aborted(self.pool.abort(), self.now)
            elif isinstance(effect, Exit):
                self.exit_code = effect.code
            elif isinstance(effect, RecordEnrollment):
                self.recorded.append(effect)

    def signal(self) -> None:
        self.apply(self.session.signal(self.now))
        self.tick()

    def stop(self) -> None:
        self.apply(self.session.stop_requested(self.now))
        self.tick()

    def receive(self, message: Message) -> None:
        self.apply(self.session.receive(message, self.now))
        self.tick()

    def tick(self) -> None:
        """One turn of the loop: what the pool produced, then the timers."""
        if self.pool.handed_back:
            self.session.produced([], self.pool.handed_back, self.now)
            self.pool.handed_back = []
        if self.exit_code is None:
            self.apply(self.session.tick(self.now))

    def advance(self, seconds: float) -> None:
        """Let ``seconds`` pass, waking at each of the session's deadlines as the loop does."""
        until = self.now + seconds
        for _ in range(100_000):
            if self.exit_code is not None:
                return
            due = self.session.deadline()
            if due > until:
                break
            self.now = max(self.now, due)
            self.tick()
        else:
            pytest.fail("the session's deadline does not move on")
        self.now = until
        self.tick()

    def welcome(
        self, heartbeat_interval: float = 1.0, controller_timeout: float = 20.0, master: str = "master"
    ) -> None:
        self.receive(Welcome(master, "run1", heartbeat_interval, controller_timeout))

    def dispatch(self, *task_ids: str) -> None:
        self.receive(Dispatch([TaskEnvelope(task_id, "noop") for task_id in task_ids]))

    def start(self, *task_ids: str) -> None:
        self.pool.started.update(task_ids)

    def finish(self, *task_ids: str) -> None:
        """The pool ends these tasks with a result each."""
        for task_id in task_ids:
            del self.pool.jobs[task_id]
        self.session.produced([row(task_id) for task_id in task_ids], [], self.now)
        self.tick()

    def take(self) -> list[Message | SendResults]:
        """What was sent since the last call."""
        sent, self.sent = self.sent, []
        return sent

    def taken(self, kind: type[Any]) -> list[Any]:
        return [message for message in self.take() if isinstance(message, kind)]


def row(task_id: str) -> list[Any]:
    """A result row as the workers make it (the session reads only the task id)."""
    return [task_id, "noop", "ok", None, 1, 0.0, 0.001, None, [], None, "node1-42", []]


def result_ids(sent: list[Any]) -> list[str]:
    return [r[0] for message in sent if isinstance(message, SendResults) for r in message.rows]


@pytest.fixture
def h() -> Harness:
    return Harness()


@pytest.fixture
def registered(h: Harness) -> Harness:
    h.welcome()
    h.take()
    return h


# -- registration and credit ------------------------------------------------------------------------


def test_it_registers_with_the_initial_credit_and_beats_once_welcomed(h: Harness) -> None:
    (hello,) = h.take()
    assert hello == Hello(
        controller_id="node1-42",
        host="node1",
        pid=42,
        workers=WORKERS,
        credit=WORKERS * INITIAL_PREFETCH,
        task_types=["noop"],
        version="2.0",
    )
    h.advance(5.0)
    assert h.take() == []  # nothing before the Welcome
    h.welcome()
    assert h.take() == [Heartbeat(running=[], draining=False)]
    h.advance(3.0)
    assert h.take() == [Heartbeat(running=[], draining=False)] * 3


def test_results_go_back_in_one_message_with_the_credit_they_free(registered: Harness) -> None:
    h = registered
    h.dispatch("a", "b", "c")
    assert list(h.pool.jobs) == ["a", "b", "c"]
    assert h.take() == []  # the Hello's credit is not granted again
    h.finish("a", "b", "c")
    assert h.take() == [SendResults([row("a"), row("b"), row("c")], 3)]


def test_quick_tasks_widen_the_window_slow_ones_narrow_it(registered: Harness) -> None:
    h = registered
    h.dispatch("a")
    h.pool.mean_duration = 1e-6
    h.finish("a")
    (results,) = h.taken(SendResults)
    assert results.credit == WORKERS * MAX_PREFETCH - WORKERS * INITIAL_PREFETCH + 1
    h.dispatch(*[f"t{n}" for n in range(h.session.outstanding)])
    h.pool.mean_duration = 10 * HOLD_BUDGET
    h.finish("t0")
    (results,) = h.taken(SendResults)
    assert results.credit == 0  # far above the two tasks per worker slow tasks get


def test_a_dispatch_beyond_the_credit_is_handed_back_not_run(
    registered: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    h = registered
    granted = WORKERS * INITIAL_PREFETCH
    ids = [f"t{n}" for n in range(granted + 3)]
    with caplog.at_level(logging.WARNING, "cyclone.controller"):
        h.dispatch(*ids)
    assert list(h.pool.jobs) == ids[:granted]
    assert h.take() == [Handback(ids[granted:], "over the credit granted")]
    assert [r.getMessage() for r in caplog.records] == [
        f"ignored a bad message from the master: a Dispatch of {granted + 3} tasks, {granted} granted: "
        "the excess is handed back (1 so far)"
    ]
    h.dispatch("one-more")
    assert h.take() == [Handback(["one-more"], "over the credit granted")]
    assert len(h.pool.jobs) == granted


@pytest.mark.parametrize("seed", range(20))
def test_credit_never_exceeds_the_target_whatever_the_master_sends(seed: int) -> None:
    rng = random.Random(seed)
    h = Harness(mean_duration=rng.choice([None, 1e-6, 0.001, 0.01, 1.0]))
    target = h.session.target()
    granted = 0  # credit the master was granted and has not used, as it sees it
    for step in range(300):
        choice = rng.random()
        if choice < 0.4:
            h.dispatch(*[f"s{step}-{n}" for n in range(rng.randint(0, 2 * target))])
        elif choice < 0.75 and h.pool.jobs:
            h.finish(*rng.sample(sorted(h.pool.jobs), rng.randint(1, len(h.pool.jobs))))
        elif choice < 0.8:
            h.receive(Rehello("restarted"))
        elif choice < 0.9:
            h.welcome()
        else:
            h.advance(rng.choice([0.1, 1.0, 3.0]))
        for message in h.take():
            if isinstance(message, Hello):
                granted = message.credit
            elif isinstance(message, SendResults):
                granted += message.credit
        assert len(h.pool.jobs) + h.session.outstanding <= target
        assert h.session.outstanding <= granted
        granted = h.session.outstanding  # what the master could send, once its Dispatch arrived


# -- results until acknowledged ---------------------------------------------------------------------


def test_results_are_resent_after_a_rehello_until_acknowledged(registered: Harness) -> None:
    h = registered
    h.dispatch("a", "b")
    h.finish("a", "b")
    assert result_ids(h.take()) == ["a", "b"]
    h.receive(Rehello("the master restarted"))
    h.receive(Rehello("the master restarted"))  # one Hello answers several
    hello, *rest = h.take()
    assert isinstance(hello, Hello)
    assert rest == []
    assert hello.credit == WORKERS * INITIAL_PREFETCH
    h.welcome()
    sent = h.take()
    assert result_ids(sent) == ["a", "b"]
    assert [m.credit for m in sent if isinstance(m, SendResults)] == [0]  # the Hello granted it
    h.receive(Ack(["a", "b"]))
    h.advance(20.0)
    assert {type(m) for m in h.take()} == {Heartbeat}


def test_results_not_acknowledged_for_two_heartbeats_mean_register_again_and_resend(registered: Harness) -> None:
    h = registered
    h.dispatch("a")
    h.finish("a")
    h.take()
    h.advance(1.9)
    assert h.taken(Hello) == []
    h.advance(0.2)
    assert len(h.taken(Hello)) == 1
    assert not h.session.welcomed
    h.welcome()
    assert result_ids(h.take()) == ["a"]
    h.receive(Ack(["a"]))
    h.advance(10.0)
    assert h.taken(Hello) == []


def test_results_are_resent_after_a_reconnect(registered: Harness) -> None:
    h = registered
    h.dispatch("a", "b")
    h.finish("a")
    h.receive(Ack(["a"]))
    h.finish("b")
    h.advance(60.5)  # silence: a new socket
    assert len(h.connects) == 1
    assert h.take()[-1] == attrs.evolve(HELLO, credit=WORKERS * INITIAL_PREFETCH)
    h.welcome()
    assert result_ids(h.take()) == ["b"]


def test_results_and_handbacks_wait_for_the_welcome(h: Harness) -> None:
    h.take()
    h.dispatch("a", "b")
    h.start("a")
    h.finish("a")
    h.receive(Shutdown("done"))
    assert h.take() == []
    h.welcome()
    sent = h.take()
    heartbeat = sent.index(Heartbeat(running=[], draining=True))
    assert Handback(["b"], "draining") in sent
    assert result_ids(sent[:heartbeat]) == ["a"]  # the results before the heartbeat


def test_a_welcome_while_registered_changes_nothing(registered: Harness) -> None:
    h = registered
    h.dispatch("a")
    h.finish("a")
    h.take()
    for _ in range(5):
        h.welcome(heartbeat_interval=0.5)
    assert h.take() == []  # no resend storm
    assert h.session.heartbeat_interval == 1.0


# -- reconnects -------------------------------------------------------------------------------------


def test_backoff_doubles_up_to_the_maximum_and_resets_when_the_master_answers() -> None:
    h = Harness(master_timeout=10.0)
    h.welcome()
    h.advance(9.5)
    assert h.disconnects == []
    h.advance(100.0)
    assert h.disconnects[0] == 1010.0
    delays = [opened - closed for closed, opened in zip(h.disconnects, h.connects, strict=False)]
    assert delays[:6] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    assert [closed - opened for opened, closed in zip(h.connects, h.disconnects[1:], strict=False)] == [10.0] * (
        len(h.disconnects) - 1
    )  # each new socket says Hello and waits master_timeout for an answer
    h.receive(Ping())  # an answer resets the backoff
    closed = len(h.disconnects)
    h.advance(20.0)
    assert h.connects[closed] - h.disconnects[closed] == 0.5


def test_any_message_keeps_the_master_alive() -> None:
    h = Harness(master_timeout=10.0)
    h.welcome()
    for _ in range(10):
        h.advance(9.0)
        h.receive(Ping())
    assert h.connects == []


def test_it_gives_up_after_max_reconnects(caplog: pytest.LogCaptureFixture) -> None:
    h = Harness(max_reconnects=2)
    with caplog.at_level(logging.ERROR, "cyclone.controller"):
        h.advance(1000.0)
    assert h.exit_code == 1
    assert len(h.connects) == 2
    (error,) = caplog.records
    assert "did not answer after 2 reconnects; giving up" in error.getMessage()


def test_a_rehello_before_the_welcome_is_answered_once_per_heartbeat_interval(h: Harness) -> None:
    h.take()
    h.advance(0.5)
    h.receive(Rehello("who?"))
    assert h.taken(Hello) == []  # the Hello just sent answers it
    h.advance(0.5)
    h.receive(Rehello("who?"))
    assert len(h.taken(Hello)) == 1


# -- draining ---------------------------------------------------------------------------------------


def test_drain_hands_back_waits_for_running_then_acks_then_says_goodbye(registered: Harness) -> None:
    h = registered
    h.dispatch("r1", "r2", "w1")
    h.start("r1", "r2")
    h.receive(Shutdown("the run is over"))
    assert h.take() == [Heartbeat(running=["r1", "r2", "w1"], draining=True), Handback(["w1"], "draining")]
    h.advance(29.0)
    h.receive(Ping())
    h.finish("r1", "r2")
    assert h.taken(SendResults) == [SendResults([row("r1"), row("r2")], 0)]  # draining: no credit
    h.advance(5.0)
    assert h.exit_code is None  # waiting for the Acks
    h.receive(Ack(["r1", "r2"]))
    assert h.take()[-1] == Goodbye("shutdown")
    assert h.exit_code == 0


def test_running_tasks_past_the_drain_timeout_are_killed_and_handed_back(registered: Harness) -> None:
    h = registered
    h.dispatch("r1", "w1")
    h.start("r1")
    h.signal()
    h.take()
    h.advance(29.9)
    assert h.pool.jobs
    assert h.exit_code is None
    h.advance(0.1)
    assert h.take()[-2:] == [
        Handback(["r1"], "killed when the controller stopped (drain timeout 30.0 s)"),
        Goodbye("shutdown"),
    ]
    assert h.exit_code == 0


def test_results_unacknowledged_when_draining_ends_mean_exit_1(
    registered: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    h = registered
    h.dispatch("a")
    h.finish("a")
    h.stop()
    with caplog.at_level(logging.ERROR, "cyclone.controller"):
        h.advance(59.5)
        h.receive(Ping())
        assert h.exit_code is None
        h.advance(0.5)
    assert h.take()[-1] == Goodbye("shutdown")
    assert h.exit_code == 1
    assert [r.getMessage() for r in caplog.records] == ["exiting with 1 results the master did not acknowledge"]


def test_a_second_signal_stops_now(registered: Harness) -> None:
    h = registered
    h.dispatch("r1")
    h.start("r1")
    h.signal()
    h.take()
    h.signal()
    assert h.take() == [Handback(["r1"], "killed when the controller stopped (drain timeout 30.0 s)"), Goodbye()]
    assert h.exit_code == 0


def test_a_dispatch_while_draining_is_handed_back(registered: Harness) -> None:
    h = registered
    h.dispatch("r1")
    h.start("r1")
    h.stop()
    h.take()
    h.dispatch("crossed")
    assert h.take() == [Handback(["crossed"], "draining")]
    assert list(h.pool.jobs) == ["r1"]


def test_refused_means_exit_2_at_once(registered: Harness, caplog: pytest.LogCaptureFixture) -> None:
    h = registered
    h.dispatch("r1")
    with caplog.at_level(logging.ERROR, "cyclone.controller"):
        h.receive(Refuse("controller id in use"))
    assert h.exit_code == 2
    assert [r.getMessage() for r in caplog.records] == ["master refused this controller: controller id in use"]
    assert not h.session.receive(Dispatch([TaskEnvelope("late", "noop")]), h.now)
    assert not h.session.tick(h.now + 100)
    assert h.session.deadline() == math.inf


# -- distrust -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("heartbeat_interval", "controller_timeout", "interval", "problem"),
    [
        (0.5, 20.0, 0.5, None),  # the master asks for more heartbeats: it gets them
        (5.0, 20.0, 1.0, None),  # fewer: the controller keeps its own interval
        (0.5, 1.0, 0.25, None),  # at least four within the master's timeout
        (1e-9, 20.0, 0.05, "heartbeat_interval=1e-09 outside 0.05..3600 s"),
        (0.5, 1e-9, 0.05, "controller_timeout=1e-09 outside 0.2..86400 s"),
        (1e9, 1e12, 1.0, "heartbeat_interval=1e+09 outside 0.05..3600 s, controller_timeout=1e+12 outside"),
        (math.nan, 20.0, 1.0, "heartbeat_interval=nan ignored (not a positive finite number)"),
        (-1.0, 20.0, 1.0, "heartbeat_interval=-1.0 ignored"),
        (0.0, 20.0, 1.0, "heartbeat_interval=0.0 ignored"),
        (math.inf, -math.inf, 1.0, "heartbeat_interval=inf ignored (not a positive finite number), controller_t"),
        (0.5, math.nan, 0.5, "controller_timeout=nan ignored"),
    ],
)
def test_the_numbers_of_a_welcome_are_kept_within_limits(
    h: Harness,
    caplog: pytest.LogCaptureFixture,
    heartbeat_interval: float,
    controller_timeout: float,
    interval: float,
    problem: str | None,
) -> None:
    with caplog.at_level(logging.WARNING, "cyclone.controller"):
        h.welcome(heartbeat_interval, controller_timeout)
    assert h.session.heartbeat_interval == interval
    if problem is None:
        assert caplog.records == []
    else:
        (line,) = [r.getMessage() for r in caplog.records]
        assert problem in line
        assert line.endswith(f"heartbeat every {interval:g} s")
    h.take()
    h.receive(Ack([]))  # stays alive
    h.advance(1.0)
    beats = h.taken(Heartbeat)
    assert len(beats) == round(1.0 / interval)
    assert len(beats) <= 1 / WELCOME_LIMITS["heartbeat_interval"][0]


def test_messages_not_meant_for_a_controller_are_ignored_and_logged_now_and_then(
    caplog: pytest.LogCaptureFixture,
) -> None:
    h = Harness(master_timeout=COMPLAIN_EVERY)
    h.welcome()
    h.take()
    with caplog.at_level(logging.WARNING, "cyclone.controller"):
        for _ in range(3):
            h.receive(HELLO)
        h.receive(StatusReply({"queued": 1}))
        h.session.bad_frame("not a msgpack message", h.now)
        h.advance(COMPLAIN_EVERY)
        h.session.bad_frame("not a msgpack message", h.now)
    assert [r.getMessage() for r in caplog.records] == [
        "ignored a bad message from the master: unexpected hello message (1 so far)",
        f"master tcp://127.0.0.1:5678 silent for {COMPLAIN_EVERY:.1f} s; reconnecting in 0.5 s",
        "ignored a bad message from the master: not a msgpack message (6 so far)",
    ]
    assert not h.connected  # none of it counted as the master answering


KEYS = Path("/keys")


def test_with_a_token_it_enrolls_records_it_then_registers_on_a_new_socket() -> None:
    h = Harness(enroll="c2VjcmV0", key_dir=KEYS)
    assert h.take() == [Enroll("c2VjcmV0")]
    h.receive(Enrolled("node1", "node1-*"))
    assert h.recorded == [RecordEnrollment("node1", "node1-*")]
    assert (h.connects, h.disconnects) == ([h.now], [h.now])
    (hello,) = h.take()
    assert isinstance(hello, Hello)
    assert hello.controller_id == HELLO.controller_id
    h.welcome()
    h.receive(Enrolled("again", "*"))  # not asked for: nothing happens
    assert len(h.recorded) == 1


def test_an_id_still_in_use_is_tried_again_when_the_master_says(caplog: pytest.LogCaptureFixture) -> None:
    # Restarted at once after a kill: the master still holds the old process's registration.
    h = Harness()
    with caplog.at_level(logging.WARNING, "cyclone.controller"):
        h.receive(Refuse("controller id 'node1-42' is in use by pid 41 on node1", retry_after=7.5))
    assert h.exit_code is None
    assert not h.connected
    assert caplog.records[-1].getMessage().endswith("in use by pid 41 on node1; trying again in 7.5 s")
    h.sent.clear()
    h.advance(7.4)
    assert not h.connected
    h.advance(0.2)
    assert h.connected
    assert [type(m) for m in h.sent] == [Hello]
    h.welcome()  # the old registration timed out: taken over
    assert h.exit_code is None


def test_an_id_in_use_for_good_is_exit_2_after_a_few_tries() -> None:
    h = Harness()
    for _ in range(IN_USE_TRIES):
        h.receive(Refuse("in use", retry_after=1.0))
        assert h.exit_code is None
        h.advance(1.0)
    h.receive(Refuse("in use", retry_after=1.0))
    assert h.exit_code == 2


def test_a_refused_enrollment_is_one_line_and_exit_2(caplog: pytest.LogCaptureFixture) -> None:
    h = Harness(enroll="c2VjcmV0", key_dir=KEYS)
    with caplog.at_level(logging.INFO, "cyclone.controller"):
        h.receive(Refuse("the join token is unknown, used or expired: ask for a new one"))
    assert h.exit_code == 2
    assert [r.getMessage() for r in caplog.records] == [
        "master refused to enroll this controller with its join token: "
        "the join token is unknown, used or expired: ask for a new one"
    ]


def test_a_handshake_refused_while_enrolling_is_exit_2(caplog: pytest.LogCaptureFixture) -> None:
    h = Harness(enroll="c2VjcmV0", key_dir=KEYS)
    with caplog.at_level(logging.INFO, "cyclone.controller"):
        h.apply(h.session.handshake_failed(True, h.now))
    assert h.exit_code == 2
    (line,) = [r.getMessage() for r in caplog.records]
    assert line.startswith("the master at tcp://127.0.0.1:5678 refused to enroll this controller")


def test_failed_handshakes_are_said_once_per_socket_and_the_reconnect_rules_go_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    h = Harness(key_dir=KEYS, master_timeout=5.0)
    with caplog.at_level(logging.WARNING, "cyclone.controller"):
        for _ in range(3):  # libzmq retries the handshake every 0.1 s or so
            h.apply(h.session.handshake_failed(False, h.now))
        h.apply(h.session.handshake_failed(True, h.now))
        h.advance(5.0)
        assert len(h.connects) == 0
        h.advance(0.5)  # a new socket
        h.apply(h.session.handshake_failed(False, h.now))
    assert h.exit_code is None
    assert [r.getMessage() for r in caplog.records] == [
        "the handshake with tcp://127.0.0.1:5678 failed: it is not the master whose key is pinned in "
        "/keys/master.public (or it runs without keys)",
        "no answer from master tcp://127.0.0.1:5678: is it running, and is its key the one pinned in "
        "/keys/master.public? reconnecting in 0.5 s",
        "the handshake with tcp://127.0.0.1:5678 failed: it is not the master whose key is pinned in "
        "/keys/master.public (or it runs without keys)",
    ]
    assert len(h.connects) == 1


def test_a_key_the_master_does_not_admit_is_said_and_it_keeps_trying(caplog: pytest.LogCaptureFixture) -> None:
    h = Harness(key_dir=KEYS, master_timeout=5.0, max_reconnects=1)
    with caplog.at_level(logging.ERROR, "cyclone.controller"):
        h.apply(h.session.handshake_failed(True, h.now))
        h.advance(20.0)
    assert h.exit_code == 1  # gave up, as without keys
    assert caplog.records[0].getMessage() == (
        "the master at tcp://127.0.0.1:5678 does not admit this controller's key (/keys/controller.public): "
        "allow it there with `cyclone keys allow`, or enroll with --token"
    )


# -- run after run (stay) ---------------------------------------------------------------------------


def test_with_stay_a_shutdown_drains_says_goodbye_and_waits_for_the_next_master() -> None:
    h = Harness(stay=True)
    h.welcome(master="m1")
    h.dispatch("r1", "w1")
    h.start("r1")
    h.take()
    h.receive(Shutdown("the run is over"))
    assert h.take() == [Heartbeat(running=["r1", "w1"], draining=True), Handback(["w1"], "draining")]
    h.finish("r1")
    assert result_ids(h.take()) == ["r1"]
    h.receive(Ack(["r1"]))
    assert h.take() == [Goodbye("shutdown")]
    assert (h.exit_code, h.connected, h.pool.draining) == (None, False, False)
    h.advance(0.5)  # reconnect_interval
    assert h.connects == [h.now]
    assert [type(m) for m in h.take()] == [Hello]
    h.welcome(master="m2")  # the next run
    h.take()
    h.dispatch("n1")
    assert "n1" in h.pool.jobs
    h.finish("n1")
    assert result_ids(h.take()) == ["n1"]


def test_with_stay_the_finished_master_saying_so_again_backs_off_until_a_new_one_comes() -> None:
    h = Harness(stay=True, reconnect_interval=0.5, reconnect_max=4.0)
    h.welcome(master="m1")
    h.receive(Shutdown("over"))
    for _ in range(5):  # the old master still runs its stop sequence: Welcome, then Shutdown
        h.advance(h.session.deadline() - h.now)
        h.welcome(master="m1")
        h.receive(Shutdown("over"))
        assert h.exit_code is None
    delays = [opened - closed for closed, opened in zip(h.disconnects, h.connects, strict=False)]
    assert delays == [0.5, 1.0, 2.0, 4.0, 4.0]
    h.advance(h.session.deadline() - h.now)
    h.welcome(master="m2")  # a new master: a new run, and the backoff starts afresh
    h.receive(Shutdown("over"))
    h.advance(10.0)
    assert h.connects[-1] - h.disconnects[-1] == 0.5


def test_with_stay_a_signal_still_drains_and_exits() -> None:
    h = Harness(stay=True)
    h.welcome()
    h.dispatch("r1")
    h.start("r1")
    h.receive(Shutdown("over"))
    h.signal()  # during the drain for the next run: exit once drained instead
    h.finish("r1")
    h.receive(Ack(["r1"]))
    assert h.exit_code == 0
    h = Harness(stay=True)
    h.welcome()
    h.receive(Shutdown("over"))
    assert not h.connected
    h.signal()  # between runs
    assert h.exit_code == 0


def test_with_stay_a_long_wait_for_the_next_master_is_not_given_up() -> None:
    h = Harness(stay=True, master_timeout=10.0, reconnect_max=30.0)
    h.welcome()
    h.receive(Shutdown("over"))
    h.advance(24 * 3600.0)
    assert h.exit_code is None
    assert len(h.connects) > 1000


def test_without_stay_a_run_that_is_over_gives_up_on_a_silent_master(caplog: pytest.LogCaptureFixture) -> None:
    h = Harness(master_timeout=10.0, drain_timeout=3600.0)
    h.welcome()
    h.dispatch("r1")
    h.start("r1")
    h.receive(Shutdown("over"))  # then the master is gone, while a task still runs
    with caplog.at_level(logging.ERROR, "cyclone.controller"):
        h.advance(RUN_OVER_TIMEOUTS * 10.0 - 0.1)
        assert h.exit_code is None
        h.advance(0.1)
    assert h.exit_code == 1
    (error,) = caplog.records
    assert "the run is over and master" in error.getMessage()
    assert "1 tasks held" in error.getMessage()


def test_without_stay_a_run_that_is_not_over_reconnects_for_ever() -> None:
    h = Harness(master_timeout=10.0, reconnect_max=30.0)
    h.welcome()
    h.advance(24 * 3600.0)
    assert h.exit_code is None
