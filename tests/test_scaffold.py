"""``cyclone plugin new`` makes a plugin that installs, is discovered, and passes its own tests."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cyclone_core import UsageError
from cyclone_core.scaffold import PluginNames

NAME = "scaffold-check"


@pytest.fixture(scope="module")
def scaffolded(
    tmp_path_factory: pytest.TempPathFactory, run_cyclone: Any, pip_install: Any
) -> Iterator[tuple[Path, dict[str, str]]]:
    work = tmp_path_factory.mktemp("scaffold")
    target = work / "site"
    try:
        done = run_cyclone("plugin", "new", NAME, "--dir", str(work), env={"CYCLONE_LOAD_PLUGINS": "builtins"})
        assert done.returncode == 0, done.stderr
        project = work / f"cyclone-{NAME}"
        env = pip_install([project], target)
        yield project, {**env, "CYCLONE_LOAD_PLUGINS": f"builtins,{NAME}"}
    finally:
        shutil.rmtree(target, ignore_errors=True)  # uninstall


def test_the_new_plugin_is_discovered(run_cyclone: Any, scaffolded: tuple[Path, dict[str, str]]) -> None:
    _, env = scaffolded
    done = run_cyclone("plugins", "list", "--json", env={**env, "CYCLONE_STRICT_PLUGINS": "1"})
    assert done.returncode == 0, done.stderr
    rows = {row["plugin"]: row for row in json.loads(done.stdout)}
    row = rows[NAME]
    assert (row["distribution"], row["version"], row["status"]) == (f"cyclone-{NAME}", "0.1.0", "ok")
    assert (row["task_types"], row["generators"]) == ([NAME], [NAME])


def test_the_new_plugin_passes_its_own_tests(scaffolded: tuple[Path, dict[str, str]]) -> None:
    project, env = scaffolded
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        cwd=project,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "4 passed" in done.stdout


def test_the_new_plugin_is_clean_code(scaffolded: tuple[Path, dict[str, str]]) -> None:
    project, _ = scaffolded
    ruff = shutil.which("ruff")
    if ruff is None:
        pytest.skip("ruff is not installed")
    for command in (["check"], ["format", "--check"]):
        done = subprocess.run(
            [ruff, *command, "--no-cache", "."], cwd=project, capture_output=True, text=True, check=False, timeout=120
        )
        assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize(
    ("name", "names"),
    [
        ("disk-probe", PluginNames("disk-probe", "cyclone-disk-probe", "cyclone_disk_probe", "DiskProbe")),
        ("cyclone-ost2", PluginNames("ost2", "cyclone-ost2", "cyclone_ost2", "Ost2")),
    ],
)
def test_plugin_names(name: str, names: PluginNames) -> None:
    assert PluginNames.from_name(name) == names


@pytest.mark.parametrize("name", ["Disk", "disk_probe", "2disk", "disk--probe", "disk-", ""])
def test_bad_plugin_names_are_refused(name: str) -> None:
    with pytest.raises(UsageError, match="use lower-case letters, digits and single hyphens"):
        PluginNames.from_name(name)
