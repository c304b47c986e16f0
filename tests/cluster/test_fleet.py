"""``cyclone controllers start|stop|status`` over real ssh, on the nodes of a virtual cluster,
with a real master on the head node; and the gathering of answers, without ssh."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from cluster_support import CYCLONE, ClusterSetup, cyclone_env
from engine_support import read_probe

from cyclone_core import fleet
from cyclone_core.engine.pidfile import PidFile
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
    started = controllers(cluster, "start", "-w", "@nodes", "--master", cluster.master_endpoint,
                          "--", "--config", str(cluster.controller_config()), "--stay")  # fmt: skip
    assert started.returncode == 0, started.stdout + started.stderr
    assert started.stdout.strip() == block("node[1-3]", 3, "started")

    master_config, out = cluster.master_config(tmp_path, count=300, seconds=0.01)
    master = cluster.cluster.spawn("head", [CYCLONE, "master", "--config", str(master_config)],
                                   tmp_path / "master.log", env=cyclone_env())  # fmt: skip
    assert master.wait(90) == 0, (tmp_path / "master.log").read_text()
    delivered = read_probe(out)
    assert len(delivered) == 300  # nothing delivered twice
    assert Counter(r["key"] for r in delivered) == Counter(str(i) for i in range(300))

    status = controllers(cluster, "status", "-w", "node[1-3]", "--lines")
    assert status.returncode == 0, status.stdout + status.stderr
    running = pids(status.stdout)
    assert sorted(running) == ["node1", "node2", "node3"], status.stdout
    assert status.stdout.count(": running (pid") == 3, status.stdout
    # The controllers that ran the job are the ones the pid files name (ids are HOST-PID).
    assert {int(r["controller"].rsplit("-", 1)[1]) for r in delivered} == set(running.values())

    stopped = controllers(cluster, "stop", "-w", "node[1-3]")
    assert (stopped.returncode, stopped.stdout.strip()) == (0, block("node[1-3]", 3, "stopped")), stopped.stderr
    for node in running:
        log = (cluster.directory / "run" / f"controller-{node}.log").read_text()
        assert "draining" in log.lower(), log
    gone = controllers(cluster, "status", "-w", "node[1-3]")
    assert gone.returncode == 1
    assert gone.stdout.strip() == block("node[1-3]", 3, "not running")
    assert gone.stderr.strip() == "error: 3 nodes of 3 failed: node[1-3]"


def test_a_node_whose_sshd_is_down_is_reported_failed_by_name(cluster: ClusterSetup) -> None:
    start = ["start", "-w", "node[1-3]", "--master", cluster.master_endpoint]
    extra = ["--", "--config", str(cluster.controller_config()), "--stay"]
    cluster.cluster.stop_sshd("node2")
    try:
        started = controllers(cluster, *start, *extra)
        assert started.returncode == 1
        assert block("node[1,3]", 2, "started") in started.stdout
        assert re.search(r"^node2 \(1\)\n-+\n.*(refused|closed|reset|port 22)", started.stdout, re.M), started.stdout
        assert started.stderr.strip() == "error: 1 node of 3 failed: node2"

        again = controllers(cluster, *start, "--lines", *extra)  # harmless where a controller runs
        assert again.returncode == 1
        assert re.search(r"^node1: already running \(pid \d+\)$", again.stdout, re.M), again.stdout
        assert re.search(r"^node3: already running \(pid \d+\)$", again.stdout, re.M), again.stdout
        assert re.search(r"^node2: .*(refused|closed|reset|port 22)", again.stdout, re.M), again.stdout
        assert again.stderr.strip() == "error: 1 node of 3 failed: node2"
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


def test_the_status_script_tells_a_held_pid_file_from_a_stale_one(tmp_path: Path) -> None:
    def status() -> tuple[int, str]:
        script = fleet.status_script("n1", str(tmp_path))
        result = subprocess.run(script, shell=True, capture_output=True, text=True, check=False)
        return result.returncode, result.stdout

    assert status() == (fleet.NOT_RUNNING, "not running\n")
    pid_file = tmp_path / "controller-n1.pid"
    pid_file.write_text(f"{os.getpid()}\n")  # a live pid, but nobody holds the lock
    assert status() == (fleet.NOT_RUNNING, "not running (stale pid file)\n")
    with PidFile(pid_file):
        assert status() == (0, f"running\npid {os.getpid()}\n")
    assert status() == (fleet.NOT_RUNNING, "not running\n")


def test_a_controller_that_exits_at_once_is_a_failed_start_with_its_log(tmp_path: Path) -> None:
    options = fleet.StartOptions(master="tcp://head:5678", run_dir=str(tmp_path / "run"), cyclone="false", wait=10)
    result = subprocess.run(fleet.start_script("n1", options), shell=True, capture_output=True, text=True, check=False)
    assert result.returncode == 1
    assert result.stdout.startswith(f"failed to start (see {tmp_path}/run/controller-n1.log):")


def test_a_controller_refused_at_start_is_a_failed_start_with_its_error(tmp_path: Path) -> None:
    options = fleet.StartOptions(
        master="tcp://10.77.0.1:5678", run_dir=str(tmp_path / "run"), cyclone=CYCLONE, keys=str(tmp_path / "nokeys")
    )
    result = subprocess.run(
        fleet.start_script("n1", options), shell=True, capture_output=True, text=True, check=False, env=cyclone_env()
    )
    assert result.returncode == 1, result.stdout
    assert result.stdout.startswith("failed to start"), result.stdout
    assert "nokeys" in result.stdout


def test_the_docs_clush_recipe_starts_controllers_that_run_a_job_and_drain(
    cluster: ClusterSetup, tmp_path: Path
) -> None:
    """docs/operations.md's "with clush itself" lines, paths made per node (the namespaces share
    one file system, where real nodes each have their own /run/cyclone)."""
    clush = shutil.which("clush")
    assert clush is not None, "ClusterShell installs clush"
    run = tmp_path / "run"
    run.mkdir()
    node = '$(hostname -I | tr -d " ")'  # one address per node namespace
    pid_file = f"{run}/controller-{node}.pid"
    argv = [clush, "-w", "node[1-3]", "-b", "-o", f"-F {cluster.cluster.ssh_config}"]
    start = (f"setsid {CYCLONE} controller --master {cluster.master_endpoint} --config {cluster.controller_config()} "
             f"--stay --pid-file {pid_file} "
             f"</dev/null >>{run}/controller-{node}.log 2>&1 &")  # fmt: skip
    started = cluster.cluster.run("head", *argv, start, check=False, timeout=60)
    assert started.returncode == 0, started.stdout + started.stderr
    wait_until(lambda: len(list(run.glob("*.pid"))) == 3, 60, "three controllers' pid files")

    master_config, out = cluster.master_config(tmp_path, count=90, seconds=0.01)
    master = cluster.cluster.spawn("head", [CYCLONE, "master", "--config", str(master_config)],
                                   tmp_path / "master.log", env=cyclone_env())  # fmt: skip
    assert master.wait(90) == 0, (tmp_path / "master.log").read_text()
    assert Counter(r["key"] for r in read_probe(out)) == Counter(str(i) for i in range(90))

    pids = [int(path.read_text().split()[0]) for path in run.glob("*.pid")]
    stopped = cluster.cluster.run("head", *argv, f"kill -TERM $(cat {pid_file})", check=False, timeout=60)
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    wait_until(lambda: not any(Path(f"/proc/{pid}").exists() for pid in pids), 60, "the controllers to drain and exit")
    for log in run.glob("*.log"):
        assert "draining" in log.read_text().lower(), log.read_text()
