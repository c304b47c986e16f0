"""Shared fixtures of the core tests: running the real ``cyclone`` command and pip."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import pytest

RunCyclone = Callable[..., subprocess.CompletedProcess[str]]
PipInstall = Callable[[Iterable[Path], Path], dict[str, str]]


def _clean_env(extra: Mapping[str, str]) -> dict[str, str]:
    # Start from the caller's environment without any CYCLONE_* setting, so a developer's own
    # CYCLONE_LOAD_PLUGINS or CYCLONE_STRICT_PLUGINS cannot change what a test sees.
    env = {key: value for key, value in os.environ.items() if not key.startswith("CYCLONE_")}
    env["COLUMNS"] = "250"  # wide tables: no wrapped cells to match against
    env.update(extra)
    return env


@pytest.fixture(scope="session")
def run_cyclone() -> RunCyclone:
    """Run the installed ``cyclone`` console script: ``run_cyclone("plugins", "list", env={...})``."""
    executable = shutil.which("cyclone")
    assert executable is not None, "the cyclone console script is not installed (pip install -e .)"

    def run(
        *args: str, env: Mapping[str, str] | None = None, cwd: Path | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [executable, *args],
            env=_clean_env(env or {}),
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    return run


@pytest.fixture(scope="session")
def pip_install() -> PipInstall:
    """Install source trees with pip into ``target`` (a directory of the test's own, removed
    with it) and return the environment that makes Python see them.

    A private target instead of site-packages: a failed or killed test can never leave a
    deliberately broken plugin installed for every other process on the machine.
    """

    def install(sources: Iterable[Path], target: Path) -> dict[str, str]:
        build = target.parent / f"{target.name}-sources"
        copies = []
        for source in sources:  # build from copies: setuptools writes build/ and egg-info
            copies.append(build / source.name)
            shutil.copytree(source, copies[-1])
        command = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation"]
        done = subprocess.run(
            [*command, "--target", str(target), *map(str, copies)],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert done.returncode == 0, f"pip install failed:\n{done.stdout}\n{done.stderr}"
        return {"PYTHONPATH": os.pathsep.join(filter(None, [str(target), os.environ.get("PYTHONPATH", "")]))}

    return install
