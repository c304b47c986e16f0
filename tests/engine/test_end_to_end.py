"""The whole engine with real processes, sockets, signals and kills: ``cyclone master``,
``cyclone controller``, ``cyclone run`` and ``cyclone status`` as a user runs them."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import signal
import socket
import stat
import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import Any

import msgpack
import pytest
import zmq
from engine_support import (
    FAST_CONTROLLER,
    FAST_MASTER,
    ClusterKeys,
    Partition,
    Proc,
    descendants,
    read_probe,
    toml,
    wait_gone,
)

from cyclone_core import keys as keys_module
from cyclone_core.engine import protocol as p
from cyclone_core.testing import free_port, wait_until


@pytest.fixture(scope="module")
def cluster_keys(tmp_path_factory: pytest.TempPathFactory) -> ClusterKeys:
    """The master's key directory and the controllers', for every test here."""
    return ClusterKeys.make(tmp_path_factory.mktemp("keys"))


def config(
    tmp_path: Path,
    cluster_keys: ClusterKeys,
    *,
    port: int,
    count: int,
    task: str = "noop",
    args: dict[str, Any] | None = None,
    master: dict[str, Any] | None = None,
    probe: dict[str, Any] | None = None,
) -> tuple[Path, Path]:
    """A config file for a master and its controllers, and the probe sink's output file."""
    out = tmp_path / "probe.jsonl"
    tables = {
        "master": {
            "bind": f"tcp://127.0.0.1:{port}",
            "keys": str(cluster_keys.master_dir),
            **FAST_MASTER,
            **(master or {}),
        },
        "controller": {
            "master": f"tcp://127.0.0.1:{port}",
            "keys": str(cluster_keys.controller_dir),
            "workers": 1,
            **FAST_CONTROLLER,
        },
        "generator": {"name": "benchmark", "options": {"count": count, "task": task, "args": args or {}}},
        "sinks.probe": {"path": str(out), "flush_interval": 0.05, "batch_size": 50, **(probe or {})},
    }
    path = tmp_path / "cyclone.toml"
    path.write_text(toml(tables))
    return path, out


def status(port: int, cluster_keys: ClusterKeys) -> dict[str, Any]:
    return p.decode(_ask(port, p.encode(p.StatusRequest()), cluster_keys)).snapshot  # type: ignore[union-attr]


def _ask(port: int, frame: bytes, cluster_keys: ClusterKeys) -> bytes:
    with zmq.Context() as ctx, ctx.socket(zmq.DEALER) as sock:
        sock.setsockopt(zmq.LINGER, 0)
        sock.curve_serverkey, sock.curve_publickey, sock.curve_secretkey = (k.encode() for k in cluster_keys.curve())
        sock.connect(f"tcp://127.0.0.1:{port}")
        sock.send(frame)
        assert sock.poll(10_000), "no answer from the master"
        return sock.recv()


def keys(results: list[dict[str, Any]]) -> Counter[str]:
    """How often each task key appears among distinct task ids."""
    return Counter(r["key"] for r in {r["task_id"]: r for r in results}.values())


def test_three_controllers_run_ten_thousand_tasks_each_result_once(cyclone, tmp_path) -> None:
    out = tmp_path / "probe.jsonl"
    run = cyclone(
        "run", "--controllers", "3", "--workers", "1", "-g", "count=10000",
        "--sink", "probe", "-s", f"probe.path={out}", "--json",
    )  # fmt: skip
    assert run.wait(120) == 0, run.output()
    summary = json.loads(run.output().strip().splitlines()[-1])
    assert (summary["submitted"], summary["succeeded"], summary["failed"], summary["quarantined"]) == (
        10000,
        10000,
        0,
        0,
    )
    assert {"duration_s", "tasks_per_second", "latency_ms_p50", "latency_ms_p99", "timed_out", "crashed"} <= set(
        summary
    )
    delivered = read_probe(out)
    assert len(delivered) == 10000  # nothing delivered twice
    assert keys(delivered) == Counter(str(i) for i in range(10000))


def test_a_killed_controller_s_tasks_finish_elsewhere(cyclone, tmp_path, cluster_keys) -> None:
    port = free_port()
    path, out = config(tmp_path, cluster_keys, port=port, count=300, task="sleep", args={"seconds": 0.01})
    master = cyclone("master", "--config", str(path))
    victim = cyclone("controller", "--config", str(path), "--id", "victim")
    cyclone("controller", "--config", str(path), "--id", "survivor")
    wait_until(lambda: len(read_probe(out)) >= 40, 60, "the first results")
    workers = descendants(victim.pid)
    victim.signal(signal.SIGKILL)
    assert master.wait(60) == 0, master.output()
    assert "controller victim lost" in master.output()
    assert keys(read_probe(out)) == Counter(str(i) for i in range(300))
    wait_gone(workers, "the killed controller's workers")


def test_a_partitioned_controller_s_tasks_finish_elsewhere_and_it_rejoins_when_healed(
    cyclone, tmp_path, cluster_keys
) -> None:
    port = free_port()
    path, out = config(tmp_path, cluster_keys, port=port, count=300, task="sleep", args={"seconds": 0.02})
    master = cyclone("master", "--config", str(path))
    with Partition(port) as partition:
        cut_off = cyclone("controller", "--config", str(path), "--id", "cut-off",
                          "--master", f"tcp://127.0.0.1:{partition.port}")  # fmt: skip
        wait_until(lambda: any(r["controller"] == "cut-off" for r in read_probe(out)), 60, "results from cut-off")
        cyclone("controller", "--config", str(path), "--id", "other")
        partition.cut()
        wait_until(lambda: "controller cut-off lost" in master.output(), 30, "the master to declare cut-off lost")
        partition.heal()
        assert master.wait(60) == 0, master.output()
        assert cut_off.wait(30) == 0, cut_off.output()
    assert "registered again" in cut_off.output()
    delivered = read_probe(out)
    assert len(delivered) == 300  # nothing delivered twice
    assert keys(delivered) == Counter(str(i) for i in range(300))
    assert {r["controller"] for r in delivered} == {"cut-off", "other"}


def test_a_killed_worker_s_task_is_retried(cyclone, tmp_path, cluster_keys) -> None:
    port = free_port()
    path, out = config(tmp_path, cluster_keys, port=port, count=12, task="sleep", args={"seconds": 0.5})
    master = cyclone("master", "--config", str(path))
    controller = cyclone("controller", "--config", str(path), "--workers", "2")
    wait_until(lambda: read_probe(out), 60, "the first result")
    # The controller's children are its fork server; the workers are the fork server's.  Both
    # run tasks back to back: killing both surely cuts one short.
    workers = [w for c in _children(controller.pid) for w in _children(c)]
    assert len(workers) == 2
    for worker in workers:
        os.kill(worker, signal.SIGKILL)
    assert master.wait(60) == 0, master.output()
    delivered = read_probe(out)
    assert keys(delivered) == Counter(str(i) for i in range(12))
    assert all(r["status"] == "ok" for r in delivered)
    assert any("crashed" in r["history"] for r in delivered), delivered


def _children(pid: int) -> list[int]:
    found = []
    for pid_ in descendants(pid):
        with open(f"/proc/{pid_}/stat", encoding="ascii") as stat:
            if int(stat.read().rsplit(")", 1)[1].split()[1]) == pid:
                found.append(pid_)
    return found


def _tasks_file(tmp_path: Path, tasks: list[dict[str, Any]]) -> Path:
    path = tmp_path / "tasks.json"
    path.write_text(json.dumps(tasks))
    return path


def _run_tasks(cyclone, tmp_path: Path, tasks: list[dict[str, Any]], master: dict[str, Any]) -> tuple[int, dict, list]:
    settings = tmp_path / "run.toml"
    settings.write_text(toml({"master": master}))
    out = tmp_path / "probe.jsonl"
    run = cyclone(
        "run", "--config", str(settings), "--workers", "2", "--generator", "tasks-file",
        "-g", f"path={_tasks_file(tmp_path, tasks)}", "--sink", "probe", "-s", f"probe.path={out}", "--json",
    )  # fmt: skip
    code = run.wait(120)
    return code, json.loads(run.output().strip().splitlines()[-1]), read_probe(out)


def test_a_hanging_task_is_killed_at_its_timeout(cyclone, tmp_path) -> None:
    tasks = [{"type": "hang", "key": "hang", "timeout": 1}, *({"type": "noop", "key": f"n{i}"} for i in range(20))]
    code, summary, delivered = _run_tasks(cyclone, tmp_path, tasks, {"max_crash_retries": 0})
    assert code == 1
    assert (summary["succeeded"], summary["timed_out"], summary["quarantined"]) == (20, 1, 1)
    (hung,) = [r for r in delivered if r["key"] == "hang"]
    assert hung["history"] == ["timeout"]
    assert hung["status"] == "quarantined"


def test_a_crashing_task_is_quarantined_while_the_run_goes_on(cyclone, tmp_path) -> None:
    tasks = [
        {"type": "crash", "key": "crash", "args": {"signal": int(signal.SIGSEGV)}},  # a real segfault
        *({"type": "sleep", "key": f"s{i}", "args": {"seconds": 0.02}} for i in range(30)),
    ]
    code, summary, delivered = _run_tasks(cyclone, tmp_path, tasks, {"max_crash_retries": 2})
    assert code == 1
    assert (summary["succeeded"], summary["crashed"], summary["quarantined"]) == (30, 3, 1)
    (crashed,) = [r for r in delivered if r["key"] == "crash"]
    assert crashed["status"] == "quarantined"
    assert crashed["history"] == ["crashed", "crashed", "crashed"]
    assert "quarantined after 3 attempts" in crashed["error"]
    assert "killed by SIGSEGV" in crashed["error"]


def test_a_killed_master_resumes_from_its_journal(cyclone, tmp_path, cluster_keys) -> None:
    port = free_port()
    journal = tmp_path / "journal.sqlite"
    path, out = config(
        tmp_path, cluster_keys, port=port, count=400, task="sleep", args={"seconds": 0.005}, master={"window": 50}
    )
    first = cyclone("master", "--config", str(path), "--journal", str(journal))
    controllers = [cyclone("controller", "--config", str(path), "--workers", "2") for _ in range(2)]
    wait_until(lambda: len(read_probe(out)) >= 100, 60, "the first results")
    first.signal(signal.SIGKILL)
    first.wait()
    second = cyclone("master", "--config", str(path), "--journal", str(journal))
    assert second.wait(90) == 0, second.output()
    assert "resuming run" in second.output()
    assert keys(read_probe(out)) == Counter(str(i) for i in range(400))
    for controller in controllers:
        assert controller.wait(30) == 0, controller.output()


def test_a_controller_restarted_at_once_after_a_kill_takes_its_id_over(cyclone, tmp_path, cluster_keys) -> None:
    # As systemd or Slurm restart it: the master still holds the killed process's registration.
    port = free_port()
    path, out = config(tmp_path, cluster_keys, port=port, count=300, task="sleep", args={"seconds": 0.01})
    master = cyclone("master", "--config", str(path))
    first = cyclone("controller", "--config", str(path), "--id", "node-1")
    wait_until(lambda: len(read_probe(out)) >= 50, 60, "the first results")
    first.signal(signal.SIGKILL)
    first.wait()
    second = cyclone("controller", "--config", str(path), "--id", "node-1")
    assert second.wait(90) == 0, second.output()
    assert "is in use by pid" in second.output()
    assert "trying again in" in second.output()
    assert master.wait(60) == 0, master.output()
    assert keys(read_probe(out)) == Counter(str(i) for i in range(300))


def test_a_controller_may_start_before_its_master(cyclone, tmp_path, cluster_keys) -> None:
    port = free_port()
    path, out = config(tmp_path, cluster_keys, port=port, count=50)
    controller = cyclone("controller", "--config", str(path))
    wait_until(lambda: "cannot connect to master" in controller.output(), 30, "the controller to retry")
    master = cyclone("master", "--config", str(path))
    assert master.wait(60) == 0, master.output()
    assert controller.wait(30) == 0, controller.output()
    assert keys(read_probe(out)) == Counter(str(i) for i in range(50))


def test_two_controllers_on_one_host(cyclone, tmp_path, cluster_keys) -> None:
    port = free_port()
    # Sleeps: the run must still be going when the test stops it, however slow the test is.
    path, _ = config(tmp_path, cluster_keys, port=port, count=100_000, task="sleep", args={"seconds": 0.005})
    master = cyclone("master", "--config", str(path))
    for _ in range(2):
        cyclone("controller", "--config", str(path))

    def both() -> dict[str, Any] | None:
        snapshot = status(port, cluster_keys)
        return snapshot if len(snapshot["controllers"]) == 2 else None

    snapshot = wait_until(both, 60, "two controllers")
    hosts = {c["host"] for c in snapshot["controllers"]}
    ids = {c["id"] for c in snapshot["controllers"]}
    assert len(hosts) == 1
    assert len(ids) == 2
    wait_until(
        lambda: all(c["in_flight"] or c["credit"] for c in status(port, cluster_keys)["controllers"]),
        30,
        "both working",
    )
    as_json = cyclone("status", "--master", f"tcp://127.0.0.1:{port}", "--json", "--keys", str(cluster_keys.master_dir))
    assert as_json.wait(30) == 0
    shown = json.loads(as_json.output())
    assert {c["id"] for c in shown["controllers"]} == ids
    assert {"queued", "in_flight", "succeeded", "failed", "quarantined"} <= set(shown)
    table = cyclone("status", "--master", f"tcp://127.0.0.1:{port}", "--keys", str(cluster_keys.master_dir))
    assert table.wait(30) == 0
    assert "controllers (2)" in table.output()
    assert all(cid in table.output() for cid in ids)
    master.signal(signal.SIGTERM)
    assert master.wait(60) == 0, master.output()


def test_strangers_and_other_versions_do_not_disturb_the_master(cyclone, tmp_path, cluster_keys) -> None:
    port = free_port()
    pid_file = tmp_path / "master.pid"
    path, _ = config(tmp_path, cluster_keys, port=port, count=10)
    master = cyclone("master", "--config", str(path), "--pid-file", str(pid_file))
    wait_until(lambda: pid_file.exists() and status(port, cluster_keys), 30, "the master")
    refusal = p.decode(_ask(port, b"\x00\x01 garbage", cluster_keys))
    assert isinstance(refusal, p.Refuse)
    assert "not a msgpack message" in refusal.reason
    hello = msgpack.packb({"v": 2, "t": "hello", "controller_id": "future", "host": "h", "pid": 1})
    refusal = p.decode(_ask(port, hello, cluster_keys))
    assert isinstance(refusal, p.Refuse)
    assert "protocol version 2 is not supported" in refusal.reason
    with socket.create_connection(("127.0.0.1", port)) as raw:  # not even ZeroMQ
        raw.sendall(b"GET / HTTP/1.0\r\n\r\n")
    snapshot = status(port, cluster_keys)
    assert snapshot["protocol_errors"] == 2
    assert master.popen.poll() is None
    second = cyclone("master", "--config", str(path), "--pid-file", str(pid_file), "--bind", "tcp://127.0.0.1:0")
    assert second.wait(30) == 1
    assert f"error: already running (pid {master.pid}, pid file {pid_file})" in second.output()
    master.signal(signal.SIGTERM)
    assert master.wait(30) == 0, master.output()
    assert "ignored a bad message from peer" in master.output()
    assert not pid_file.exists()


def test_a_failing_sink_catches_up_once_it_recovers(cyclone, tmp_path, cluster_keys) -> None:
    port = free_port()
    down = tmp_path / "sink-is-down"
    down.touch()
    path, out = config(tmp_path, cluster_keys, port=port, count=50, probe={"down_while": str(down)})
    master = cyclone("master", "--config", str(path))
    cyclone("controller", "--config", str(path))

    def failing() -> dict[str, Any] | None:
        sink = status(port, cluster_keys)["sinks"][0]
        return sink if sink["backlog"] == 50 and sink["errors"] else None

    sink = wait_until(failing, 60, "the sink to fail with every result waiting")
    assert "probe sink is down" in sink["last_error"]
    down.unlink()
    assert master.wait(60) == 0, master.output()
    assert keys(read_probe(out)) == Counter(str(i) for i in range(50))
    assert "sink 'probe' recovered" in master.output()


def test_ctrl_c_drains_a_run_and_still_prints_the_summary(cyclone, tmp_path) -> None:
    run = cyclone("run", "--workers", "2", "-g", "count=1000", "-g", "task=sleep", "-g", "args.seconds=0.05", "--json",
                  "--journal", str(tmp_path / "j.sqlite"))  # fmt: skip
    # The controller, its fork server and two workers.
    children = wait_until(lambda: len(descendants(run.pid)) >= 4 and descendants(run.pid), 60, "the workers")
    run.signal(signal.SIGINT)
    assert run.wait(60) == 1, run.output()
    summary = json.loads(run.output().strip().splitlines()[-1])
    assert summary["interrupted"] is True
    assert 0 < summary["submitted"] <= 1000
    wait_gone(children, "the run's controller and workers")


def test_status_of_an_unreachable_master_is_one_line(cyclone, cluster_keys) -> None:
    port = free_port()
    keys_dir = cluster_keys.master_dir
    status_cmd = cyclone("status", "--master", f"tcp://127.0.0.1:{port}", "--timeout", "0.5", "--keys", str(keys_dir))
    assert status_cmd.wait(30) == 1
    assert status_cmd.output().strip() == (
        f"error: no answer from a master at tcp://127.0.0.1:{port} within 0.5 s: is it running, "
        f"is its key the one in {keys_dir}, and does it admit this key?"
    )
    plaintext = cyclone("status", "--master", f"tcp://127.0.0.1:{port}", "--timeout", "0.5", "--insecure")
    assert plaintext.wait(30) == 1
    assert plaintext.output().strip() == f"error: no answer from a master at tcp://127.0.0.1:{port} within 0.5 s"


def test_a_bad_option_is_exit_code_two(cyclone) -> None:
    run = cyclone("run", "-g", "count=many")
    assert run.wait(30) == 2
    lines = run.output().strip().splitlines()
    assert lines == ["error: generator 'benchmark': count: expected a whole number, got 'many'"]


def test_on_a_terminal_cyclone_run_shows_a_bar_with_the_total_from_the_start(tmp_path) -> None:
    small_window = tmp_path / "window.toml"  # the generator is far from exhausted at first
    small_window.write_text("[master]\nwindow = 20\n")
    terminal, child_end = pty.openpty()
    run = subprocess.Popen(
        ["cyclone", "run", "--config", str(small_window), "--workers", "2", "-g", "count=200", "-g", "task=sleep",
         "-g", "args.seconds=0.005", "-s", f"sqlite.path={tmp_path / 'results.sqlite'}"],
        stdout=subprocess.PIPE, stderr=child_end, text=True, cwd=tmp_path,
    )  # fmt: skip
    os.close(child_end)
    shown = b""
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # until the run and its controller close the terminal
            if select.select([terminal], [], [], 1.0)[0]:
                try:
                    data = os.read(terminal, 65536)
                except OSError:  # EIO: no process holds the terminal any more
                    break
                if not data:
                    break
                shown += data
        assert run.wait(60) == 0
        summary = run.stdout.read() if run.stdout else ""
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
        os.close(terminal)
    frames = [f.strip() for f in shown.decode().split("\r") if f.strip()]
    assert frames, "no progress line"
    assert all(re.fullmatch(r"\[[#.]{30}\] [\d,]+/200 .*tasks/s.*", f) for f in frames), frames
    assert "200 succeeded" in summary


# -- keys ----------------------------------------------------------------------------------------


def _error_lines(proc: Any) -> list[str]:
    return [line for line in proc.output().splitlines() if "ERROR" in line or line.startswith("error:")]


def test_a_controller_pinned_to_another_master_key_runs_nothing_and_says_so(cyclone, tmp_path, cluster_keys) -> None:
    port = free_port()
    path, out = config(tmp_path, cluster_keys, port=port, count=20)
    other = tmp_path / "other-keys"
    for args in (["new", "--dir", str(other)], ["pin", keys_module.generate().public, "--dir", str(other)]):
        subprocess.run(["cyclone", "keys", *args], check=True, capture_output=True, timeout=60)
    master = cyclone("master", "--config", str(path))
    wait_until(lambda: status(port, cluster_keys), 30, "the master")
    stray = cyclone("controller", "--config", str(path), "--keys", str(other))
    wait_until(lambda: "no answer from master" in stray.output(), 30, "the controller to give its reason")
    assert f"it is not the master whose key is pinned in {other / 'master.public'}" in stray.output()
    assert status(port, cluster_keys)["controllers"] == []
    assert read_probe(out) == []
    assert stray.popen.poll() is None  # it keeps to its reconnect rules
    master.signal(signal.SIGTERM)
    assert master.wait(30) == 0, master.output()


def test_a_world_readable_controller_key_is_refused_at_start(cyclone, tmp_path) -> None:
    directory = tmp_path / "keys"
    subprocess.run(["cyclone", "keys", "new", "--dir", str(directory)], check=True, capture_output=True, timeout=60)
    secret = directory / "controller.secret"
    secret.chmod(0o644)
    controller = cyclone("controller", "--keys", str(directory), "--master", f"tcp://127.0.0.1:{free_port()}")
    assert controller.wait(30) == 2
    (line,) = controller.output().strip().splitlines()
    assert line.endswith(f"ERROR cyclone.controller: permissions 0644 for '{secret}' are too open; chmod 600 it")


def test_a_controller_enrolls_with_a_join_token_once(cyclone, tmp_path) -> None:
    master_dir = tmp_path / "master-keys"

    def keys_cmd(*args: str) -> str:
        done = subprocess.run(
            ["cyclone", "keys", *args, "--dir", str(master_dir)], check=False, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    keys_cmd("init")
    token = keys_cmd("token", "--ids", "enrolled-*")
    port = free_port()
    path, out = config(
        tmp_path, ClusterKeys(master_dir, tmp_path / "unused"), port=port, count=100_000, task="sleep",
        args={"seconds": 0.01},
    )  # fmt: skip
    master = cyclone("master", "--config", str(path))
    first = cyclone("controller", "--config", str(path), "--id", "enrolled-1", "--token", token,
                    "--keys", str(tmp_path / "node1"))  # fmt: skip
    wait_until(lambda: len(read_probe(out)) >= 20, 60, "results from the enrolled controller")
    assert (tmp_path / "node1" / "controller.enrolled").exists()
    second = cyclone("controller", "--config", str(path), "--id", "enrolled-2", "--token", token,
                     "--keys", str(tmp_path / "node2"))  # fmt: skip
    assert second.wait(30) == 2, second.output()
    (line,) = _error_lines(second)
    assert "refused to enroll this controller" in line
    expiring = keys_cmd("token", "--ttl", "1s", "--ids", "enrolled-*")
    issued = time.time()
    wait_until(lambda: time.time() > issued + 1.5, 10, "the token to expire")
    late = cyclone("controller", "--config", str(path), "--id", "enrolled-3", "--token", expiring,
                   "--keys", str(tmp_path / "node3"))  # fmt: skip
    assert late.wait(30) == 2, late.output()
    (line,) = _error_lines(late)
    assert "refused to enroll this controller" in line
    assert {c["id"] for c in status(port, ClusterKeys(master_dir, tmp_path))["controllers"]} == {"enrolled-1"}
    master.signal(signal.SIGTERM)
    assert master.wait(60) == 0, master.output()
    assert first.wait(30) == 0, first.output()
    assert {r["controller"] for r in read_probe(out)} == {"enrolled-1"}


def test_status_needs_an_admin_key(cyclone, tmp_path, cluster_keys) -> None:
    port = free_port()
    path, _ = config(tmp_path, cluster_keys, port=port, count=10)
    master = cyclone("master", "--config", str(path))
    endpoint = f"tcp://127.0.0.1:{port}"
    wait_until(lambda: status(port, cluster_keys), 30, "the master")
    admin = cyclone("status", "--master", endpoint, "--json", "--keys", str(cluster_keys.master_dir))
    assert admin.wait(30) == 0, admin.output()
    assert "run_id" in json.loads(admin.output())
    plain = cyclone("status", "--master", endpoint, "--keys", str(cluster_keys.controller_dir))
    assert plain.wait(30) == 1
    assert plain.output().strip() == f"error: master at {endpoint} refused: status needs a key with the admin role"
    master.signal(signal.SIGTERM)
    assert master.wait(30) == 0, master.output()


def test_cyclone_run_listens_on_a_private_ipc_socket_removed_afterwards(tmp_path) -> None:
    temp = tmp_path / "tmp"
    temp.mkdir()
    env = {**os.environ, "TMPDIR": str(temp)}
    run = Proc(["run", "--workers", "1", "-g", "count=200", "-g", "task=sleep", "-g", "args.seconds=0.01", "--json",
                "-s", f"sqlite.path={tmp_path / 'results.sqlite'}"], tmp_path / "run.log", env)  # fmt: skip
    try:

        def private_socket() -> Path | None:
            for directory in temp.glob("cyclone-run-*"):
                sock = directory / "master"
                if sock.exists() and stat.S_ISSOCK(sock.stat().st_mode):
                    return directory
            return None

        directory = wait_until(private_socket, 60, "the run's socket")
        st = directory.stat()
        assert (stat.S_IMODE(st.st_mode), st.st_uid) == (0o700, os.getuid())
        assert run.wait(120) == 0, run.output()
        assert not directory.exists()
        assert json.loads(run.output().strip().splitlines()[-1])["succeeded"] == 200
    finally:
        run.kill_group()
