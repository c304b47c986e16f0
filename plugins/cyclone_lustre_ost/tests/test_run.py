"""Through the real engine: ``cyclone run`` with the plugin's generators and the stand-in tools."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(shutil.which("cyclone") is None, reason="the cyclone command is not installed")


def cyclone_run(tmp_path: Path, generator: str, options: dict[str, object], config: str = "") -> tuple[int, list[dict]]:
    """``cyclone run`` with ``config`` as its file (the controller's local settings)."""
    out = tmp_path / "results.jsonl"
    out.unlink(missing_ok=True)  # this run's results only
    (tmp_path / "cyclone.toml").write_text(config)
    command = ["cyclone", "run", "--config", "cyclone.toml", "--generator", generator, "--workers", "2"]
    command += ["--sink", "jsonl"]
    command += ["-s", f"jsonl.path={out}"]
    for key, value in options.items():
        command += ["-g", f"{key}={value}"]
    proc = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=180, check=False)
    assert proc.returncode in (0, 1), proc.stderr
    return proc.returncode, [json.loads(line) for line in out.read_text().splitlines()]


def test_one_round_of_probes(lustre_standin, tmp_path: Path) -> None:
    # Lustre 2.12: no strict "lfs setstripe -o", so the allocator's detour shows as misplaced.
    fs = lustre_standin(osts=[0, 1, 2, 10], inactive=[2], place_on={1: 0}, version="2.12")
    options = {"path": fs.mount, "lfs_bin": fs.lfs_bin, "rounds": 1, "total_size": "1M", "osts": "0-2,10"}
    status, rows = cyclone_run(tmp_path, "lustre-ost-io", options, fs.toml())
    assert status == 1  # two probes failed
    by_key = {row["key"]: row for row in rows}
    assert sorted(by_key) == ["OST0000/r1", "OST0001/r1", "OST0002/r1", "OST000a/r1"]
    assert by_key["OST000a/r1"]["status"] == "ok"
    assert {m["name"] for m in by_key["OST000a/r1"]["metrics"]} >= {
        "cyclone_lustre_ost_write_bytes_per_second",
        "cyclone_lustre_ost_read_bytes_per_second",
    }
    assert by_key["OST0002/r1"]["error"] == "OST0002 is inactive"
    assert by_key["OST0001/r1"]["error"] == "object placed on OST0000, not OST0001"
    assert list(fs.mount.iterdir()) == []


def test_plain_directory_one_shot_only_under_the_controllers_roots(tmp_path: Path) -> None:
    target = tmp_path / "data"
    target.mkdir()
    options: dict[str, object] = {"path": target, "rounds": 1, "total_size": "1M"}
    local = f"[controller.local.lustre]\nroots = [{json.dumps(str(target))}]\n"
    status, rows = cyclone_run(tmp_path, "lustre-ost-io", options, local)
    assert status == 0
    assert [row["payload"]["mode"] for row in rows] == ["plain"]
    # No roots: the controller refuses to touch any path.
    status, rows = cyclone_run(tmp_path, "lustre-ost-io", options)
    assert status == 1
    assert [row["error"] for row in rows] == [
        f"{target}: refused: this controller runs no Lustre task on a path (controller.local.lustre.roots is empty)"
    ]


def test_migration_until_done(lustre_standin, tmp_path: Path) -> None:
    fs = lustre_standin(osts=3, size_kb=1000, used_kb={0: 900, 1: 100, 2: 950})
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    tools = fs.tools()
    lines = []
    for n in range(4):
        tools.setstripe(str(fs.mount / f"f{n}"), 0)
        lines.append(f"0 {fs.mount / f'f{n}'}")
    (inbox / "drain.input").write_text("\n".join(lines) + "\n")
    options = {
        "path": fs.mount,
        "input_dir": inbox,
        "lfs_bin": fs.lfs_bin,
        "source_threshold": 80,
        "target_threshold": 50,
        "until_done": "true",
    }
    status, rows = cyclone_run(tmp_path, "lustre-ost-migrate", options, fs.toml())
    assert status == 0
    assert sorted(row["payload"]["outcome"] for row in rows) == ["success"] * 4
    assert all(fs.layout(fs.mount / f"f{n}") == [1] for n in range(4))
    assert (inbox / "drain.done").exists()
