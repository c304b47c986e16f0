"""The master's pure core: registration and identities, stop phases, and a stateful hunt for
interleavings that break its invariants (no sockets, a fake clock)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from cyclone_core.engine import master_core
from cyclone_core.engine import protocol as p
from cyclone_core.engine.master_core import IN_USE_MARGIN, Effects, MasterCore, Phase
from cyclone_core.engine.scheduler import TaskRecord
from cyclone_core.model import Result, Status
from cyclone_core.settings import MasterSettings


def make_core(**overrides: Any) -> MasterCore:
    options = {"window": 50, "heartbeat_interval": 1.0, "controller_timeout": 5.0, **overrides}
    return MasterCore(
        MasterSettings(**options),
        master_id="m1",
        run_id="r",
        known_types={"noop", "sleep"},
        drain_timeout=10.0,
        delivery_timeout=5.0,
    )


def hello(cid: str, *, pid: int = 1, credit: int = 4, host: str = "h") -> bytes:
    return p.encode(p.Hello(controller_id=cid, host=host, pid=pid, workers=2, credit=credit, task_types=["noop"]))


def records(first: int, count: int, type_: str = "noop") -> list[TaskRecord]:
    return [TaskRecord(seq, f"r-{seq}", type_, {}) for seq in range(first, first + count)]


def sent(effects: Effects, identity: bytes, cls: type[Any]) -> list[Any]:
    return [m for i, m in effects.sends if i == identity and isinstance(m, cls)]


def test_one_connection_speaks_for_one_controller_id() -> None:
    """The crash this guards against: a routing identity that said Hello as ``a`` and then as
    ``b`` left ``a`` registered with credit but without a connection, and the next dispatch
    raised KeyError out of the master's loop."""
    core = make_core()
    core.submit(records(1, 10))
    core.frame(b"x", [hello("a")], 0.0)
    core.frame(b"x", [hello("b")], 0.1)
    effects = core.take(0.1)
    (refused,) = sent(effects, b"x", p.Refuse)
    assert refused.reason == "this connection already speaks for controller 'a'"
    assert set(core.scheduler.controllers) == {"a"}
    assert [(identity, len(batch)) for identity, batch in effects.dispatch] == [(b"x", 4)]
    core.check()


def test_a_reconnect_on_a_new_connection_moves_the_controller_there() -> None:
    core = make_core()
    core.submit(records(1, 10))
    core.frame(b"old", [hello("c1", credit=1)], 0.0)
    core.take(0.0)
    core.frame(b"new", [hello("c1", credit=1)], 1.0)  # the same process (host and pid): a reconnect
    effects = core.take(1.0)
    assert core.controller_of(b"old") is None
    assert core.controller_of(b"new") == "c1"
    assert [identity for identity, _ in effects.dispatch] == [b"new"]
    core.check()


def test_a_controller_replaced_by_a_new_process_keeps_its_new_connection() -> None:
    core = make_core(controller_timeout=10.0)
    core.submit(records(1, 5))
    core.frame(b"old", [hello("c1", pid=1, credit=1)], 0.0)
    core.take(0.0)
    core.frame(b"new", [hello("c1", pid=2, credit=1)], 30.0)  # the old process has been silent 30 s
    effects = core.take(30.0)
    assert [lost.reason for lost in effects.lost] == ["replaced by a new process with the same id"]
    assert core.controller_of(b"new") == "c1"
    assert core.controller_of(b"old") is None
    core.scheduler.grant("c1", 1, 31.0)
    effects = core.take(31.0)
    assert [identity for identity, _ in effects.dispatch] == [b"new"]
    assert len(core.scheduler.controllers["c1"].leases) == 2
    core.check()


def test_another_live_process_with_the_same_id_is_refused() -> None:
    core = make_core()
    core.frame(b"one", [hello("c1", pid=1)], 0.0)
    core.frame(b"two", [hello("c1", pid=2)], 1.0)
    (refused,) = sent(core.take(1.0), b"two", p.Refuse)
    assert refused.reason == "controller id 'c1' is in use by pid 1 on h"
    timeout = core.scheduler.settings.controller_timeout
    assert refused.retry_after == timeout - 1.0 + IN_USE_MARGIN  # when the first will have timed out
    assert core.controller_of(b"two") is None
    core.check()


def test_stop_phases_drain_then_deliver_then_end() -> None:
    core = make_core()
    core.submit(records(1, 2))
    core.generator_ended()
    core.frame(b"x", [hello("c1")], 0.0)
    (batch,) = [b for _, b in core.take(0.0).dispatch]
    results = [p.result_to_row(Result(r.id, r.type, Status.OK, attempt=r.attempt)) for r in batch]
    core.frame(b"x", [p.encode_results(results, 2)], 0.5)
    core.tick(0.5)
    effects = core.take(0.5)
    assert core.phase is Phase.DRAINING
    assert [m.reason for m in sent(effects, b"x", p.Shutdown)] == ["all tasks are done"]
    core.frame(b"x", [p.encode(p.Goodbye())], 0.6)
    core.tick(0.6)  # no controller left: draining is over
    effects = core.take(0.6)
    assert effects.lost[0].reason == "goodbye"
    assert core.phase is Phase.DELIVERING
    assert effects.begin_delivery
    core.delivered()
    assert core.done


def test_a_second_stop_request_ends_at_once_and_a_late_hello_is_told_to_stop() -> None:
    core = make_core()
    core.submit(records(1, 3))
    core.request_stop(0.0)
    assert core.phase is Phase.DRAINING
    assert core.interrupted
    core.frame(b"late", [hello("c9")], 0.1)
    effects = core.take(0.1)
    assert [m.reason for m in sent(effects, b"late", p.Shutdown)] == ["master is stopping"]
    assert not effects.dispatch
    core.request_stop(0.2)
    assert core.done


def test_draining_ends_at_its_deadline_and_delivery_at_its_own() -> None:
    core = make_core(controller_timeout=60.0)  # the controller stays, silent: only the deadline ends it
    core.frame(b"x", [hello("c1")], 0.0)
    core.request_stop(0.0)
    core.tick(10.0)
    assert core.phase is Phase.DRAINING
    core.tick(10.1)
    assert core.phase is Phase.DELIVERING
    core.tick(15.2)
    assert core.done


def test_the_feed_policy_follows_the_window_the_generator_and_the_phase() -> None:
    core = make_core(window=10)
    assert core.feed_room(0.0) == 10
    core.submit(records(1, 6))
    assert core.feed_room(0.0) == 4
    core.generator_idle(0.0)
    assert core.feed_room(0.01) == 0
    assert core.feed_room(0.1) == 4
    core.request_stop(0.1)
    assert core.feed_room(0.2) == 0


def test_garbage_is_counted_and_a_stranger_refused_once_in_a_while() -> None:
    core = make_core()
    core.frame(b"s", [b"\xc1"], 0.0)
    core.frame(b"s", [b"\xc1"], 1.0)
    core.frame(b"s", [b"a", b"b"], 2.0)
    core.frame(b"s", [p.encode(p.Ping())], 3.0)  # a master's message, sent to the master
    effects = core.take(3.0)
    assert core.protocol_errors == 4
    assert len(sent(effects, b"s", p.Refuse)) == 1


# -- the stateful hunt --------------------------------------------------------------------------

IDENTITIES = [b"i1", b"i2", b"i3"]
CONTROLLERS = ["a", "b", "c"]
REPORTED = [Status.OK, Status.FAILED, Status.CRASHED, Status.TIMEOUT]


class MasterCoreMachine(RuleBasedStateMachine):
    """Random interleavings of every event the core takes; the invariants after every step."""

    @initialize()
    def start(self) -> None:
        self.core = make_core(window=12, max_crash_retries=1, max_lost_retries=1, max_failed_retries=1)
        self.now = 0.0
        self.seq = 0
        self.ids: list[str] = []
        self.settled: set[str] = set()

    def step(self) -> None:
        effects = self.core.take(self.now)
        for record, result in effects.settled:
            assert result.task_id not in self.settled, f"{result.task_id} settled twice"
            assert result.task_id == record.id
            self.settled.add(result.task_id)
        for identity, batch in effects.dispatch:
            cid = self.core.controller_of(identity)
            assert cid is not None, "dispatched on a connection that speaks for nobody"
            leases = self.core.scheduler.controllers[cid].leases
            assert all(leases.get(r.id) is r for r in batch)

    @rule(
        identity=st.sampled_from(IDENTITIES),
        cid=st.sampled_from(CONTROLLERS),
        pid=st.sampled_from([1, 2]),
        credit=st.integers(0, 6),
    )
    def hello(self, identity: bytes, cid: str, pid: int, credit: int) -> None:
        self.core.frame(identity, [hello(cid, pid=pid, credit=credit)], self.now)
        self.step()

    @rule(count=st.integers(1, 5))
    def submit(self, count: int) -> None:
        room = min(count, self.core.feed_room(self.now))
        new = records(self.seq + 1, room)
        self.seq += room
        self.ids += [r.id for r in new]
        self.core.submit(new)
        self.step()

    @rule(
        identity=st.sampled_from(IDENTITIES),
        data=st.data(),
        status=st.sampled_from(REPORTED),
        credit=st.integers(0, 3),
    )
    def results(self, identity: bytes, data: st.DataObject, status: Status, credit: int) -> None:
        task_id = data.draw(st.sampled_from([*self.ids, "r-999"]))
        record = self.core.scheduler.tasks.get(task_id)
        attempt = data.draw(st.sampled_from([record.attempt or 1, 1, 2, 3]) if record else st.integers(1, 3))
        row = p.result_to_row(Result(task_id, "noop", status, attempt=attempt))
        self.core.frame(identity, [p.encode_results([row], credit)], self.now)
        self.step()

    @rule(identity=st.sampled_from(IDENTITIES), data=st.data(), draining=st.booleans())
    def heartbeat(self, identity: bytes, data: st.DataObject, draining: bool) -> None:
        running = data.draw(st.lists(st.sampled_from([*self.ids, "r-999"]), max_size=6)) if self.ids else []
        self.core.frame(identity, [p.encode(p.Heartbeat(running=running, draining=draining))], self.now)
        self.step()

    @rule(identity=st.sampled_from(IDENTITIES), data=st.data())
    def handback(self, identity: bytes, data: st.DataObject) -> None:
        task_ids = data.draw(st.lists(st.sampled_from([*self.ids, "r-999"]), max_size=4)) if self.ids else []
        self.core.frame(identity, [p.encode(p.Handback(task_ids))], self.now)
        self.step()

    @rule(identity=st.sampled_from(IDENTITIES))
    def goodbye(self, identity: bytes) -> None:
        self.core.frame(identity, [p.encode(p.Goodbye())], self.now)
        self.step()

    @rule(identity=st.sampled_from(IDENTITIES), garbage=st.binary(max_size=20))
    def garbage(self, identity: bytes, garbage: bytes) -> None:
        self.core.frame(identity, [garbage], self.now)
        self.step()

    @rule(seconds=st.floats(0.0, 8.0))
    def tick(self, seconds: float) -> None:
        self.now += seconds
        self.core.tick(self.now)
        self.step()

    @rule()
    def generator_ends(self) -> None:
        self.core.generator_ended()
        self.step()

    @rule()
    def stop(self) -> None:
        self.core.request_stop(self.now)
        self.step()

    @invariant()
    def holds(self) -> None:
        if hasattr(self, "core"):
            self.core.check()
            window = set(self.core.scheduler.tasks)
            assert not window & self.settled, "a settled task is back in the window"


TestMasterCoreMachine = MasterCoreMachine.TestCase
TestMasterCoreMachine.settings = settings(
    max_examples=150, stateful_step_count=60, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


@pytest.mark.parametrize("cid", ["a", "b"])
def test_invariant_check_catches_a_controller_without_a_connection(cid: str) -> None:
    core = make_core()
    core.frame(b"x", [hello(cid)], 0.0)
    core.take(0.0)
    core._identities.clear()  # what the old handling of a second Hello did
    with pytest.raises(AssertionError, match="every registered controller has one connection"):
        core.check()


def test_a_resumed_run_that_is_already_complete_waits_for_its_controllers_to_tell_them_to_stop() -> None:
    """A master killed just after its last result and restarted on its journal used to exit
    before its controllers came back, and they reconnected to nobody for ever."""
    core = MasterCore(
        MasterSettings(controller_timeout=5.0), master_id="m1", run_id="r", known_types={"noop"}, resumed=True
    )
    core.generator_ended()
    core.tick(0.0)
    assert core.phase is Phase.DRAINING
    core.tick(3.0)
    assert core.phase is Phase.DRAINING  # still waiting for controllers to come back
    core.frame(b"x", [hello("c1")], 3.5)
    assert [m.reason for m in sent(core.take(3.5), b"x", p.Shutdown)] == ["all tasks are done"]
    core.frame(b"x", [p.encode(p.Goodbye())], 3.6)
    core.tick(3.6)
    assert core.phase is Phase.DELIVERING  # the one that came back left: no need to wait on


def test_a_resumed_complete_run_without_controllers_ends_after_the_controller_timeout() -> None:
    core = MasterCore(MasterSettings(controller_timeout=5.0), master_id="m1", run_id="r", resumed=True)
    core.generator_ended()
    core.tick(0.0)
    core.tick(4.9)
    assert core.phase is Phase.DRAINING
    core.tick(5.0)
    assert core.phase is Phase.DELIVERING


class _Grant:
    name, admin, group = "controllers", False, False

    def allows(self, controller_id: str) -> bool:
        return True


def test_submit_and_fetch_need_an_admin_key_and_a_running_master() -> None:
    core = MasterCore(
        MasterSettings(),
        master_id="m1",
        run_id="r",
        grants=lambda key: _Grant() if key == "ctl" else None,
        master_key="own",
    )
    submit = p.encode(p.Submit([["noop", {}, None, None]] * 5000, done=True))
    assert len(submit) > 4096
    core.frame(b"a", [submit], 0.0, "own")  # a large frame is fine from an admin
    core.frame(b"a", [p.encode(p.Fetch(0, 10))], 0.0, "own")
    effects = core.take(0.0)
    assert [(i, len(m.tasks), m.done) for i, m in effects.submissions] == [(b"a", 5000, True)]
    assert [(i, m.after, m.limit) for i, m in effects.fetches] == [(b"a", 0, 10)]
    core.frame(b"b", [p.encode(p.Submit([], done=True))], 1.0, "ctl")
    core.frame(b"c", [p.encode(p.Fetch(0, 10))], 1.0, "ctl")
    effects = core.take(1.0)
    assert not effects.submissions
    assert not effects.fetches
    assert [m.reason for m in sent(effects, b"b", p.Refuse)] == ["submitting tasks needs a key with the admin role"]
    assert [m.reason for m in sent(effects, b"c", p.Refuse)] == ["fetching results needs a key with the admin role"]
    core.request_stop(2.0)
    core.frame(b"a", [p.encode(p.Submit([], done=True))], 2.0, "own")
    (refused,) = sent(core.take(2.0), b"a", p.Refuse)
    assert refused.reason == "this master takes no more tasks: master is stopping"


def test_an_admitted_key_that_starts_like_no_other_is_not_taken_for_an_enrolling_one() -> None:
    """Z85 keys may start with any of 85 characters ('?' included): the user id of an enrolling
    connection is marked with one that no key has."""
    from cyclone_core import keys  # noqa: PLC0415

    key = "?" + "0" * 39
    grant = keys.Grant(name="odd", key=key)
    core = MasterCore(MasterSettings(), master_id="m1", run_id="r", known_types={"noop"}, grants={key: grant}.get)
    assert core.authenticate(key, enrolling=True, now=0.0) == key
    core.frame(b"x", [hello("c1")], 0.0, key)
    assert sent(core.take(0.0), b"x", p.Welcome)
    stranger = "1" * 40
    assert core.authenticate(stranger, enrolling=True, now=0.0) == master_core.ENROLLING + stranger
    assert (
        master_core.ENROLLING
        not in "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#"
    )


def test_a_stale_hello_from_a_replaced_connection_gets_no_work() -> None:
    """A healed partition: the controller's new connection ``c1.4`` registered, then a Hello it
    sent on its old connection ``c1.3`` before the partition arrives.  The old connection is
    dead (the controller closed it): nothing may be dispatched there."""
    core = make_core()
    core.submit(records(1, 20))
    core.frame(b"c1.3", [hello("c1", credit=2)], 0.0)
    core.take(0.0)
    core.frame(b"c1.4", [hello("c1", credit=2)], 1.0)
    core.take(1.0)
    core.frame(b"c1.3", [hello("c1", credit=8)], 1.1)  # the stale one, still buffered
    effects = core.take(1.1)
    assert core.controller_of(b"c1.4") == "c1"
    assert core.controller_of(b"c1.3") is None
    assert not effects.dispatch
    assert not [i for i, _ in effects.sends if i == b"c1.3"], "no Welcome (nor Rehello) to the dead connection"
    assert core.refusals["replaced connection"] == 1
    # Nor does anything else from the replaced connection (results, heartbeats) bring it back.
    core.frame(b"c1.3", [p.encode(p.Heartbeat(running=[], draining=False))], 1.2)
    assert not [i for i, _ in core.take(1.2).sends if i == b"c1.3"]
    # The live connection still gets work, and a new process with the same id (its own
    # numbering from 1) is not taken for a stale connection.
    core.frame(b"c1.4", [p.encode(p.Results([], credit=3))], 1.3)
    assert [identity for identity, _ in core.take(1.3).dispatch] == [b"c1.4"]
    core.frame(b"c1.1", [hello("c1", pid=2, credit=2)], 30.0)
    core.take(30.0)
    assert core.controller_of(b"c1.1") == "c1"
    core.check()


def test_a_stale_hello_from_an_older_connection_never_registered_gets_no_work() -> None:
    """The old connection may never have reached the master before the partition: it is older
    by its number (``<id>.<n>``, counted per controller process)."""
    core = make_core()
    core.submit(records(1, 20))
    core.frame(b"c1.5", [hello("c1", credit=2)], 0.0)
    core.take(0.0)
    core.frame(b"c1.4", [hello("c1", credit=8)], 0.5)
    effects = core.take(0.5)
    assert core.controller_of(b"c1.5") == "c1"
    assert not effects.dispatch
    core.check()


def test_work_sent_on_a_connection_replaced_later_comes_back_at_the_first_heartbeat_of_the_new_one() -> None:
    """A healed partition that delivers the old connection's Hello first: the master cannot
    know yet that ``c1.3`` is dead and dispatches there.  Once ``c1.4`` says Hello, those tasks
    never reached the controller; its first heartbeat there (sent after its Welcome) settles
    it: they are queued again at once, not a heartbeat interval later."""
    core = make_core(heartbeat_interval=2.0, controller_timeout=20.0)
    core.submit(records(1, 20))
    core.frame(b"c1.3", [hello("c1", credit=3)], 0.0)  # the stale Hello, first
    lost = [record.id for record in core.take(0.0).dispatch[0][1]]
    core.frame(b"c1.4", [hello("c1", credit=2)], 0.1)
    fresh = [record.id for record in core.take(0.1).dispatch[0][1]]
    core.frame(b"c1.4", [p.encode(p.Heartbeat(running=fresh[:1], draining=False))], 0.2)
    core.take(0.2)
    leases = core.scheduler.controllers["c1"].leases
    assert not set(lost) & set(leases), "the tasks sent on the dead connection are taken back"
    assert set(fresh) <= set(leases), "a task dispatched on the new connection may cross its heartbeat"
    assert core.scheduler.queued == 20 - len(fresh)
    core.check()


def test_a_controller_that_reconnects_on_a_new_connection_keeps_what_it_holds_and_its_results_count() -> None:
    """The other side of the rule above: tasks the controller did receive on the old connection
    are in its heartbeat, or finished, their results sent again before the heartbeat."""
    core = make_core(heartbeat_interval=2.0, controller_timeout=20.0)
    core.submit(records(1, 20))
    core.frame(b"c1.3", [hello("c1", credit=3)], 0.0)
    held = [record.id for record in core.take(0.0).dispatch[0][1]]
    core.frame(b"c1.4", [hello("c1", credit=0)], 5.0)
    core.take(5.0)
    core.frame(b"c1.4", [results_frame(held[:1])], 5.1)
    core.frame(b"c1.4", [p.encode(p.Heartbeat(running=held[1:], draining=False))], 5.1)
    core.take(5.1)
    assert core.scheduler.stats.succeeded == 1
    assert core.scheduler.stats.refused == 0
    assert set(core.scheduler.controllers["c1"].leases) == set(held[1:])
    core.check()


def results_frame(task_ids: list[str], credit: int = 0) -> bytes:
    return p.encode(p.Results([Result(task_id, "noop", Status.OK) for task_id in task_ids], credit=credit))


def test_a_journal_that_cannot_be_written_holds_back_acks_and_dispatches_until_it_can() -> None:
    core = make_core()
    core.submit(records(1, 4))
    core.frame(b"c1.1", [hello("c1", credit=2)], 0.0)
    first = core.take(0.0)
    assert [len(batch) for _, batch in first.dispatch] == [2]
    core.frame(b"c1.1", [results_frame(["r-1", "r-2"], credit=2)], 0.1)
    effects = core.take(0.1)
    assert sent(effects, b"c1.1", p.Ack)
    assert effects.dispatch
    # The commit of that turn failed: its Acks wait and its dispatch goes back to the queue.
    core.journal_failed(effects, 0.1)
    assert not sent(effects, b"c1.1", p.Ack)
    assert not effects.dispatch
    assert core.scheduler.queued == 2
    assert core.feed_room(0.2) == 0
    # The controller sends its results again (no Ack came): counted once, still not acknowledged.
    core.frame(b"c1.1", [results_frame(["r-1", "r-2"])], 1.0)
    held = core.take(1.0)
    assert not sent(held, b"c1.1", p.Ack)
    assert not held.dispatch
    assert not held.settled
    assert core.scheduler.stats.succeeded == 2
    core.check()
    core.journal_written()
    resumed = core.take(1.1)
    (ack,) = sent(resumed, b"c1.1", p.Ack)
    assert sorted(ack.task_ids) == ["r-1", "r-2"], "each result acknowledged once"
    assert [len(batch) for _, batch in resumed.dispatch] == [2], "the credit handed back is used again"
    # The run does not end while its last results are not journaled.
    core.generator_ended()
    core.frame(b"c1.1", [results_frame(["r-3", "r-4"])], 1.2)
    core.journal_failed(core.take(1.2), 1.2)
    core.tick(3.0)
    assert core.phase is Phase.RUNNING
    core.journal_written()
    core.tick(3.1)
    assert core.phase is Phase.DRAINING
    core.check()


def test_the_many_controllers_of_one_group_key_register_at_once_and_a_cycling_one_is_held_back() -> None:
    class _GroupGrant(_Grant):
        group = True

    core = MasterCore(
        MasterSettings(hellos_per_minute=6.0),
        master_id="m1",
        run_id="r",
        known_types={"noop"},
        grants=lambda key: _GroupGrant() if key == "job" else None,
    )
    for n in range(64):  # a Slurm job's controllers, sharing the job's key
        core.frame(f"node{n}".encode(), [hello(f"node{n}", pid=n + 1)], 0.0, "job")
    effects = core.take(0.0)
    assert sum(1 for n in range(64) if sent(effects, f"node{n}".encode(), p.Welcome)) == 64
    for turn in range(master_core.HELLO_BURST + 3):  # one id saying Hello again and again
        core.frame(f"cycle{turn}".encode(), [hello("node0", pid=100 + turn)], 100.0 + turn, "job")
    assert core.refusals["hello rate"] == 3
    core.check()
