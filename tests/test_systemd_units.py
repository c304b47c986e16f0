"""The systemd units shipped in examples/systemd: what docs/operations.md shows is what is
shipped, and ``systemd-analyze verify`` finds nothing to say about them."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from cyclone_core.testing import unavailable

ROOT = Path(__file__).resolve().parent.parent
UNITS = ROOT / "examples" / "systemd"
NAMES = ("cyclone-master.service", "cyclone-controller@.service")


def _documented_units() -> dict[str, str]:
    """The ``ini`` blocks of docs/operations.md that start with ``# /etc/systemd/system/NAME``."""
    text = (ROOT / "docs" / "operations.md").read_text()
    blocks = re.findall(r"^```ini\n(# /etc/systemd/system/(\S+)\n.*?)^```$", text, re.MULTILINE | re.DOTALL)
    return {name: block for block, name in blocks}


def test_the_docs_show_the_shipped_units() -> None:
    documented = _documented_units()
    assert sorted(documented) == sorted(NAMES)
    for name in NAMES:
        assert documented[name] == (UNITS / name).read_text(), name


@pytest.mark.parametrize("name", NAMES)
def test_the_shipped_units_are_notify_units_that_restart_on_failure_only(name: str) -> None:
    service = _section((UNITS / name).read_text(), "Service")
    assert service["Type"] == "notify"
    assert service["NotifyAccess"] == "main"
    assert service["Restart"] == "on-failure"
    assert service["RestartPreventExitStatus"] == "2"  # a configuration error or a refusal
    assert service["KillMode"] == "mixed"
    assert int(service["WatchdogSec"].removesuffix("s")) >= 10
    # Above the drain: the controller's drain_timeout and master_timeout (30 + 20 s), the
    # master's drain and delivery timeouts (60 + 30 s).
    assert int(service["TimeoutStopSec"]) > (50 if "controller" in name else 90)


@pytest.mark.parametrize("name", NAMES)
def test_systemd_analyze_verifies_the_units(name: str, tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    cyclone = shutil.which("cyclone")
    if analyze is None:
        unavailable("systemd-analyze is not installed (Debian package systemd)")
    assert cyclone is not None, "the cyclone command is not installed"
    # verify checks that ExecStart's program exists: the installed one here.
    unit = tmp_path / name
    unit.write_text((UNITS / name).read_text().replace("/usr/local/bin/cyclone", cyclone))
    done = subprocess.run([analyze, "verify", str(unit)], check=False, capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stdout + done.stderr) == (0, ""), done.stdout + done.stderr


def _section(text: str, name: str) -> dict[str, str]:
    """The ``KEY=VALUE`` lines of section ``[name]`` of a unit file."""
    section = text.split(f"[{name}]\n", 1)[1].split("\n[", 1)[0]
    return dict(line.split("=", 1) for line in section.splitlines() if line and not line.startswith("#"))
