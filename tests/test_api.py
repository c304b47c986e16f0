"""The Python API as a notebook uses it: start, map, iterate, leave; nothing left running."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

from cyclone_core import LocalCluster, Status, TaskSpec
from cyclone_core.builtins.tasks import SleepTask
from cyclone_core.testing import wait_until

NOTEBOOK = """
import json, os
from cyclone_core import CommandTask, LocalCluster

rows = [{"argv": ["sh", "-c", "echo cyclone-metric x $0; exit $(( $0 % 5 == 0 ))", str(n)]} for n in range(1, 41)]
with LocalCluster(workers=2) as cluster:
    seen = {}
    for result in cluster.map(CommandTask, rows, timeout=30):
        seen[result.key] = (result.status.value, result.metrics[0].value)
    first = cluster.summary

    # Leaving a loop early stops that run; the cluster runs the next one.
    sleeper = {"argv": ["sh", "-c", "sleep 300; true", os.environ["CYCLONE_TEST_MARK"]]}
    for result in cluster.map(CommandTask, [{"argv": ["true"]}] + [sleeper] * 6):
        break
    early = cluster.summary
    again = [r.status.value for r in cluster.run([CommandTask(argv=["true"])])]
print(json.dumps({"seen": seen, "first": first, "early": early, "again": again, "pid": os.getpid()}))
"""


def marked(mark: str) -> list[int]:
    """Pids of live processes whose command line or environment holds ``mark``."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                text = Path(f"/proc/{entry}/cmdline").read_bytes() + Path(f"/proc/{entry}/environ").read_bytes()
            except OSError:
                continue
            if mark.encode() in text:
                found.append(int(entry))
    return found


def test_a_notebook_maps_iterates_and_leaves_nothing_behind(tmp_path: Path) -> None:
    mark = f"cyclone-api-test-{uuid.uuid4().hex}"
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(NOTEBOOK)],
        cwd=tmp_path,
        env={**os.environ, "CYCLONE_TEST_MARK": mark},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert len(out["seen"]) == 40
    for n in range(1, 41):
        assert out["seen"][str(n - 1)] == ["failed" if n % 5 == 0 else "ok", float(n)]
    assert (out["first"]["succeeded"], out["first"]["failed"]) == (32, 8)
    assert out["early"]["interrupted"] is True
    assert out["early"]["succeeded"] == 1  # the sleeps were killed, not awaited
    assert out["again"] == ["ok"]
    # The results went to the default sink, where `cyclone results` finds them.
    assert (tmp_path / "cyclone-results.sqlite").exists()
    # Controllers, workers and the killed commands are all gone with the notebook's run.
    wait_until(lambda: not marked(mark), what="every process of the run to exit")


def test_run_takes_specs_and_reaps_its_processes_in_the_test_process(tmp_path: Path) -> None:
    config = tmp_path / "cyclone.toml"
    config.write_text(f'[sinks.jsonl]\npath = "{tmp_path / "results.jsonl"}"\n')
    with LocalCluster(workers=1, config=config) as cluster:
        results = list(cluster.run([TaskSpec(task=SleepTask(seconds=0), key=f"s{n}") for n in range(3)]))
    assert sorted(r.key or "" for r in results) == ["s0", "s1", "s2"]
    assert {r.status for r in results} == {Status.OK}
    assert cluster.summary is not None
    assert cluster.summary["succeeded"] == 3
    assert len((tmp_path / "results.jsonl").read_text().splitlines()) == 3


def test_a_script_without_the_main_guard_is_told_what_it_lacks(tmp_path: Path) -> None:
    script = tmp_path / "unguarded.py"
    script.write_text(
        "from cyclone_core import CommandTask, LocalCluster\n"
        "with LocalCluster(workers=1) as cluster:\n"
        "    print(len(list(cluster.map(CommandTask, [{'argv': ['true']}]))))\n"
    )
    done = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert last.endswith("must start its work under if __name__ == '__main__':, as with multiprocessing)"), last
