"""``cyclone controllers start|stop|status`` over real ssh, on the nodes of a virtual cluster,
with a real master on the head node; and the gathering of answers, without ssh."""

from __future__ import annotations

import re
import subprocess
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from cluster_support import CYCLONE, ClusterSetup, cyclone_env
from engine_support import read_probe

from cyclone_core import fleet
from cyclone_core.testing import wait_until


@pytest.fixture
def cluster(setup: ClusterSetup) -> Iterator[ClusterSetup]:
    """The set-up; whatever a test leaves running on the hosts is killed after it."""
    yield setup
    setup.cluster.kill_strays()


def controllers(setup: ClusterSetup, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``cyclone controllers ARGS`` on the head node."""
    return setup.cluster.run("head", CYCLONE, "controllers", *args, check=False, timeout=timeout, env=setup.env())


def block(nodes: str, count: int, message: str) -> str:
    """A ``clush -b`` block."""
    header = f"{nodes} ({count})"
    line = "-" * max(15, len(header))
    return f"{line}\n{header}\n{line}\n{message}"


def pids(lines_output: str) -> dict[str, int]:
    return {m[1]: int(m[2]) for m in re.finditer(r"^(\S+): \w[^(\n]*\(pid (\d+)\)$", lines_output, re.M)}


def test_controllers_started_over_ssh_run_a_job_and_are_drained(cluster: ClusterSetup, tmp_path: Path) -> None:
    config = cluster.controller_config()
    started = controllers(cluster, "start", "-w", "@nodes", "--master", cluster.master_endpoint,
                          "--", "--config", str(config), "--stay")  # fmt: skip
    assert started.returncode == 0, started.stdout + started.stderr
    assert started.stdout.strip() == block("node[1-3]", 3, "started")

    again = controllers(cluster, "start", "-w", "node[1-3]", "--master", cluster.master_endpoint, "-L")
    assert again.returncode == 0, again.stderr
    running = pids(again.stdout)
    assert sorted(running) == ["node1", "node2", "node3"], again.stdout
    assert "already running" in again.stdout

    master_config, out = cluster.master_config(tmp_path, count=300, seconds=0.01)
    master = cluster.cluster.spawn("head", [CYCLONE, "master", "--config", str(master_config)],
                                   tmp_path / "master.log", env=cyclone_env())  # fmt: skip
    assert master.wait(90) == 0, (tmp_path / "master.log").read_text()
    delivered = read_probe(out)
    assert len(delivered) == 300  # nothing delivered twice
    assert Counter(r["key"] for r in delivered) == Counter(str(i) for i in range(300))
    assert {int(r["controller"].rsplit("-", 1)[1]) for r in delivered} == set(running.values())

    status = controllers(cluster, "status", "-w", "node[1-3]")
    assert (status.returncode, status.stdout.strip()) == (0, block("node[1-3]", 3, "running")), status.stderr
    status_lines = controllers(cluster, "status", "-w", "node[1-3]", "--lines")
    assert pids(status_lines.stdout) == running

    stopped = controllers(cluster, "stop", "-w", "node[1-3]")
    assert (stopped.returncode, stopped.stdout.strip()) == (0, block("node[1-3]", 3, "stopped")), stopped.stderr
    for node in running:
        log = (cluster.directory / "run" / f"controller-{node}.log").read_text()
        assert "draining" in log.lower() or "goodbye" in log.lower(), log
    gone = controllers(cluster, "status", "-w", "node[1-3]")
    assert gone.returncode == 1
    assert gone.stdout.strip() == block("node[1-3]", 3, "not running")
    assert gone.stderr.strip() == "error: 3 nodes of 3 failed: node[1-3]"


def test_a_node_whose_sshd_is_down_is_reported_failed_by_name(cluster: ClusterSetup) -> None:
    cluster.cluster.stop_sshd("node2")
    try:
        started = controllers(cluster, "start", "-w", "node[1-3]", "--master", cluster.master_endpoint,
                              "--", "--config", str(cluster.controller_config()), "--stay")  # fmt: skip
        assert started.returncode == 1
        assert block("node[1,3]", 2, "started") in started.stdout
        assert re.search(r"^node2 \(1\)\n-+\n.*(refused|closed|reset|port 22)", started.stdout, re.M), started.stdout
        assert started.stderr.strip() == "error: 1 node of 3 failed: node2"

        stopped = controllers(cluster, "stop", "-w", "node[1-3]", "-L")
        assert stopped.returncode == 1
        assert re.search(r"^node1: stopped \(pid \d+\)$", stopped.stdout, re.M), stopped.stdout
        assert re.search(r"^node3: stopped \(pid \d+\)$", stopped.stdout, re.M), stopped.stdout
        assert re.search(r"^node2: .*(refused|closed|reset|port 22)", stopped.stdout, re.M), stopped.stdout
        assert "node2" in stopped.stderr
    finally:
        cluster.cluster.start_sshd("node2")
        wait_until(lambda: cluster.cluster.ssh_works("node2"), 30, "sshd on node2 again")


def test_an_unknown_group_or_bad_node_set_is_one_line(cluster: ClusterSetup) -> None:
    for nodes, expected in (("@nosuch", "names no node"), ("node[1-", "not a node set")):
        result = controllers(cluster, "status", "-w", nodes)
        assert result.returncode == 2
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert expected in result.stderr


# -- gathering, without ssh ---------------------------------------------------------------------


def test_answers_with_the_same_message_fold_into_one_block_like_clush_b() -> None:
    results = {
        node: fleet.parse_output(node, code, out, err, 10)
        for node, code, out, err in (
            ("node01", 0, "running\npid 11\n", ""),
            ("node02", 0, "running\npid 12\n", ""),
            ("node03", 3, "not running\n", ""),
            ("node04", 0, "running\npid 14\n", ""),
            ("node05", 255, "", "ssh: connect to host node05 port 22: Connection refused\n"),
            ("node06", None, "", ""),
        )
    }
    assert fleet.fold(results) == [
        ("node[01-02,04]", "running"),
        ("node03", "not running"),
        ("node05", "ssh: connect to host node05 port 22: Connection refused"),
        ("node06", "timed out after 10 s"),
    ]
    assert fleet.render_folded(results).splitlines()[:4] == ["-" * 18, "node[01-02,04] (3)", "-" * 18, "running"]
    assert fleet.render_lines(results).splitlines()[:3] == [
        "node01: running (pid 11)",
        "node02: running (pid 12)",
        "node03: not running",
    ]
    assert fleet.failed_nodes(results) == "3 nodes of 6 failed: node[03,05-06]"
    assert fleet.failed_nodes({"node01": results["node01"]}) == ""
