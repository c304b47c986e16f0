"""A real single-node Slurm cluster for the batch-script tests: scripts/slurm-up starts munged,
slurmctld and slurmd once per test session, scripts/slurm-down stops them at the end."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # so that tests can import slurm_support

from slurm_support import Slurm

from cyclone_core.testing import unavailable

SCRIPTS = Path(__file__).parent.parent.parent / "scripts"


@pytest.fixture(scope="session")
def slurm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Slurm]:
    """A single-node Slurm cluster for the whole session (started once, stopped at the end)."""
    if os.geteuid() != 0:
        pytest.skip("the Slurm daemons run as root: run the Slurm tests as root")
    missing = [p for p in ("slurmctld", "slurmd", "munged", "sbatch", "squeue") if shutil.which(p) is None]
    if missing:
        unavailable(
            f"Slurm is not installed ({', '.join(missing)} missing; Debian: slurmctld slurmd slurm-client munge)"
        )
    directory = tmp_path_factory.mktemp("slurm")
    try:
        started = subprocess.run(
            [str(SCRIPTS / "slurm-up"), str(directory)], capture_output=True, text=True, timeout=120, check=False
        )
        if started.returncode != 0:
            pytest.fail(f"scripts/slurm-up: {started.stderr.strip()}")
        env = {key: value for key, value in os.environ.items() if not key.startswith(("SLURM_", "CYCLONE_"))}
        yield Slurm({**env, "SLURM_CONF": started.stdout.strip()})
    finally:
        subprocess.run([str(SCRIPTS / "slurm-down"), str(directory)], timeout=120, check=False)
