"""``cyclone status`` for a cluster: a real master, real controllers each on a host of its own
name (a UTS namespace per controller, so the name is what the controller itself finds), one of
them killed; the status folds the hosts into nodesets, names the lost and the missing ones,
and breaks its lines only between phrases on narrow terminals."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest
from engine_support import FAST_CONTROLLER, FAST_MASTER, descendants, toml, wait_gone

from cyclone_core.engine.status import fetch_status, fold, wrap
from cyclone_core.testing import free_port, unavailable, wait_until

#: Controllers per host name; the one on node07 is killed.
HOSTS = {"node01": 1, "node02": 1, "node03": 1, "node05": 2, "node07": 1}


@attrs.define
class Cluster:
    endpoint: str
    procs: dict[str, list[subprocess.Popen[bytes]]]

    def status(self, *args: str, columns: int = 80) -> str:
        """What ``cyclone status`` prints to a pipe ``columns`` wide."""
        done = subprocess.run(
            ["cyclone", "status", "--insecure", "--master", self.endpoint, *args],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            env={**os.environ, "COLUMNS": str(columns)},
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    def snapshot(self) -> dict[str, Any]:
        return fetch_status(self.endpoint, 5.0)


def _popen(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    """``args`` in a session of its own, in the directory of ``log`` (its sink's file goes there)."""
    with log.open("wb") as out:
        return subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, cwd=log.parent)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("controllers on hosts of their own names need root and unshare (util-linux) for UTS namespaces")
    probe = subprocess.run(["unshare", "--uts", "true"], capture_output=True, text=True, timeout=30, check=False)
    if probe.returncode != 0:
        unavailable(f"unshare --uts fails here (no CAP_SYS_ADMIN?): {probe.stderr.strip()}")
    tmp = tmp_path_factory.mktemp("status-profile")
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    config = tmp / "cyclone.toml"
    config.write_text(
        toml(
            {
                "master": {"bind": endpoint, "insecure": True, **FAST_MASTER},
                "controller": {"master": endpoint, "insecure": True, "workers": 1, **FAST_CONTROLLER},
                "generator": {
                    "name": "benchmark",
                    "options": {"count": 1_000_000, "task": "sleep", "args": {"seconds": 0.2}},
                },
            }
        )
    )
    procs: dict[str, list[subprocess.Popen[bytes]]] = {"master": []}
    try:
        procs["master"].append(_popen(["cyclone", "master", "--config", str(config)], tmp / "master.log"))
        for host, count in HOSTS.items():
            procs[host] = [
                _popen(
                    # unshare and sh exec: the controller is the process started, on a host called `host`.
                    [
                        "unshare",
                        "--uts",
                        "sh",
                        "-c",
                        f'hostname {host} && exec cyclone controller --config "$0"',
                        config,
                    ],
                    tmp / f"{host}-{n}.log",
                )
                for n in range(count)
            ]
        cluster = Cluster(endpoint, procs)
        wait_until(
            lambda: _answers(cluster) and len(cluster.snapshot()["controllers"]) == 6, 90, "6 controllers to register"
        )
        procs["node07"][0].kill()
        wait_until(lambda: cluster.snapshot()["lost_controllers"], 30, "the master to declare node07's controller lost")
        yield cluster
    finally:
        for group in procs.values():
            for proc in group:
                left = descendants(proc.pid) if proc.poll() is None else []
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(30)
                wait_gone(left, "the cluster's processes")


def _answers(cluster: Cluster) -> bool:
    try:
        cluster.snapshot()
    except Exception:  # not listening yet
        return False
    return True


def test_the_master_names_lost_controllers_with_their_hosts(cluster: Cluster) -> None:
    snapshot = cluster.snapshot()
    assert sorted(ctl["host"] for ctl in snapshot["controllers"]) == ["node01", "node02", "node03", "node05", "node05"]
    (lost,) = snapshot["lost_controllers"]
    assert lost["id"].startswith("node07-")
    assert lost["host"] == "node07"
    assert lost["reason"].startswith("silent for "), lost


def test_status_by_host_folds_hosts_and_names_the_lost_and_the_missing(cluster: Cluster) -> None:
    out = cluster.status("--expect", "node[01-08]")  # --expect implies the per-host view
    lines = out.splitlines()
    start = lines.index("controllers (5) on 4 hosts")
    assert re.fullmatch(r"node\[01-03\]  3 controllers, 3 workers, \d+ in flight", lines[start + 1]), out
    assert re.fullmatch(r"node05  2 controllers, 2 workers, \d+ in flight", lines[start + 2]), out
    assert lines[start + 3 : start + 5] == ["lost: node07  1 controller", "missing: node[04,06-08]"], out
    _check_phrases(out, 80)
    as_json = json.loads(cluster.status("--expect", "node[01-03,05-06]", "--json"))
    assert as_json["expect"] == {"missing": "node06", "not_expected": ""}


@pytest.mark.parametrize(
    ("columns", "args"), [(80, ()), (60, ("--by-host",)), (60, ("--by-controller", "--expect", "node[01-08]"))]
)
def test_status_lines_break_between_phrases_on_a_narrow_terminal(
    cluster: Cluster, columns: int, args: tuple[str, ...]
) -> None:
    out = cluster.status(*args, columns=columns)
    _check_phrases(out, columns)
    if "--by-host" in args:
        assert re.search(r"^node\[01-03\]  3 controllers,", out, re.MULTILINE), out
        assert re.search(r"^lost: node07  1 controller$", out, re.MULTILINE), out
        assert "missing:" not in out
    else:  # few controllers: a row each, the lost one named under the table
        assert re.search(r"^node05-\d+ +node05 ", out, re.MULTILINE), out
        assert "in flight  last seen" in out
        assert re.search(r"^lost \(1\): node07-\d+ \(lost [\d.]+ s ago: silent for", out, re.MULTILINE), out
        assert ("missing: node[04,06-08]" in out.splitlines()) == ("--expect" in args), out


def _check_phrases(out: str, columns: int) -> None:
    """Every line fits in ``columns``, and no phrase of the summary is broken."""
    lines = out.splitlines()
    assert all(len(line.rstrip()) <= columns for line in lines), out
    text = "\n".join(line.strip() for line in lines)
    phrases = [
        r"tasks: \d+ submitted",
        r"\d+ queued",
        r"\d+ in flight",
        r"\d+ quarantined",
        r"\(\d+ attempts? timed out",
        r"\d+ crashed",
        r"\d+ lost\);",
        r"[\d.]+ tasks/s",
        r"up \d+m \d\ds",
    ]
    for phrase in phrases:
        assert re.search(phrase, text), f"{phrase!r} broken or missing at {columns} columns:\n{out}"


def test_wrap_breaks_only_between_pieces() -> None:
    pieces = ["tasks: 96012 submitted,", "12 queued,", "64 in flight,", "2 quarantined"]
    assert wrap(pieces, 40) == ["tasks: 96012 submitted, 12 queued,", "  64 in flight, 2 quarantined"]
    assert wrap(["node[01-32] ", "32 controllers,"], 80) == ["node[01-32]  32 controllers,"]
    assert wrap(["x" * 50, "y"], 20, indent=4) == ["x" * 50, "    y"]  # too long for a line: its own


def test_fold_makes_nodesets_of_host_names() -> None:
    assert (
        fold(["node02", "node01", "node03", "node10.ib", "node11.ib", "login1"]) == "login1,node[01-03],node[10-11].ib"
    )
    assert fold(["node01", "node01"]) == "node01"
