"""Network faults between real hosts (network namespaces): a controller partitioned from its
master and healed, random packet loss, a throttled link and added latency during a run.  In
every case each task's result reaches the sink exactly once."""

from __future__ import annotations

import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cluster_support import ClusterSetup, Daemon, cyclone_env
from engine_support import FAST_CONTROLLER, FAST_MASTER, read_probe

from cyclone_core import keys
from cyclone_core.testing import wait_until

RELAY = Path(__file__).with_name("relay.py")
GHOST = Path(__file__).with_name("ghost.py")
#: The longer of the master's and the controllers' timeouts: a partition lasts twice this.
TIMEOUT = max(FAST_MASTER["controller_timeout"], FAST_CONTROLLER["master_timeout"])


@pytest.fixture
def cluster(setup: ClusterSetup) -> Iterator[ClusterSetup]:
    """The set-up; every process a test started on the hosts is killed after it, links healed."""
    yield setup
    setup.cluster.kill_strays()
    for node in setup.cluster.nodes:
        setup.cluster.heal(node)


def each_once(delivered: list[dict[str, Any]], count: int) -> None:
    """Every task's result delivered, none twice."""
    assert len(delivered) == count, f"{len(delivered)} results delivered for {count} tasks"
    assert Counter(r["key"] for r in delivered) == Counter(str(i) for i in range(count))


def test_a_partitioned_controller_loses_nothing_and_its_stale_results_are_refused(
    cluster: ClusterSetup, tmp_path: Path
) -> None:
    count = 1200  # enough work left after the heal for node1 to come back into the run
    master, out = cluster.start_master(tmp_path, count=count, seconds=0.05)
    controllers = {node: cluster.start_controller(node, tmp_path) for node in cluster.cluster.nodes}
    wait_until(lambda: sum(r["controller"] == "node1" for r in read_probe(out)) >= 10, 60, "results from node1")

    cluster.cluster.cut("node1")
    cut_at = time.monotonic()
    wait_until(lambda: "controller node1 lost" in master.output(), 30, "the master to declare node1 lost")
    # The partition lasts twice the timeouts: both sides have given up on each other.
    wait_until(lambda: time.monotonic() > cut_at + 2 * TIMEOUT, 30, "twice the timeouts")
    assert "node1" not in {c["id"] for c in cluster.status()["controllers"]}  # type: ignore[index]
    cluster.cluster.heal("node1")

    wait_until(lambda: "registered again" in controllers["node1"].output(), 30, "node1 to register again")
    # The results node1 finished while cut off belong to leases that ended: refused (or, for
    # tasks settled meanwhile, counted as duplicates), harmlessly.
    snapshot = wait_until(lambda: master.proc.poll() is not None or _stale(cluster), 60, "stale results refused")
    assert master.proc.wait(90) == 0, master.output()
    assert snapshot is not True, "the run ended before node1's stale results were counted"
    each_once(read_probe(out), count)
    assert "node1" in {r["controller"] for r in read_probe(out)}


def test_the_master_drops_a_connection_that_went_silent_so_the_same_routing_id_can_connect_again(
    cluster: ClusterSetup, tmp_path: Path
) -> None:
    """A DEALER reconnects under the routing id it had; the master turns a second connection
    under a routing id in use away, so the dead one must go (the kernel drops it)."""
    master, _ = cluster.start_master(tmp_path, count=10, seconds=60)
    wait_until(lambda: cluster.status() is not None, 30, "the master")
    go = tmp_path / "go"
    master_key = keys.load_keypair(cluster.keys.master_dir / "master.secret").public
    argv = [sys.executable, str(GHOST), cluster.master_endpoint, master_key, str(cluster.keys.controller_dir),
            "ghost.1", str(go)]  # fmt: skip
    ghost = Daemon(cluster.cluster.spawn("node1", argv, tmp_path / "ghost.log", cyclone_env()), tmp_path / "ghost.log")
    wait_until(lambda: "welcomed" in ghost.output(), 30, "the first Welcome")

    # Everything node1 receives dropped: its own side of the connection sees no error (a link
    # going down would tell both kernels), the master's data is never acknowledged.
    with cluster.cluster.fault("node1", ["iptables", "-A", "INPUT", "-j", "DROP"]):
        cut_at = time.monotonic()
        wait_until(lambda: "controller ghost lost" in master.output(), 30, "the master to declare ghost lost")
        wait_until(lambda: time.monotonic() > cut_at + 3 * TIMEOUT, 30, "three times the timeouts")
    go.touch()
    assert ghost.proc.wait(30) == 0, ghost.output()
    assert ghost.output().splitlines()[-1] == "welcomed again", ghost.output()
    master.proc.terminate()
    master.proc.wait(30)


def _stale(cluster: ClusterSetup) -> dict[str, Any] | None:
    """The master's snapshot once it has turned away a stale result."""
    snapshot = cluster.status()
    return snapshot if snapshot is not None and snapshot["refused"] + snapshot["duplicates"] > 0 else None


def test_loss_throttling_and_latency_during_a_run_lose_and_double_nothing(
    cluster: ClusterSetup, tmp_path: Path
) -> None:
    count = 600
    vc = cluster.cluster
    head = vc.head.address
    master, out = cluster.start_master(tmp_path, count=count, seconds=0.02)
    if vc.has_netem():
        delayed = cluster.start_controller("node1", tmp_path)
        delay = vc.fault("node1", ["tc", "qdisc", "add", "dev", "eth0", "root", "netem", "delay", "50ms"])
    else:  # a relay on node1 adds the latency on the controller's way to the master
        argv = [sys.executable, str(RELAY), "127.0.0.1:7000", f"{head}:5678", "--delay", "0.05"]
        relay = Daemon(vc.spawn("node1", argv, tmp_path / "relay.log"), tmp_path / "relay.log")
        wait_until(lambda: "listening on" in relay.output(), 30, "the relay")
        delayed = cluster.start_controller("node1", tmp_path, "--master", "tcp://127.0.0.1:7000")
        delay = vc.fault("node1")
    controllers = [delayed, cluster.start_controller("node2", tmp_path), cluster.start_controller("node3", tmp_path)]
    wait_until(lambda: {r["controller"] for r in read_probe(out)} >= set(vc.nodes), 60, "results from every node")

    loss = ["-m", "statistic", "--mode", "random", "--probability", "0.1", "-j", "DROP"]
    throttle = [
        "tc",
        "qdisc",
        "add",
        "dev",
        "eth0",
        "root",
        "tbf",
        "rate",
        "256kbit",
        "burst",
        "16kb",
        "latency",
        "200ms",
    ]
    with (
        delay,
        vc.fault("node2", ["iptables", "-A", "INPUT", *loss], ["iptables", "-A", "OUTPUT", *loss]),
        vc.fault("node3", throttle),
    ):
        assert master.proc.wait(120) == 0, master.output()
    each_once(read_probe(out), count)
    for controller in controllers:
        assert controller.proc.wait(30) == 0, controller.output()
