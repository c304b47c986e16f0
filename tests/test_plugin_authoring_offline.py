"""docs/plugin-authoring.md, section 1, for real: cyclone-core is on no package index, so a
plugin author installs it from a wheel built from the checkout, in a clean virtual environment
(no system site-packages), without an index: ``pip install --no-index --find-links``.

Slow (it builds and downloads the wheels of cyclone-core's dependencies, then makes a virtual
environment: about 90 s here), so it runs only in CI, where ``CI`` is set.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(not os.environ.get("CI"), reason="slow (about 90 s): runs in CI only")

CHECKOUT = Path(__file__).resolve().parent.parent


def _run(*command: str | Path, cwd: Path, env: dict[str, str]) -> str:
    done = subprocess.run(
        [str(part) for part in command], cwd=cwd, env=env, capture_output=True, text=True, timeout=600, check=False
    )
    assert done.returncode == 0, f"{' '.join(map(str, command))} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def test_the_documented_offline_install_of_cyclone_core_and_a_new_plugin(tmp_path: Path) -> None:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("CYCLONE_", "PIP_", "PYTHON", "VIRTUAL_ENV"))
    }
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    # The checkout as a user has it (a copy: building writes build/ and *.egg-info beside the sources).
    checkout = tmp_path / "cyclone"
    checkout.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(CHECKOUT / name, checkout / name)
    shutil.copytree(CHECKOUT / "cyclone_core", checkout / "cyclone_core", ignore=shutil.ignore_patterns("__pycache__"))

    # With network access, in the checkout: every wheel needed.
    pip = [sys.executable, "-m", "pip"]
    _run(*pip, "wheel", "--quiet", ".", "-w", "wheels", cwd=checkout, env=env)
    _run(*pip, "wheel", "--quiet", "setuptools>=64", "pytest>=8", "-w", "wheels", cwd=checkout, env=env)
    wheels = checkout / "wheels"
    assert (wheels / "cyclone_core-0.1.0-py3-none-any.whl").is_file()

    # Without: a clean virtual environment that sees nothing but those wheels.
    venv = tmp_path / "venv"
    _run(sys.executable, "-m", "venv", venv, cwd=tmp_path, env=env)
    bin_dir = venv / "bin"
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    _run(
        bin_dir / "pip",
        "install",
        "--quiet",
        "--no-index",
        "--find-links",
        wheels,
        "cyclone-core",
        cwd=tmp_path,
        env=env,
    )
    _run(bin_dir / "cyclone", "plugin", "new", "disk-probe", cwd=tmp_path, env=env)
    plugin = tmp_path / "cyclone-disk-probe"
    _run(
        bin_dir / "pip",
        "install",
        "--quiet",
        "--no-index",
        "--find-links",
        wheels,
        "-e",
        ".[test]",
        cwd=plugin,
        env=env,
    )
    assert "4 passed" in _run(bin_dir / "python", "-m", "pytest", "-q", "-p", "no:cacheprovider", cwd=plugin, env=env)

    listing = json.loads(_run(bin_dir / "cyclone", "plugins", "list", "--json", cwd=plugin, env=env))
    entry = next(info for info in listing if info["plugin"] == "disk-probe")
    assert entry["status"] == "ok", entry
    # The virtual environment is its own: cyclone-core comes from the wheel, not this checkout.
    where = _run(bin_dir / "python", "-c", "import cyclone_core; print(cyclone_core.__file__)", cwd=tmp_path, env=env)
    assert where.startswith(str(venv)), where
