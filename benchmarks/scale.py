"""A real ``cyclone master`` against thousands of simulated controllers.

Each simulated controller is one DEALER socket speaking the real protocol
(:mod:`cyclone_core.engine.protocol`) over TCP on loopback, with CurveZMQ on: a keypair of its
own, admitted by the master's allowlist (one grant per controller, as a node with its own key
has), the master's key pinned.  A few processes hold them (``--procs``, 4 by default: 250 or
2,500 sockets each); the protocol allows one connection per controller id.  A simulated
controller has no workers: it answers each Dispatch at once with a successful result per task
and grants the same credit again, so the master's side is what is measured.

For the one-controller baseline and then each count (1,000 and 10,000 by default) a fresh
master is started and the script prints:

- how long all controllers take to register (first Hello sent to last Welcome received);
- the master's CPU (% of one core, from ``/proc/<pid>/task/*/stat``) while they only heartbeat:
  in all, and split between its loop, ZeroMQ's I/O thread and its other threads;
- ``cyclone status``'s reply: its size and how long it takes (the master's own admin key);
- dispatch throughput (tasks dispatched per second over ``--dispatch`` seconds, each
  controller granting ``--credit`` credit and granting it again as it answers) and its
  fairness (tasks per controller: min / median / max), and the ratio to the one-controller
  figure of the same run (target >= 0.8x), with the CPU the master and the simulating
  processes used meanwhile (on a small machine the simulators, not the master, can be the
  limit: then the master's CPU stays well below a core);
- the master's memory per controller: its RSS with them registered less its RSS before any
  connected, divided by their number.

File descriptors: each connection is a descriptor in the master and two (the TCP socket and
the socket's mailbox) in a simulating process.  The script raises its own ``RLIMIT_NOFILE``
and the master's to ``--nofile`` (root may raise the hard limit; others get at most theirs):
10,000 controllers need ``ulimit -n`` above 10,100 for the master.

Usage: ``python benchmarks/scale.py [--counts 1000,10000] [--procs 4] [--heartbeat 20] [--dispatch 15]``
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import os
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import msgpack
import zmq
from cpu_time import cpu_seconds, thread_cpu_seconds

from cyclone_core import keys
from cyclone_core.engine import protocol

_DISPATCH = protocol.Dispatch.tag


def raise_nofile(wanted: int) -> int:
    """Raise this process's descriptor limit towards ``wanted``; returns the soft limit now."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    for limit in ((wanted, max(hard, wanted)), (min(wanted, hard), hard)):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, limit)
            break
        except (ValueError, OSError):
            continue
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- the simulating processes ----------------------------------------------------------------


class Simulated:
    """One simulated controller: its socket and what it has done."""

    __slots__ = ("credit", "dispatched", "hb_at", "id", "sock", "welcomed")

    def __init__(self, cid: str, sock: zmq.Socket[bytes], credit: int) -> None:
        self.id = cid
        self.sock = sock
        self.credit = credit
        self.welcomed = 0.0
        self.dispatched = 0
        self.hb_at = 0.0


def simulate(
    first: int, count: int, endpoint: str, master_key: str, pairs: list[tuple[str, str]], credit: int, pipe: Connection
) -> None:
    """Run controllers ``first`` .. ``first + count - 1`` until the parent says ``stop``.

    Messages from the parent: ``go`` (grant credit and answer dispatches), ``count`` (the
    tasks each controller was dispatched so far), ``hold`` (the same, and answer no more),
    ``stop``.  To the parent: ``registered`` (seconds from the first Hello to the last
    Welcome), and the counts."""
    raise_nofile(1 << 20)  # as many as allowed: each socket takes several descriptors
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    context.set(zmq.MAX_SOCKETS, 2 * count + 256)
    hello = protocol.Hello(
        controller_id="x", host=socket.gethostname(), pid=os.getpid(), workers=8, credit=0, task_types=["noop"]
    )
    heartbeat = protocol.encode(protocol.Heartbeat(running=[]))
    sims: dict[zmq.Socket[bytes], Simulated] = {}
    poller = zmq.Poller()
    started = time.monotonic()
    for index in range(first, first + count):
        sock = context.socket(zmq.DEALER)
        cid = f"sim-{index}"
        sock.setsockopt(zmq.ROUTING_ID, f"{cid}.1".encode())
        sock.setsockopt(zmq.LINGER, 0)
        public, secret = pairs[index]
        sock.curve_serverkey = master_key.encode("ascii")
        sock.curve_publickey = public.encode("ascii")
        sock.curve_secretkey = secret.encode("ascii")
        sock.connect(endpoint)
        sock.send(protocol.encode(_evolve(hello, controller_id=cid)))
        sims[sock] = Simulated(cid, sock, credit)
        poller.register(sock, zmq.POLLIN)
    poller.register(pipe.fileno(), zmq.POLLIN)
    welcomed = 0
    interval = 2.0
    answering = False
    reported = False
    hello_at = time.monotonic() + 10.0
    while True:
        now = time.monotonic()
        for item, _ in poller.poll(100):
            if item == pipe.fileno():
                order = pipe.recv()
                if order == "go":
                    answering = True
                    for sim in sims.values():
                        sim.sock.send(protocol.encode_results([], sim.credit))
                elif order in ("count", "hold"):
                    answering = order == "count"
                    pipe.send({sim.id: sim.dispatched for sim in sims.values()})
                elif order == "stop":
                    for sock in sims:
                        sock.close(0)
                    context.term()
                    return
                continue
            assert not isinstance(item, int)
            sim = sims[item]
            while True:
                try:
                    frame = item.recv(zmq.NOBLOCK)
                except zmq.Again:
                    break
                data = msgpack.unpackb(frame)
                if data.get("t") == _DISPATCH:  # the hot path: the rows as they are
                    if answering:
                        tasks = data["tasks"]
                        sim.dispatched += len(tasks)
                        stamp = time.time()
                        # [task id, type, status, key, attempt, started at, duration, error,
                        # metrics, payload, controller, history]: protocol.result_to_row's row.
                        rows = [[t[0], t[1], "ok", t[5], t[3], stamp, 0.0, None, [], None, sim.id, []] for t in tasks]
                        item.send(protocol.encode_results(rows, len(rows)))
                    continue
                message = protocol.decode(frame)
                if isinstance(message, protocol.Welcome) and not sim.welcomed:
                    sim.welcomed = time.monotonic()
                    interval = message.heartbeat_interval
                    sim.hb_at = sim.welcomed + interval * (hash(sim.id) % 1000) / 1000  # spread out
                    welcomed += 1
                elif isinstance(message, protocol.Shutdown):
                    item.send(protocol.encode(protocol.Goodbye(reason="shutdown")))
                elif isinstance(message, protocol.Rehello):
                    item.send(protocol.encode(_evolve(hello, controller_id=sim.id)))
        if now >= hello_at:  # as a controller does: a Hello not answered is sent again
            hello_at = now + 10.0
            for sim in sims.values():
                if not sim.welcomed:
                    sim.sock.send(protocol.encode(_evolve(hello, controller_id=sim.id)))
        if welcomed == len(sims) and not reported:
            reported = True
            pipe.send(("registered", max(s.welcomed for s in sims.values()) - started))
        for sim in sims.values():
            if sim.welcomed and now >= sim.hb_at:
                sim.hb_at = now + interval
                sim.sock.send(heartbeat)


def _evolve(hello: protocol.Hello, **changes: Any) -> protocol.Hello:
    import attrs  # noqa: PLC0415

    return attrs.evolve(hello, **changes)


# -- the master and the measurements ---------------------------------------------------------


def make_keys(workdir: Path, count: int) -> tuple[Path, str, list[tuple[str, str]]]:
    """The master's key directory, its public key, and ``count`` controller keypairs it admits."""
    master = workdir / "master-keys"
    subprocess.run(["cyclone", "keys", "init", "--dir", str(master)], check=True, capture_output=True)
    pairs = []
    with keys.Allowlist.edit(master / keys.ALLOWLIST_FILE) as allowlist:
        for index in range(count):
            pair = keys.generate()
            pairs.append((pair.public, pair.secret))
            allowlist.add(keys.Grant(name=f"sim-{index}", key=pair.public, ids=f"sim-{index}"))
    return master, keys.load_keypair(master / f"{keys.MASTER_NAME}.secret").public, pairs


def status_request(endpoint: str, master_dir: Path) -> tuple[int, float]:
    """Size (bytes) and time (s) of one status reply, asked with the master's own admin key."""
    pair = keys.load_keypair(master_dir / f"{keys.MASTER_NAME}.secret")
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    sock = context.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.curve_serverkey = pair.public.encode("ascii")
    sock.curve_publickey = pair.public.encode("ascii")
    sock.curve_secretkey = pair.secret.encode("ascii")
    try:
        sock.connect(endpoint)
        started = time.monotonic()
        sock.send(protocol.encode(protocol.StatusRequest()))
        while sock.poll(60_000):
            frame = sock.recv()
            if isinstance(protocol.decode(frame), protocol.StatusReply):
                return len(frame), time.monotonic() - started
        raise SystemExit("no status reply within 60 s")
    finally:
        sock.close(0)
        context.term()


def wait_for(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.05)


def measure(
    workdir: Path,
    master_dir: Path,
    master_key: str,
    pairs: list[tuple[str, str]],
    count: int,
    credit: int,
    options: Any,
) -> dict[str, Any]:
    """Start a master, bring ``count`` simulated controllers granting ``credit`` each, and measure."""
    port = free_port()
    endpoint = f"tcp://127.0.0.1:{port}"
    config = workdir / f"master-{count}-{credit}.toml"
    config.write_text(
        f'[master]\nbind = "{endpoint}"\nkeys = "{master_dir}"\njournal = "{workdir}/journal-{count}-{credit}.sqlite"\n'
        f"heartbeat_interval = {options.heartbeat_interval}\ncontroller_timeout = {options.controller_timeout}\n"
        f'[generator]\nname = "benchmark"\noptions = {{ count = 1000000000 }}\n'
        f'[sinks.sqlite]\npath = "{workdir}/results-{count}-{credit}.sqlite"\n'
    )
    log = (workdir / f"master-{count}-{credit}.log").open("wb")
    nofile = options.nofile
    master = subprocess.Popen(
        ["cyclone", "master", "--config", str(config)],
        stdout=log,
        stderr=subprocess.STDOUT,
        preexec_fn=lambda: raise_nofile(nofile),  # noqa: PLW1509  (the limit is set before exec)
    )
    procs: list[multiprocessing.process.BaseProcess] = []
    pipes: list[Connection] = []
    try:
        wait_for(lambda: _answers(endpoint, master_dir), 60, "the master")
        limit = int(Path(f"/proc/{master.pid}/limits").read_text().split("Max open files")[1].split()[0])
        rss_before = rss_kib(master.pid)
        per_proc = -(-count // options.procs)
        context = multiprocessing.get_context("spawn")
        for first in range(0, count, per_proc):
            ours, theirs = context.Pipe()
            process = context.Process(
                target=simulate,
                args=(first, min(per_proc, count - first), endpoint, master_key, pairs, credit, theirs),
                daemon=True,
            )
            process.start()
            procs.append(process)
            pipes.append(ours)
        registered = [pipe.recv() for pipe in pipes]  # blocks until each process has all welcomed
        register_s = max(seconds for _, seconds in registered)
        time.sleep(1.0)  # the last Welcomes' first heartbeats
        cpu0, at0 = thread_cpu_seconds(master.pid), time.monotonic()
        time.sleep(options.heartbeat)
        cpu_end, elapsed = thread_cpu_seconds(master.pid), time.monotonic() - at0
        idle_split = {role: (cpu_end[role] - cpu0[role]) / elapsed for role in cpu0}
        rss_registered = rss_kib(master.pid)
        replies = [status_request(endpoint, master_dir) for _ in range(3)]
        for pipe in pipes:
            pipe.send("go")
        time.sleep(2.0)  # reach the steady state
        for pipe in pipes:
            pipe.send("count")
        before = _merge(pipe.recv() for pipe in pipes)
        cpu1, at1 = cpu_seconds(master.pid), time.monotonic()
        sims1 = sum(cpu_seconds(process.pid) for process in procs if process.pid)
        time.sleep(options.dispatch)
        for pipe in pipes:
            pipe.send("hold")
        after = _merge(pipe.recv() for pipe in pipes)
        elapsed = time.monotonic() - at1
        busy_cpu = (cpu_seconds(master.pid) - cpu1) / elapsed
        sims_cpu = (sum(cpu_seconds(process.pid) for process in procs if process.pid) - sims1) / elapsed
        per_controller = sorted(after[cid] - before.get(cid, 0) for cid in after)
        return {
            "controllers": count,
            "register_s": register_s,
            "idle_cpu": sum(idle_split.values()),
            "idle_split": idle_split,
            "status_bytes": replies[-1][0],
            "status_s": sorted(seconds for _, seconds in replies)[1],
            "tasks_per_s": sum(per_controller) / elapsed,
            "busy_cpu": busy_cpu,
            "simulators_cpu": sims_cpu,
            "fairness": (per_controller[0], statistics.median(per_controller), per_controller[-1]),
            "kib_per_controller": (rss_registered - rss_before) / count,
            "master_nofile": limit,
        }
    finally:
        for pipe in pipes:
            with contextlib.suppress(OSError):
                pipe.send("stop")
        master.send_signal(signal.SIGTERM)
        try:
            master.wait(60)
        except subprocess.TimeoutExpired:
            master.kill()
            master.wait()
        for process in procs:
            process.join(10)
            if process.exitcode is None:
                process.kill()
        log.close()


def _answers(endpoint: str, master_dir: Path) -> bool:
    try:
        status_request(endpoint, master_dir)
    except SystemExit:
        return False
    return True


def _merge(parts: Any) -> dict[str, int]:
    merged: dict[str, int] = {}
    for part in parts:
        merged.update(part)
    return merged


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--counts", default="1000,10000", help="controller counts, comma-separated")
    parser.add_argument("--procs", type=int, default=4, help="simulating processes")
    parser.add_argument("--heartbeat", type=float, default=20.0, help="seconds of heartbeats only")
    parser.add_argument("--dispatch", type=float, default=15.0, help="seconds of dispatching")
    parser.add_argument("--heartbeat-interval", type=float, default=2.0, help="the master's heartbeat_interval")
    parser.add_argument("--controller-timeout", type=float, default=20.0, help="the master's controller_timeout")
    parser.add_argument("--credit", type=int, default=32, help="credit each controller grants (as 16 workers would)")
    parser.add_argument("--nofile", type=int, default=65536, help="RLIMIT_NOFILE for the master and this script")
    parser.add_argument("--json", action="store_true", help="also print each measurement as JSON")
    options = parser.parse_args()
    counts = [int(n) for n in options.counts.split(",")]
    mine = raise_nofile(options.nofile)
    print(f"RLIMIT_NOFILE: {mine} here (wanted {options.nofile})", flush=True)
    workdir = Path(tempfile.mkdtemp(prefix="cyclone-bench-scale-"))
    try:
        master_dir, master_key, pairs = make_keys(workdir, max(counts))
        # The one-controller figure: the better of a controller like the others and of one
        # granting as much credit as all of them (the master's best with a single peer).
        base = 0.0
        for count, credit in [(1, options.credit), (1, options.credit * 32), *((n, options.credit) for n in counts)]:
            figures = measure(workdir, master_dir, master_key, pairs, count, credit, options)
            if count == 1:
                base = max(base, figures["tasks_per_s"])
            low, median, high = figures["fairness"]
            print(
                f"{count:>6,} controllers granting {credit:,}: registered in {figures['register_s']:.1f} s; master CPU "
                f"{figures['idle_cpu']:.1%} of a core while they heartbeat ("
                + ", ".join(f"{role} {share:.1%}" for role, share in figures["idle_split"].items())
                + "); status reply "
                f"{figures['status_bytes'] / 1024:,.1f} KiB in {figures['status_s'] * 1000:.0f} ms; "
                f"{figures['tasks_per_s']:,.0f} tasks/s ({figures['tasks_per_s'] / base:.2f}x one controller; "
                f"master CPU {figures['busy_cpu']:.0%}, simulating processes {figures['simulators_cpu']:.0%}), "
                f"tasks per controller min/median/max "
                f"{low:,}/{median:,.0f}/{high:,}; {figures['kib_per_controller']:.1f} KiB of master RSS per "
                f"controller (master RLIMIT_NOFILE {figures['master_nofile']:,})",
                flush=True,
            )
            if options.json:
                print(json.dumps(figures), flush=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
