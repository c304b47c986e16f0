"""``cyclone status --watch`` against a real master: in place on a terminal, one snapshot after
the other elsewhere; Ctrl-C is exit code 0, a master that goes away exit code 1."""

from __future__ import annotations

import os
import pty
import re
import select
import signal
import subprocess
from pathlib import Path

import pytest
from engine_support import FAST_MASTER, ClusterKeys, Proc, toml

from cyclone_core.testing import free_port, wait_until


@pytest.fixture(scope="module")
def cluster_keys(tmp_path_factory: pytest.TempPathFactory) -> ClusterKeys:
    return ClusterKeys.make(tmp_path_factory.mktemp("keys"))


@pytest.fixture
def master(cyclone, tmp_path: Path, cluster_keys: ClusterKeys) -> tuple[Proc, str]:
    """A master with tasks and no controller: it waits, answering status, until stopped."""
    port = free_port()
    path = tmp_path / "cyclone.toml"
    master_table = {"bind": f"tcp://127.0.0.1:{port}", "keys": str(cluster_keys.master_dir), **FAST_MASTER}
    path.write_text(toml({"master": master_table, "generator": {"name": "benchmark", "options": {"count": 10}}}))
    proc = cyclone("master", "--config", str(path))
    wait_until(lambda: "listening" in proc.output() or proc.popen.poll() is not None, 30, "the master to listen")
    return proc, f"tcp://127.0.0.1:{port}"


class Terminal:
    """A command whose stdout is a pseudo-terminal, and what it has shown there."""

    def __init__(self, args: list[str]) -> None:
        self.fd, child_end = pty.openpty()
        self.popen = subprocess.Popen(
            args, stdout=child_end, stderr=subprocess.PIPE, encoding="utf-8", errors="replace"
        )
        os.close(child_end)
        self.shown = ""

    def read(self) -> str:
        """What it has shown so far (reading what is there now)."""
        while select.select([self.fd], [], [], 0.05)[0]:
            try:
                data = os.read(self.fd, 65536)
            except OSError:  # EIO: the command closed the terminal
                break
            if not data:
                break
            self.shown += data.decode(errors="replace")
        return self.shown

    def close(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
        self.popen.wait(30)
        os.close(self.fd)


def _watch(endpoint: str, cluster_keys: ClusterKeys) -> list[str]:
    return ["cyclone", "status", "--watch", "--interval", "0.2", "--timeout", "1",
            "--master", endpoint, "--keys", str(cluster_keys.master_dir)]  # fmt: skip


def test_on_a_terminal_status_redraws_in_place_until_ctrl_c(master, cluster_keys) -> None:
    _, endpoint = master
    terminal = Terminal(_watch(endpoint, cluster_keys))
    try:
        # A redraw moves the cursor up to the first line of the last frame and erases below.
        wait_until(lambda: terminal.read().count("\x1b[J") >= 2, 60, "two redraws")
        shown = terminal.read()
        assert shown.count("tasks: 10 submitted") >= 3, shown
        redraw = re.search(r"\x1b\[(\d+)F\x1b\[J", shown)
        assert redraw, shown
        assert int(redraw[1]) == shown[: redraw.start()].count("\n")  # exactly over the first frame
        terminal.popen.send_signal(signal.SIGINT)
        assert terminal.popen.wait(30) == 0
    finally:
        terminal.close()


def test_status_watch_says_in_one_line_when_the_master_goes_away(master, cluster_keys) -> None:
    proc, endpoint = master
    watch = subprocess.Popen(
        _watch(endpoint, cluster_keys),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        encoding="utf-8",
        errors="replace",
    )
    try:
        assert watch.stdout is not None
        lines: list[str] = []
        wait_until(lambda: lines.append(watch.stdout.readline()) or sum("submitted" in x for x in lines) >= 2, 60,
                   "two snapshots")  # fmt: skip
        assert "" in [line.strip() for line in lines], lines  # snapshots one after the other, apart
        assert not any("\x1b" in line for line in lines), lines
        proc.signal(signal.SIGTERM)
        assert proc.wait(60) == 0, proc.output()
        assert watch.wait(60) == 1
        _, errors = watch.communicate()
        assert errors.strip().splitlines() == [
            f"error: the master at {endpoint} went away: no answer from a master at {endpoint} within 1 s: "
            f"is it running, is its key the one in {cluster_keys.master_dir}, and does it admit this key?"
        ]
    finally:
        if watch.poll() is None:
            watch.kill()
        watch.wait(30)
