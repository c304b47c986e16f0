"""The shipped batch script, examples/slurm/cyclone.sbatch, submitted to a real Slurm cluster:
a job runs every task once; scancel drains it, and a resubmission resumes from the journal."""

from __future__ import annotations

import collections
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from slurm_support import Slurm

from cyclone_core.testing import free_port, wait_until

SBATCH = Path(__file__).parent.parent.parent / "examples" / "slurm" / "cyclone.sbatch"
HOST = os.uname().nodename

#: Two controllers of one worker each: the node's two CPUs.
ALLOCATION = ("--ntasks=2", "--cpus-per-task=1", "--time=5")


def results(path: Path) -> collections.Counter[str]:
    """How many times each task key is in the JSONL sink's file."""
    if not path.exists():
        return collections.Counter()
    return collections.Counter(json.loads(line)["key"] for line in path.read_text().splitlines() if line.strip())


def submit(slurm: Slurm, tmp_path: Path, args: list[str]) -> int:
    env = {"CYCLONE_JOB_DIR": str(tmp_path / "job"), "CYCLONE_PORT": str(free_port())}
    return slurm.sbatch(SBATCH, ALLOCATION, args, tmp_path, env)


def output(tmp_path: Path, job: int) -> str:
    return (tmp_path / f"cyclone-{job}.out").read_text(errors="replace")


@pytest.fixture
def cancel_at_end(slurm: Slurm) -> Iterator[list[int]]:
    """Job ids to cancel when the test ends, whatever happened."""
    jobs: list[int] = []
    yield jobs
    for job in jobs:
        slurm.run("scancel", str(job))


def test_a_job_runs_every_task_once_with_a_controller_per_task(
    slurm: Slurm, tmp_path: Path, cancel_at_end: list[int]
) -> None:
    sink = tmp_path / "results.jsonl"
    job = submit(slurm, tmp_path, ["-g", "count=3000", "--sink", "jsonl", "-s", f"jsonl.path={sink}"])
    cancel_at_end.append(job)
    state = slurm.wait_final(job, 60)
    log = output(tmp_path, job)
    assert state == "COMPLETED", log
    assert results(sink) == collections.Counter({str(key): 1 for key in range(3000)})
    # Each srun task's controller has the id of its task and its CPUs as workers.
    for task in (0, 1):
        assert f"controller {HOST}-{job}.0.{task} joined ({HOST}, pid " in log
    assert log.count(", 1 worker)") == 2, log
    assert "the master exited with code 0" in log
    wait_until(lambda: not slurm.processes(job), 30, f"the processes of job {job} to end")
    assert (tmp_path / "job" / "keys" / "controller.secret").exists()  # made by the first job


def test_scancel_drains_the_job_and_a_resubmission_resumes_from_the_journal(
    slurm: Slurm, tmp_path: Path, cancel_at_end: list[int]
) -> None:
    sink = tmp_path / "results.jsonl"
    args = ["-g", "count=800", "-g", "task=sleep", "-g", "args.seconds=0.01"]
    args += ["--sink", "jsonl", "-s", f"jsonl.path={sink}"]
    job = submit(slurm, tmp_path, args)
    cancel_at_end.append(job)
    wait_until(lambda: sum(results(sink).values()) >= 50, 60, "the first 50 results")
    slurm.run("scancel", str(job))
    assert slurm.wait_final(job, 60) == "CANCELLED"
    wait_until(lambda: not slurm.processes(job), 30, f"the processes of job {job} to end")
    log = output(tmp_path, job)
    assert "SIGTERM: draining the master and its controllers" in log
    assert "the master exited with code 0" in log, log  # it drained: a SIGKILL leaves no such line
    first = results(sink)
    assert 50 <= len(first) < 800, log
    assert max(first.values()) == 1

    job = submit(slurm, tmp_path, args)
    cancel_at_end.append(job)
    assert slurm.wait_final(job, 60) == "COMPLETED", output(tmp_path, job)
    assert "resuming run" in output(tmp_path, job)
    assert results(sink) == collections.Counter({str(key): 1 for key in range(800)})


def test_the_docs_and_the_script_name_the_same_settings() -> None:
    script = SBATCH.read_text()
    read = set(re.findall(r"\$\{(CYCLONE_[A-Z_]+):-", script))
    described = set(re.findall(r"^#   (CYCLONE_[A-Z_]+) ", script, re.MULTILINE))
    operations = (SBATCH.parent.parent.parent / "docs" / "operations.md").read_text()
    documented = set(re.findall(r"^\| `(CYCLONE_[A-Z_]+)` \|", operations, re.MULTILINE))
    assert read == described == documented == {"CYCLONE_JOB_DIR", "CYCLONE_KEYS", "CYCLONE_PORT", "CYCLONE_MASTER_HOST"}
