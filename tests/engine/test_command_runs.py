"""``command`` tasks in whole runs: real scripts, real controllers, real kills."""

from __future__ import annotations

import json
import os
from pathlib import Path

from engine_support import alive

from cyclone_core.testing import run_cluster, wait_until

SIMULATE = """#!/bin/sh
# simulate ALPHA SEED: fails for seeds divisible by 7
echo "alpha=$1 seed=$2 task=$CYCLONE_TASK_ID"
echo "cyclone-metric sim_score $(( $2 * 3 )) alpha=$1"
if [ $(( $2 % 7 )) -eq 0 ]; then
    echo "seed $2: diverged" >&2
    exit 3
fi
"""


def script(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.write_text(text)
    path.chmod(0o755)
    return path


def test_a_sweep_of_two_thousand_commands_gives_every_result_once_with_its_parameters(tmp_path: Path) -> None:
    simulate = script(tmp_path, "simulate", SIMULATE)
    run = run_cluster(
        "sweep",
        {"argv": [str(simulate), "{alpha}", "{seed}"], "grid": {"alpha": [0.1, 0.2], "seed": "1-1000"}},
        directory=tmp_path,
    )
    assert len(run.results) == 2000
    assert run.summary["submitted"] == 2000
    by_key = {result["key"]: result for result in run.results}
    assert len(by_key) == 2000  # every point once
    for alpha in (0.1, 0.2):
        for seed in range(1, 1001):
            result = by_key[f"alpha={alpha},seed={seed}"]
            payload = result["payload"]
            assert payload["params"] == {"alpha": alpha, "seed": seed}
            assert payload["stdout"].startswith(f"alpha={alpha} seed={seed} task={result['task_id']}\n")
            assert result["metrics"][0]["value"] == seed * 3
            assert result["metrics"][0]["labels"] == {"alpha": str(alpha)}
            if seed % 7:
                assert (result["status"], payload["exit_code"], result["error"]) == ("ok", 0, None)
            else:
                assert (result["status"], payload["exit_code"]) == ("failed", 3)
                assert result["error"] == f"exit code 3: seed {seed}: diverged"
    assert run.summary["failed"] == 2 * (1000 // 7)
    assert run.exit_code == 1


def test_a_hanging_command_is_killed_with_its_children_at_its_timeout(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    hang = script(
        tmp_path,
        "hang",
        f"#!/bin/sh\nsleep 300 &\necho $! >> {pids}\nsetsid sleep 300 </dev/null >/dev/null 2>&1 &\n"
        f"echo $! >> {pids}\necho $$ >> {pids}\nwait\n",
    )
    run = run_cluster(
        "sweep",
        {"argv": [str(hang)], "grid": {"n": [1]}, "timeout": 1.0},
        directory=tmp_path,
        master={"max_crash_retries": 0},
    )
    (result,) = run.results
    assert result["status"] == "quarantined"
    assert result["error"].endswith("last: timed out after 1.0 s")
    started = [int(pid) for pid in pids.read_text().split()]
    assert len(started) == 3
    for pid in started:
        wait_until(lambda pid=pid: not alive(pid), what=f"process {pid} of the hung command to be killed")


def test_a_command_that_forks_a_daemon_leaves_nothing_running(tmp_path: Path) -> None:
    pid_file = tmp_path / "daemon.pid"
    daemonize = script(
        tmp_path,
        "daemonize",
        f"#!/bin/sh\n( setsid sh -c 'sleep 300 & echo $! > {pid_file}; wait' </dev/null >/dev/null 2>&1 & )\n"
        f"while [ ! -s {pid_file} ]; do sleep 0.01; done\necho started\n",
    )
    run = run_cluster("sweep", {"argv": [str(daemonize)], "grid": {"n": [1]}}, directory=tmp_path)
    (result,) = run.results
    assert result["status"] == "ok", result["error"]
    assert result["payload"]["stdout"] == "started\n"
    daemon = int(pid_file.read_text())
    wait_until(lambda: not alive(daemon), what="the daemon to be killed")


def test_a_program_outside_the_allowlist_is_refused_on_the_controller_in_one_line(tmp_path: Path) -> None:
    allowed = script(tmp_path, "allowed", "#!/bin/sh\necho fine\n")
    marker = tmp_path / "marker"
    tasks = tmp_path / "tasks.json"
    tasks.write_text(
        json.dumps(
            [
                {"type": "command", "key": "ok", "args": {"argv": [str(allowed)]}},
                {"type": "command", "key": "refused", "args": {"argv": ["touch", str(marker)]}},
            ]
        )
    )
    run = run_cluster(
        "tasks-file",
        {"path": str(tasks)},
        directory=tmp_path,
        local={"command": {"executables": [str(allowed)]}},
    )
    results = {result["key"]: result for result in run.results}
    assert results["ok"]["status"] == "ok"
    touch = os.path.realpath(str(Path("/usr/bin/touch") if Path("/usr/bin/touch").exists() else Path("/bin/touch")))
    assert results["refused"]["status"] == "failed"
    assert results["refused"]["error"] == (
        f"argv[0] 'touch' ({touch}) is not an allowed executable on this controller "
        "(controller.local.command.executables)"
    )
    assert not marker.exists()
