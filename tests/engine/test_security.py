"""The master with CurveZMQ and an allowlist, against scripted peers with and without keys:
handshakes, keys bound to controller ids, admin status, revocation, join tokens, and
enrolled controllers that misbehave."""

from __future__ import annotations

import base64
import logging
import time
from pathlib import Path
from typing import Any

import attrs
import pytest
import zmq

from cyclone_core import keys
from cyclone_core.builtins.generators import BenchmarkGenerator
from cyclone_core.engine import protocol as p
from cyclone_core.model import Result, Status
from cyclone_core.testing import wait_until


@attrs.define
class Keys:
    """A master's key directory, and a way to make client keypairs it admits."""

    dir: Path
    master: keys.Keypair

    def client(self, name: str, *, ids: str = "*", admin: bool = False, group: bool = False) -> keys.Keypair:
        pair = keys.generate()
        with keys.Allowlist.edit(self.dir / keys.ALLOWLIST_FILE) as allowlist:
            allowlist.add(keys.Grant(name=name, key=pair.public, ids=ids, admin=admin, group=group))
        return pair

    def curve(self, pair: keys.Keypair) -> tuple[str, str, str]:
        return (self.master.public, pair.public, pair.secret)


@pytest.fixture
def master_keys(tmp_path: Path) -> Keys:
    directory = tmp_path / "master-keys"
    pair = keys.generate()
    keys.write_keypair(directory, keys.MASTER_NAME, pair)
    keys.Allowlist(directory / keys.ALLOWLIST_FILE).save()
    return Keys(directory, pair)


@pytest.fixture
def secure_master(start_master: Any, master_keys: Keys) -> Any:
    def start(count: int = 20, sinks: Any = (), **settings: Any) -> Any:
        return start_master(
            BenchmarkGenerator(count=count), sinks, insecure=False, keys=str(master_keys.dir), **settings
        )

    return start


def ok(task: p.TaskEnvelope) -> Result:
    return Result(task.id, task.type, Status.OK, attempt=task.attempt)


def status_of(peer: Any) -> dict[str, Any]:
    peer.send(p.StatusRequest())
    return peer.expect(p.StatusReply).snapshot


def silent(peer: Any, timeout: float = 1.0) -> bool:
    """Whether ``peer`` hears nothing but pings for ``timeout`` seconds (a failed handshake)."""
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        if not peer.sock.poll(int(left * 1000) + 1):
            return True
        if not isinstance(p.decode(peer.sock.recv()), p.Ping):
            return False
    return True


def test_strangers_without_an_admitted_key_complete_no_handshake(secure_master, master_keys, peer, caplog) -> None:
    running = secure_master()
    admin = peer(running.endpoint, curve=master_keys.curve(master_keys.master))  # the master's own key
    plain = peer(running.endpoint)  # no key at all
    plain.send(p.StatusRequest())
    unknown = peer(running.endpoint, curve=master_keys.curve(keys.generate()))  # a key nobody admitted
    with caplog.at_level(logging.WARNING, logger="cyclone.master"):
        unknown.send(p.StatusRequest())
        wait_until(lambda: status_of(admin)["refusals"].get("unknown key"), what="the refused handshake counted")
        assert silent(plain)
        assert silent(unknown)
    lines = [r.getMessage() for r in caplog.records if "unknown key" in r.getMessage()]
    assert len(lines) == 1, lines
    assert master_keys.master.public not in lines[0]
    assert status_of(admin)["secure"] is True


def test_a_key_speaks_only_for_the_controller_ids_it_was_admitted_for(secure_master, master_keys, peer) -> None:
    running = secure_master()
    node = master_keys.client("nodes", ids="node*")
    c = peer(running.endpoint, identity=b"head", curve=master_keys.curve(node))
    c.send(p.Hello(controller_id="head", host="h", pid=1, workers=1, credit=1, task_types=["noop"]))
    assert c.expect(p.Refuse).reason == "key 'nodes' may not use controller id 'head'"
    ok_peer = peer(running.endpoint, curve=master_keys.curve(node))
    assert ok_peer.hello("node01", credit=2).run_id


def test_status_needs_an_admin_key(secure_master, master_keys, peer) -> None:
    running = secure_master()
    plain_key = master_keys.client("worker")
    refused = peer(running.endpoint, curve=master_keys.curve(plain_key))
    refused.send(p.StatusRequest())
    assert refused.expect(p.Refuse).reason == "status needs a key with the admin role"
    admin = peer(running.endpoint, curve=master_keys.curve(master_keys.client("ops", admin=True)))
    assert "controllers" in status_of(admin)


def test_a_copied_controller_id_cannot_take_over_a_live_controller(secure_master, master_keys, peer) -> None:
    running = secure_master()
    honest = peer(running.endpoint, curve=master_keys.curve(master_keys.client("honest")))
    honest.hello("c1", credit=4)
    tasks = honest.expect(p.Dispatch).tasks
    thief = peer(running.endpoint, identity=b"c1-thief", curve=master_keys.curve(master_keys.client("thief")))
    # The same id, host and pid as the honest one (all in a status reply): another key.
    thief.send(p.Hello(controller_id="c1", host="testhost", pid=4242, workers=2, credit=4, task_types=["noop"]))
    assert thief.expect(p.Refuse).reason == "controller id 'c1' is in use under another key"
    honest.send(p.Results([ok(t) for t in tasks], credit=0))
    assert sorted(honest.expect(p.Ack).task_ids) == sorted(t.id for t in tasks)


def test_a_revoked_controller_is_cut_off_and_its_tasks_go_elsewhere(secure_master, master_keys, peer, sink) -> None:
    running = secure_master(count=6, sinks=[sink])
    admin = peer(running.endpoint, curve=master_keys.curve(master_keys.master))
    doomed = peer(running.endpoint, curve=master_keys.curve(master_keys.client("doomed")))
    doomed.hello("doomed", credit=6)
    held = doomed.expect(p.Dispatch).tasks
    assert len(held) == 6
    with keys.Allowlist.edit(master_keys.dir / keys.ALLOWLIST_FILE) as allowlist:
        allowlist.remove("doomed")
    assert doomed.expect(p.Refuse, timeout=10).reason == "this controller's key was revoked"
    # Whatever it still sends is dropped: its key is no longer admitted.
    doomed.send(p.Results([ok(t) for t in held], credit=0))
    good = peer(running.endpoint, curve=master_keys.curve(master_keys.client("good")))
    good.hello("good", credit=6)
    again = good.expect(p.Dispatch).tasks
    assert sorted(t.id for t in again) == sorted(t.id for t in held)
    good.send(p.Results([ok(t) for t in again], credit=0))
    good.expect(p.Ack)
    assert running.join() == 0
    assert {r.controller for r in sink.results} == {"good"}
    assert all(r.status is Status.OK for r in sink.results)
    snap = status_of(admin) if running.thread.is_alive() else None
    assert snap is None or snap["quarantined"] == 0


def test_a_join_token_enrolls_a_new_key_once(secure_master, master_keys, peer) -> None:
    running = secure_master()
    token = keys.issue_token(master_keys.dir, master_keys.master.public, ttl=600, ids="new*", now=time.time())
    master_public, secret = keys.parse_token(token)
    assert master_public == master_keys.master.public
    text = base64.urlsafe_b64encode(secret).decode().rstrip("=")
    newcomer = keys.generate()
    # The master re-reads its tokens once a second: wait until it lets unknown keys enroll.
    first = wait_until(
        lambda: (c := peer(running.endpoint, curve=master_keys.curve(newcomer))) and not silent_send(c, text) and c,
        timeout=10,
        what="an enrolling connection answered",
    )
    enrolled = first.expect(p.Enrolled)
    assert enrolled.ids == "new*"
    # A new connection with the now admitted key registers; the token is used up.
    again = peer(running.endpoint, curve=master_keys.curve(newcomer))
    assert again.hello("new01").run_id
    other = keys.generate()
    second = peer(running.endpoint, curve=master_keys.curve(other))
    second.send(p.Enroll(text))
    assert silent(second, 2.0)  # no open token any more: the unknown key completes no handshake


def silent_send(c: Any, secret: str) -> bool:
    c.send(p.Enroll(secret))
    return not c.sock.poll(1000)


def test_an_enrolling_key_may_send_nothing_but_enroll(secure_master, master_keys, peer) -> None:
    running = secure_master()
    keys.issue_token(master_keys.dir, master_keys.master.public, ttl=600, now=time.time())
    admin = peer(running.endpoint, curve=master_keys.curve(master_keys.master))
    stranger = keys.generate()

    def refused_hello() -> bool:
        c = peer(running.endpoint, curve=master_keys.curve(stranger))
        c.send(p.Hello(controller_id="s1", host="h", pid=1, workers=1, credit=9, task_types=["noop"]))
        c.send(p.Enroll("AAAAAAAAAAAAAAAAAAAAAA"))  # a secret of no token
        return bool(status_of(admin)["refusals"].get("not enrolled"))

    wait_until(refused_hello, timeout=10, what="a Hello from an enrolling key refused")
    assert not status_of(admin)["controllers"]


def test_a_misbehaving_enrolled_controller_changes_no_other_controllers_tasks(
    secure_master, master_keys, peer, sink
) -> None:
    running = secure_master(count=40, sinks=[sink], max_credit=8, hellos_per_minute=6.0, window=40)
    admin = peer(running.endpoint, curve=master_keys.curve(master_keys.master))
    honest = peer(running.endpoint, curve=master_keys.curve(master_keys.client("honest")))
    honest.hello("honest", credit=4)
    mine = honest.expect(p.Dispatch).tasks
    rogue_key = master_keys.client("rogue")
    rogue = peer(running.endpoint, identity=b"rogue", curve=master_keys.curve(rogue_key))
    rogue.hello("rogue", credit=2**20)  # credit hoarding: capped at max_credit
    hoard = rogue.expect(p.Dispatch).tasks
    assert len(hoard) == 8
    # Forged results for the honest controller's tasks: refused.
    rogue.send(p.Results([Result(t.id, t.type, Status.FAILED, attempt=t.attempt) for t in mine], credit=0))
    rogue.expect(p.Ack)
    # A giant frame: nothing decoded from it changes anything (and it stays within the frame limit).
    rogue.send_raw(b"\x00" * (2 * 1024 * 1024))
    # Hello/Goodbye cycling: held back after a burst, and the tasks it abandons cost them nothing.
    for _ in range(12):
        rogue.send(p.Hello(controller_id="rogue", host="testhost", pid=4242, workers=1, credit=8, task_types=["noop"]))
        rogue.send(p.Goodbye())
    snap = wait_until(
        lambda: (s := status_of(admin))["refusals"].get("hello rate") and s,
        timeout=10,
        what="the cycling controller held back",
    )
    assert snap["refused"] == len(mine)
    honest.send(p.Results([ok(t) for t in mine], credit=40))
    honest.expect(p.Ack)
    done = {t.id for t in mine}
    while len(done) < 40:
        batch = honest.expect(p.Dispatch).tasks
        honest.send(p.Results([ok(t) for t in batch], credit=len(batch)))
        honest.expect(p.Ack)
        done |= {t.id for t in batch}
    assert running.join() == 0
    results = {r.task_id: r for r in sink.results}
    assert len(results) == 40
    assert all(r.status is Status.OK and r.controller == "honest" for r in results.values())


def test_two_keys_enrolled_for_the_same_ids_get_names_of_their_own(secure_master, master_keys, peer) -> None:
    running = secure_master()
    names = []
    for _ in range(2):
        token = keys.issue_token(master_keys.dir, master_keys.master.public, ttl=600, ids="rack1-*", now=time.time())
        text = base64.urlsafe_b64encode(keys.parse_token(token)[1]).decode().rstrip("=")
        newcomer = keys.generate()
        connection = wait_until(
            lambda k=newcomer, t=text: (
                (c := peer(running.endpoint, curve=master_keys.curve(k))) and not silent_send(c, t) and c
            ),
            timeout=10,
            what="an enrolling connection answered",
        )
        names.append(connection.expect(p.Enrolled).name)
    assert len(set(names)) == 2, names
    grants = keys.Allowlist.load(master_keys.dir / keys.ALLOWLIST_FILE).grants
    assert {g.name for g in grants} >= set(names)


def _rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def test_a_controller_that_never_reads_costs_the_master_bounded_memory(secure_master, master_keys, peer, sink) -> None:
    """A slow reader is cut off, not buffered: the master queues at most 1,000 messages to a
    peer, whatever that peer makes it answer."""
    running = secure_master(count=20, sinks=[sink])
    deaf_key = master_keys.client("deaf")
    deaf = peer(running.endpoint, curve=master_keys.curve(deaf_key))
    deaf.sock.setsockopt(zmq.RCVHWM, 1)
    deaf.sock.setsockopt(zmq.RCVBUF, 4096)
    deaf.sock.setsockopt(zmq.SNDHWM, 10)  # this test process's own queue stays small
    deaf.hello("deaf", credit=0)
    before = _rss_mib()
    # Each of these makes the master answer with an Ack of 4,096 ids (about 70 KB): 1,000 of
    # them would queue 70 MB for this one peer if nothing bounded it (and, acknowledged in one
    # turn of the master's loop as one Ack, several hundred MB).
    ids = [f"nosuchrun-{n}" for n in range(4096)]
    forged = p.Results([Result(i, "noop", Status.OK) for i in ids], credit=0)
    frame = p.encode(forged)
    for _ in range(1000):
        deaf.sock.send(frame)
    honest = peer(running.endpoint, curve=master_keys.curve(master_keys.client("honest")))
    honest.hello("honest", credit=20)
    tasks = honest.expect(p.Dispatch, timeout=60).tasks
    honest.send(p.Results([ok(t) for t in tasks], credit=0))
    honest.expect(p.Ack, timeout=60)
    grown = _rss_mib() - before
    print(f"\nmaster process grew by {grown:.1f} MiB while a peer did not read its answers")
    assert running.join(60) == 0
    assert len(sink.results) == 20
    assert grown < 40, f"{grown:.0f} MiB"
