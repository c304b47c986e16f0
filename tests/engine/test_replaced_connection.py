"""A Hello that waited on a connection its controller has replaced gets no work: real sockets,
a real master, a scripted controller on two connections."""

from __future__ import annotations

from cyclone_core.builtins.generators import BenchmarkGenerator
from cyclone_core.engine import protocol as p
from cyclone_core.model import Result, Status
from cyclone_core.testing import wait_until


def test_a_stale_hello_on_the_old_connection_after_a_healed_partition_gets_nothing(start_master, peer, sink) -> None:
    running = start_master(BenchmarkGenerator(count=12), [sink])
    core = running.master.core
    assert core is not None
    live = peer(running.endpoint, identity=b"c1.2")
    live.hello("c1", credit=4)
    first = live.expect(p.Dispatch).tasks
    # The Hello the controller sent on its first connection before the partition arrives now.
    stale = peer(running.endpoint, identity=b"c1.1")
    stale.send(p.Hello(controller_id="c1", host="testhost", pid=4242, workers=2, credit=8, task_types=["noop"]))
    wait_until(lambda: core.refusals["replaced connection"] == 1, 10, "the master to turn the stale Hello away")
    done = []
    tasks = first
    while True:
        live.send(p.Results([Result(t.id, t.type, Status.OK, key=t.key, attempt=t.attempt) for t in tasks], len(tasks)))
        assert sorted(live.expect(p.Ack).task_ids) == sorted(t.id for t in tasks)
        done += [t.id for t in tasks]
        if len(done) == 12:
            break
        tasks = live.expect(p.Dispatch).tasks
    assert live.expect(p.Shutdown).reason == "all tasks are done"
    live.send(p.Goodbye())
    assert running.join() == 0
    assert sorted(sink.ids()) == sorted(done)
    assert not stale.sock.poll(0), "the replaced connection was sent something"
