"""A controller's defaults from the ``SLURM_*`` environment (cyclone_core.slurm), and the
``cyclone controller`` command taking them only where its options and configuration are silent."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest

from cyclone_core.errors import UsageError
from cyclone_core.settings import ControllerSettings
from cyclone_core.slurm import allocation_id, allocation_workers, controller_settings
from cyclone_core.testing import free_port, wait_until

#: What srun gives task 1 of step 0 of job 4711, with --cpus-per-task=3 on a node of 8 CPUs.
SRUN_TASK = {
    "SLURM_JOB_ID": "4711",
    "SLURM_STEP_ID": "0",
    "SLURM_PROCID": "1",
    "SLURM_CPUS_PER_TASK": "3",
    "SLURM_CPUS_ON_NODE": "8",
}


def test_a_task_of_a_step_is_named_after_its_job_step_and_rank() -> None:
    assert allocation_id(SRUN_TASK, "node07") == "node07-4711.0.1"
    assert allocation_id({**SRUN_TASK, "SLURM_STEP_ID": "2", "SLURM_PROCID": "0"}, "node07") == "node07-4711.2.0"


@pytest.mark.parametrize("missing", ["SLURM_JOB_ID", "SLURM_STEP_ID", "SLURM_PROCID"])
def test_outside_a_job_step_there_is_no_allocation_id(missing: str) -> None:
    # The batch script itself has SLURM_JOB_ID and SLURM_PROCID but no step: it may start several.
    env = {key: value for key, value in SRUN_TASK.items() if key != missing}
    assert allocation_id(env, "node07") is None


def test_workers_follow_the_cpus_per_task_else_the_cpus_on_the_node() -> None:
    assert allocation_workers(SRUN_TASK) == 3
    assert allocation_workers({"SLURM_CPUS_ON_NODE": "8"}) == 8
    assert allocation_workers({"SLURM_CPUS_PER_TASK": "", "SLURM_CPUS_ON_NODE": "8"}) == 8
    assert allocation_workers({}) is None


def test_unset_settings_take_the_allocation() -> None:
    settings = controller_settings(ControllerSettings(master="tcp://head01:5678"), SRUN_TASK, "node07")
    assert (settings.id, settings.workers, settings.master) == ("node07-4711.0.1", 3, "tcp://head01:5678")


def test_what_is_set_wins_over_the_allocation() -> None:
    settings = ControllerSettings(id="probe-1", workers=2)
    assert controller_settings(settings, SRUN_TASK, "node07") == settings


def test_outside_slurm_nothing_changes() -> None:
    settings = ControllerSettings()
    assert controller_settings(settings, {"PATH": "/usr/bin"}, "node07") is settings


@pytest.mark.parametrize(("name", "value"), [("SLURM_CPUS_PER_TASK", "two"), ("SLURM_PROCID", "-1")])
def test_a_value_slurm_would_not_write_is_one_line_naming_the_variable(name: str, value: str) -> None:
    with pytest.raises(UsageError, match=rf"^{name}='{value}' in the environment is not a whole number$"):
        controller_settings(ControllerSettings(), {**SRUN_TASK, name: value}, "node07")


def _started_line(tmp_path: Path, args: list[str], env: dict[str, str]) -> str:
    """Start ``cyclone controller`` (its master never answers), return its "started" log line,
    then drain it with SIGTERM."""
    log = tmp_path / "controller.log"
    clean = {key: value for key, value in os.environ.items() if not key.startswith(("SLURM_", "CYCLONE_"))}
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    with log.open("wb") as out:
        process = subprocess.Popen(
            ["cyclone", "controller", "--insecure", "--master", endpoint, *args],
            env={**clean, **env},
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=tmp_path,
        )
    try:
        line = wait_until(
            lambda: next((x for x in log.read_text().splitlines() if " started: " in x), None),
            60,
            "the controller's start line",
        )
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0, log.read_text()
        return line
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_the_controller_command_lets_its_options_and_configuration_win(tmp_path: Path) -> None:
    # What it takes from the allocation where they are silent: tests/slurm/test_sbatch.py.
    (tmp_path / "controller.toml").write_text("[controller]\nworkers = 1\n")
    line = _started_line(tmp_path, ["--config", "controller.toml", "--id", "probe-1"], SRUN_TASK)
    assert "controller probe-1 started: 1 worker," in line
