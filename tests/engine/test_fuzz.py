"""Fuzzing a real ``cyclone master`` while a real ``cyclone controller`` runs a job: thousands of
random, mutated and well-formed-but-wrong frames from many connections, with CurveZMQ on as in
production: most connections use a key the master admits (an enrolled controller gone bad),
some a key it does not (they complete no handshake).  The master stays up, the job completes
with every result exactly once, and the master's memory stays bounded."""

from __future__ import annotations

import json
import random
import string
from collections import Counter
from pathlib import Path
from typing import Any

import zmq
from engine_support import FAST_CONTROLLER, FAST_MASTER, ClusterKeys, damage, hostile_value, toml

from cyclone_core import keys
from cyclone_core.engine import protocol as p
from cyclone_core.model import Result, Status
from cyclone_core.testing import free_port, wait_until

TASKS = 3000
FRAMES = 6000
CONNECTIONS = 60


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for pid {pid}")


def status(sock: zmq.Socket[bytes]) -> dict[str, Any]:
    sock.send(p.encode(p.StatusRequest()))
    while sock.poll(10_000):
        message = p.decode(sock.recv())
        if isinstance(message, p.StatusReply):
            return message.snapshot
    raise AssertionError("no status reply from the master")


def word(rng: random.Random, size: int = 8) -> str:
    return rng.choice(string.ascii_letters) + "".join(rng.choices(string.ascii_letters + string.digits + "-.", k=size))


def valid_message(rng: random.Random, run_id: str) -> p.Message:
    """A well-formed message a controller or client could send, with made-up contents."""
    task_id = f"{run_id}-{rng.randint(1, TASKS + 50)}" if rng.random() < 0.5 else word(rng)
    kind = rng.randrange(6)
    if kind == 0:
        # Mostly task types the master does not know; some that it does, with little credit,
        # so a few tasks go to connections that never answer and come back as lost.
        types = ["sleep"] if rng.random() < 0.2 else [word(rng)]
        return p.Hello(
            controller_id=word(rng),
            host=word(rng),
            pid=rng.randint(1, 4_000_000),
            workers=rng.randint(1, 64),
            credit=rng.randint(0, 2),
            task_types=types,
        )
    if kind == 1:
        status = rng.choice([Status.FAILED, Status.CRASHED, Status.TIMEOUT])
        return p.Results([Result(task_id, "sleep", status, attempt=rng.randint(1, 3))], credit=rng.randint(0, 5))
    if kind == 2:
        return p.Heartbeat(running=[task_id], draining=rng.random() < 0.5)
    if kind == 3:
        return p.Handback([task_id])
    if kind == 4:
        return p.Goodbye(word(rng))
    return p.StatusRequest()


def fuzz_frame(rng: random.Random, run_id: str) -> list[bytes]:
    roll = rng.random()
    if roll < 0.2:
        return [rng.randbytes(rng.randint(0, 200))]
    if roll < 0.25:
        return [p.encode(p.Ping()), rng.randbytes(4)]  # two frames
    frame = p.encode(valid_message(rng, run_id))
    if roll < 0.7:
        return [damage(frame, rng)]
    if roll < 0.75:
        import msgpack  # noqa: PLC0415

        return [msgpack.packb({"v": p.PROTOCOL_VERSION, "t": "hello", "x": hostile_value(rng)})]
    return [frame]


def test_a_fuzzed_master_keeps_running_and_its_job_completes_once(cyclone, tmp_path) -> None:
    rng = random.Random(20261129)
    port = free_port()
    out = tmp_path / "results.jsonl"
    endpoint = f"tcp://127.0.0.1:{port}"
    cluster = ClusterKeys.make(tmp_path / "keys")
    fuzzer = keys.generate()  # admitted for any controller id, as a careless grant would be
    with keys.Allowlist.edit(cluster.master_dir / keys.ALLOWLIST_FILE) as allowlist:
        allowlist.add(keys.Grant(name="fuzzer", key=fuzzer.public, ids="*"))
    master_public = cluster.curve()[0]
    path = tmp_path / "cyclone.toml"
    path.write_text(
        toml(
            {
                "master": {"bind": endpoint, "keys": str(cluster.master_dir), **FAST_MASTER},
                "controller": {
                    "master": endpoint,
                    "keys": str(cluster.controller_dir),
                    "workers": 2,
                    **FAST_CONTROLLER,
                },
                "generator": {
                    "name": "benchmark",
                    "options": {"count": TASKS, "task": "sleep", "args": {"seconds": 0.002}},
                },
                "sinks.jsonl": {"path": str(out)},
            }
        )
    )
    master = cyclone("master", "--config", str(path), name="master")
    controller = cyclone("controller", "--config", str(path), "--id", "honest", name="controller")
    with zmq.Context() as ctx:
        probe = ctx.socket(zmq.DEALER)
        probe.setsockopt(zmq.LINGER, 0)
        probe.curve_serverkey, probe.curve_publickey, probe.curve_secretkey = (k.encode() for k in cluster.curve())
        probe.connect(endpoint)

        def working() -> dict[str, Any] | None:
            snapshot = status(probe)
            return snapshot if snapshot["in_flight"] or snapshot["succeeded"] else None

        snapshot = wait_until(working, timeout=30, what="the honest controller at work")
        run_id = snapshot["run_id"]
        before = rss_kib(master.pid)
        sockets = []
        for n in range(CONNECTIONS):
            sock = ctx.socket(zmq.DEALER)
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.SNDHWM, 0)
            # Some routing ids are printable, some are binary, one copies the honest controller's.
            identity = b"honest" if n == 0 else rng.randbytes(8) if n % 2 else word(rng).encode()
            sock.setsockopt(zmq.ROUTING_ID, identity)
            pair = fuzzer if n % 10 else keys.generate()  # one in ten has a key nobody admitted
            sock.curve_serverkey, sock.curve_publickey, sock.curve_secretkey = (
                master_public.encode(),
                pair.public.encode(),
                pair.secret.encode(),
            )
            sock.connect(endpoint)
            sockets.append(sock)
        sent = 0
        for _ in range(FRAMES):
            sock = rng.choice(sockets[1:]) if rng.random() < 0.98 else sockets[0]
            try:  # a connection that failed its handshake has nowhere to send
                sock.send_multipart(fuzz_frame(rng, run_id), zmq.NOBLOCK)
                sent += 1
            except zmq.Again:
                pass
        for sock in sockets:  # read (and drop) what the master answered, so nothing backs up
            while sock.poll(0):
                sock.recv_multipart()
        alive = status(probe)
        after = rss_kib(master.pid)
        for sock in sockets:
            sock.close()
        probe.close()
    print(f"\nmaster RSS before fuzzing {before / 1024:.1f} MiB, after {sent} frames {after / 1024:.1f} MiB")
    assert sent > FRAMES // 2
    assert alive["protocol_errors"] > sent // 5
    assert alive["refusals"].get("unknown key"), alive["refusals"]
    assert after <= 2 * before, f"master memory grew from {before} KiB to {after} KiB"
    assert master.wait(120) == 0, master.output()
    assert controller.wait(60) == 0, controller.output()
    results = [json.loads(line) for line in out.read_text().splitlines()]
    ids = [r["task_id"] for r in results]
    assert len(ids) == len(set(ids)), "a result was delivered twice"
    assert {int(i.rsplit("-", 1)[1]) for i in ids} == set(range(1, TASKS + 1)), "a task has no result"
    statuses = Counter(r["status"] for r in results)
    print(f"results: {dict(statuses)}; {alive['protocol_errors']} frames refused as invalid")
    assert set(statuses) <= {"ok", "failed", "quarantined"}, statuses
