"""Temporary directories of ``cyclone run`` (its private socket, its journal, its controllers'
multiprocessing directories): gone after every exit but SIGKILL, and swept up by the next start
after a SIGKILL (only those whose process is gone).  Real processes, real signals, ``TMPDIR``
pointed at a directory of the test."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from cyclone_core.engine import tempdirs
from cyclone_core.testing import wait_until
from tests.engine.engine_support import FIXTURE_PLUGIN, Proc, alive, descendants, wait_gone

_OWNER = re.compile(r"cyclone-(run|journal|mp)-([0-9]+)-")


@pytest.fixture
def temp() -> Iterator[Path]:
    """The runs' TMPDIR: short, as a real one is (sockets go in it, and their paths are short)."""
    directory = Path(tempfile.mkdtemp(prefix="cyclone-test-"))
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def runs(tmp_path: Path, temp: Path) -> Iterator[list[Proc]]:
    """``cyclone run`` processes with ``TMPDIR`` at ``temp``; every one and its descendants killed afterwards."""
    procs: list[Proc] = []
    yield procs
    for proc in procs:
        left = descendants(proc.pid) if proc.popen.poll() is None else []
        proc.kill_group()
        for pid in left:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
        wait_gone(left, "the run's processes")


def start(runs: list[Proc], tmp_path: Path, temp: Path, *args: str) -> Proc:
    env = {
        **os.environ,
        "TMPDIR": str(temp),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(FIXTURE_PLUGIN), os.environ.get("PYTHONPATH")])),
    }
    sink = ["--sink", "probe", "-s", f"probe.path={tmp_path / f'results-{len(runs)}.jsonl'}"]
    runs.append(Proc(["run", "--workers", "1", *sink, *args], tmp_path / f"run-{len(runs)}.log", env))
    return runs[-1]


def kinds(temp: Path) -> dict[str, list[Path]]:
    found: dict[str, list[Path]] = {}
    for path in temp.iterdir():
        match = _OWNER.match(path.name)
        found.setdefault(match[1] if match else path.name, []).append(path)
    return found


def busy_run(runs: list[Proc], tmp_path: Path, temp: Path) -> Proc:
    """A run of sleeping tasks, once its three directories exist."""
    run = start(runs, tmp_path, temp, "-g", "count=100000", "-g", "task=sleep", "-g", "args.seconds=0.01")
    wait_until(lambda: {"run", "journal", "mp"} <= kinds(temp).keys(), 60, "the run's temporary directories")
    return run


def test_a_run_that_ends_leaves_nothing_in_the_temporary_directory(
    runs: list[Proc], tmp_path: Path, temp: Path
) -> None:
    run = start(runs, tmp_path, temp, "-g", "count=20")
    assert run.wait(120) == 0, run.output()
    assert list(temp.iterdir()) == []


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_run_stopped_by_a_signal_leaves_nothing(
    runs: list[Proc], tmp_path: Path, temp: Path, signum: signal.Signals
) -> None:
    run = busy_run(runs, tmp_path, temp)
    run.signal(signum)
    assert run.wait(120) == 1, run.output()
    assert "stopping gracefully" in run.output()
    assert list(temp.iterdir()) == []


def test_a_journal_with_undelivered_results_is_kept_and_never_swept(
    runs: list[Proc], tmp_path: Path, temp: Path
) -> None:
    down = tmp_path / "down"
    down.touch()
    run = start(runs, tmp_path, temp, "-g", "count=5", "-s", f"probe.down_while={down}")
    wait_until(lambda: "probe sink is down" in run.output(), 60, "the sink to fail")
    run.signal(signal.SIGINT)  # twice: stop at once, without waiting for the sink
    run.signal(signal.SIGINT)
    assert run.wait(60) == 1
    (kept,) = temp.iterdir()  # the socket's and the controller's directories are gone
    assert kept.name.startswith("cyclone-journal-kept-")
    assert re.search(
        f"[0-9]+ results? wait in the temporary journal {re.escape(str(kept))}/journal.sqlite", run.output()
    )
    assert tempdirs.sweep(str(temp)) == []
    assert kept.exists()


def test_the_next_start_sweeps_up_what_a_killed_run_left_and_nothing_else(
    runs: list[Proc], tmp_path: Path, temp: Path
) -> None:
    killed = busy_run(runs, tmp_path, temp)
    left = kinds(temp)
    owners = {int(_OWNER.match(path.name)[2]) for paths in left.values() for path in paths}  # type: ignore[index]
    assert killed.pid in owners  # the run and the journal: the master; mp: its controller
    workers = descendants(killed.pid)
    for pid in owners:
        os.kill(pid, signal.SIGKILL)
    killed.wait(30)
    wait_gone([*owners, *workers], "the killed run's processes")
    host = socket.gethostname()
    keep = {
        temp / f"cyclone-run-{os.getpid()}-abcdefgh": host,  # its process runs
        temp / f"cyclone-run-{killed.pid}-abcdefg1": f"not-{host}",  # another host's (a shared TMPDIR)
        temp / f"cyclone-run-{killed.pid}-abcdefg2": None,  # no owner file: being made, or not ours
        temp / "pymp-abcdefgh": None,  # not named after its owner
        temp / f"cyclone-journal-kept-{killed.pid}-abcdefgh": host,  # kept on purpose
        temp / f"cyclone-results-{killed.pid}-abcdefgh": host,  # not a kind of ours
    }
    for path, owner in keep.items():
        path.mkdir()
        if owner is not None:
            (path / ".owner").write_text(f"{owner}\n")
    run = start(runs, tmp_path, temp, "-g", "count=20")
    assert run.wait(120) == 0, run.output()
    assert sorted(temp.iterdir()) == sorted(keep)
    assert "left by process" not in run.output()  # logged at INFO only


def test_a_temporary_directory_too_long_for_a_socket_puts_the_socket_directories_in_tmp(
    runs: list[Proc], tmp_path: Path, temp: Path
) -> None:
    deep = temp / ("d" * (tempdirs.SOCKET_PATH_MAX - len(str(temp)) - 20))  # room for a journal, not a socket
    deep.mkdir()
    before = set(Path("/tmp").glob("cyclone-*"))
    run = start(runs, tmp_path, deep, "-g", "count=20")
    assert run.wait(120) == 0, run.output()
    assert "AF_UNIX" not in run.output()
    assert list(deep.iterdir()) == []
    assert set(Path("/tmp").glob("cyclone-*")) <= before  # removed from there too
