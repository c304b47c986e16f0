"""The virtual cluster's own housekeeping: what a killed run left behind is removed."""

from __future__ import annotations

import subprocess

from netns import PREFIX, missing_requirements, remove_stale, wait_for

from cyclone_core.testing import unavailable


def _run(*argv: str) -> str:
    return subprocess.run(argv, capture_output=True, text=True, check=False).stdout


def test_namespaces_of_a_dead_run_are_removed_with_their_processes() -> None:
    reason = missing_requirements()
    if reason:
        unavailable(reason)
    gone = subprocess.Popen(["true"])
    gone.wait()
    stale = f"{PREFIX}{gone.pid}-node1"
    subprocess.run(["ip", "netns", "add", stale], check=True)
    left = subprocess.Popen(["ip", "netns", "exec", stale, "sleep", "600"], start_new_session=True)
    try:
        wait_for(lambda: str(left.pid) in _run("ip", "netns", "pids", stale).split(), 10, "sleep in the namespace")
        assert stale in remove_stale()
        assert left.wait(10) == -9
        assert stale not in _run("ip", "netns", "list")
    finally:
        left.kill()
        left.wait()
        subprocess.run(["ip", "netns", "delete", stale], capture_output=True, check=False)
