"""No process outlives its task: real workers, real double forks, real timeouts."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from engine_support import alive, descendants

from cyclone_core.engine import reaper
from cyclone_core.engine.protocol import TaskEnvelope, result_from_row
from cyclone_core.engine.workers import WorkerPool
from cyclone_core.model import Result, Status
from cyclone_core.plugins import Plugins
from cyclone_core.testing import wait_until

PLUGIN = """
import subprocess
import threading
from typing import ClassVar

import attrs

from cyclone_core import Task, hookimpl

# sh starts a sleeper in a session of its own and exits at once: the sleeper is an orphan,
# in no process group of the worker's.
DAEMON = "setsid sleep 300 </dev/null >/dev/null 2>&1 & echo $! > \\"$0\\""


@attrs.define(kw_only=True)
class Daemonize(Task):
    name: ClassVar[str] = "daemonize"
    pid_file: str
    hang: bool = False

    def execute(self, ctx):
        subprocess.run(["sh", "-c", DAEMON, self.pid_file], check=True)
        if self.hang:
            threading.Event().wait()


@hookimpl
def cyclone_task_types():
    return [Daemonize]
"""


@pytest.fixture
def daemon_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cyclone_plugins: Plugins) -> Iterator[None]:
    """A task type that double-forks a sleeper, registered in this process (workers load it)."""
    (tmp_path / "cyclone_test_daemon_tasks.py").write_text(textwrap.dedent(PLUGIN))
    monkeypatch.syspath_prepend(str(tmp_path))
    import cyclone_test_daemon_tasks  # noqa: PLC0415

    cyclone_plugins.register(cyclone_test_daemon_tasks, name="test-daemon")
    yield
    sys.modules.pop("cyclone_test_daemon_tasks", None)


@pytest.fixture
def pool() -> Iterator[WorkerPool]:
    the_pool = WorkerPool(1, controller_id="test-controller", kill_grace=0.5)
    the_pool.start()
    yield the_pool
    the_pool.close()


def collect(pool: WorkerPool, count: int) -> list[Result]:
    results: list[Result] = []

    def more() -> bool:
        pool.wait(0.1)
        results.extend(result_from_row(row) for row in pool.results)
        pool.results = []
        return len(results) >= count

    wait_until(more, what=f"{count} results")
    return results


def sleeper(pid_file: Path) -> int:
    return int(wait_until(lambda: pid_file.exists() and pid_file.read_text().strip(), what="the sleeper's pid"))


@pytest.mark.usefixtures("daemon_plugin")
def test_a_double_forked_sleeper_is_killed_with_its_task_at_the_timeout(pool: WorkerPool, tmp_path: Path) -> None:
    (worker,) = pool.pids()
    pid_file = tmp_path / "sleeper.pid"
    pool.submit([TaskEnvelope("t", "daemonize", {"pid_file": str(pid_file), "hang": True}, timeout=1.0)])
    (result,) = collect(pool, 1)
    assert result.status is Status.TIMEOUT
    pid = sleeper(pid_file)
    wait_until(lambda: not alive(pid), what="the sleeper to be killed")
    wait_until(lambda: not alive(worker), what="the timed-out worker to exit")


@pytest.mark.usefixtures("daemon_plugin")
def test_a_task_that_ends_takes_its_daemons_with_it_and_its_worker_lives_on(pool: WorkerPool, tmp_path: Path) -> None:
    (worker,) = pool.pids()
    pid_file = tmp_path / "sleeper.pid"
    pool.submit([TaskEnvelope("t", "daemonize", {"pid_file": str(pid_file)})])
    (result,) = collect(pool, 1)
    assert result.status is Status.OK, result.error
    pid = sleeper(pid_file)
    wait_until(lambda: not alive(pid), what="the daemon to be killed")
    assert pool.pids() == [worker]
    assert descendants(worker) == []  # reaped too: no zombie left


@pytest.mark.usefixtures("daemon_plugin")
def test_a_worker_whose_controller_closes_kills_its_tasks_daemons(tmp_path: Path) -> None:
    pool = WorkerPool(1, controller_id="test-controller")
    pool.start()
    pid_file = tmp_path / "sleeper.pid"
    try:
        pool.submit([TaskEnvelope("t", "daemonize", {"pid_file": str(pid_file), "hang": True})])
        pid = sleeper(pid_file)
    finally:
        pool.close()
    wait_until(lambda: not alive(pid), what="the daemon to be killed")


def test_kill_descendants_kills_a_whole_tree_and_not_the_parent() -> None:
    # A subreaper child of this test (a Python process) holds a tree: kill its descendants.
    script = textwrap.dedent(
        """
        import subprocess, sys
        from cyclone_core.engine.reaper import become_subreaper
        assert become_subreaper()
        subprocess.run(["sh", "-c", "setsid sh -c 'sleep 300 & sleep 300' </dev/null >/dev/null 2>&1 &"], check=True)
        print("ready", flush=True)
        sys.stdin.read()
        """
    )
    import subprocess  # noqa: PLC0415

    holder = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline() == "ready\n"
        tree = wait_until(lambda: len(reaper.descendants(holder.pid)) >= 2 and reaper.descendants(holder.pid))
        assert reaper.kill_descendants(holder.pid) >= 2
        for pid in tree:
            wait_until(lambda pid=pid: not alive(pid), what=f"process {pid} to be killed")
        assert alive(holder.pid)
    finally:
        holder.kill()
        holder.wait(10)


def test_a_worker_without_children_pays_one_call() -> None:
    # The test process may have children of its own: look from a fresh one.
    import subprocess  # noqa: PLC0415

    code = "from cyclone_core.engine.reaper import end_leftovers; print(end_leftovers())"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "0\n"
