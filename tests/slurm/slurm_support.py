"""Helpers of the Slurm tests: the cluster's commands and the processes of a job."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Sequence
from pathlib import Path

import attrs
import pytest

from cyclone_core.testing import wait_until

#: Job states a job does not leave (squeue --states=all); COMPLETING is not one of them.
FINAL_STATES = frozenset(
    {"COMPLETED", "CANCELLED", "FAILED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "PREEMPTED", "BOOT_FAIL", "DEADLINE"}
)


@attrs.frozen
class Slurm:
    """The running cluster: the environment its commands need, and a few of them."""

    env: dict[str, str]

    def run(self, *args: str, cwd: Path | None = None) -> str:
        """A Slurm command's output; a failure fails the test with what it said."""
        done = subprocess.run(args, env=self.env, cwd=cwd, capture_output=True, text=True, timeout=60, check=False)
        if done.returncode != 0:
            pytest.fail(f"{' '.join(args)}: exit code {done.returncode}: {done.stderr.strip()}")
        return done.stdout

    def sbatch(self, script: Path, options: Sequence[str], args: Sequence[str], cwd: Path, env: dict[str, str]) -> int:
        """Submit ``script`` with sbatch ``options`` and the script's ``args``; the job id.
        ``env`` is added to the job's environment (sbatch exports the caller's)."""
        done = subprocess.run(
            ["sbatch", "--parsable", *options, str(script), *args],
            env={**self.env, **env},
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if done.returncode != 0:
            pytest.fail(f"sbatch {script}: exit code {done.returncode}: {done.stderr.strip()}")
        return int(done.stdout.strip().split(";")[0])

    def state(self, job: int) -> str:
        """The job's state: PENDING, RUNNING, COMPLETING, COMPLETED, CANCELLED, ..."""
        return self.run("squeue", "--noheader", "--states=all", f"--jobs={job}", "--format=%T").strip()

    def wait_final(self, job: int, timeout: float) -> str:
        """Wait until the job has ended, processes and all; its final state."""
        return str(
            wait_until(lambda: (state := self.state(job)) in FINAL_STATES and state, timeout, f"job {job} to end")
        )

    @staticmethod
    def processes(job: int) -> list[str]:
        """Command lines of the live processes of Slurm job ``job`` (their SLURM_JOB_ID says so)."""
        found = []
        marker = f"SLURM_JOB_ID={job}".encode()
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                environ = Path(f"/proc/{entry}/environ").read_bytes()
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            except OSError:
                continue  # gone meanwhile
            if marker in environ.split(b"\0"):
                found.append(cmdline.replace(b"\0", b" ").decode(errors="replace").strip() or f"[pid {entry}]")
        return found
