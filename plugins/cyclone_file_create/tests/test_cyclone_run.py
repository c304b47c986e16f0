"""The first job a new user runs: ``cyclone run --generator file-create ...``, end to end
(master, controller, worker processes, the default sqlite sink).  The Lustre side is tested
in-process in test_lustre.py; one run through the engine is enough here."""

from __future__ import annotations

import json
import sqlite3
import subprocess

RESULTS = "cyclone-results.sqlite"


def cyclone_run(cwd, *options: str) -> dict:
    command = ["cyclone", "run", "--config", "cyclone.toml", "--generator", "file-create", "--workers", "2"]
    proc = subprocess.run(
        [*command, "--json", *options],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode in (0, 1), proc.stderr
    return json.loads(proc.stdout)


def stored(cwd) -> dict[str, tuple[str, dict]]:
    with sqlite3.connect(cwd / RESULTS) as db:
        rows = db.execute("SELECT key, status, payload FROM results").fetchall()
    return {key: (status, json.loads(payload)) for key, status, payload in rows}


def test_plain_directory_one_shot(tmp_path) -> None:
    checked = tmp_path / "scratch"
    checked.mkdir()
    # The controller's own settings: the directories its checks may use.
    (tmp_path / "cyclone.toml").write_text(f"[controller.local.lustre]\nroots = [{json.dumps(str(checked))}]\n")
    summary = cyclone_run(tmp_path, "-g", f"path={checked}", "-g", "rounds=1")
    assert (summary["succeeded"], summary["failed"], summary["generator_error"]) == (1, 0, None)
    status, payload = stored(tmp_path)["plain"]
    assert status == "ok"
    assert (payload["check"], payload["files"]) == ("ok", 10)
    assert list(checked.iterdir()) == []
