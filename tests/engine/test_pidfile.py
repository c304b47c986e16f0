"""One daemon per pid file: live owners are respected, stale files are replaced."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from cyclone_core.engine.pidfile import PidFile
from cyclone_core.errors import CycloneError

HOLD = """
import sys, time
from cyclone_core.engine.pidfile import PidFile
with PidFile(sys.argv[1]):
    print("held", flush=True)
    time.sleep(60)
"""


def test_the_file_holds_our_pid_and_goes_away_with_us(tmp_path: Path) -> None:
    path = tmp_path / "d.pid"
    with PidFile(path):
        assert path.read_text() == f"{os.getpid()}\n"
    assert not path.exists()


def test_a_second_instance_is_refused_while_the_first_runs(tmp_path: Path) -> None:
    path = tmp_path / "d.pid"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline() == "held\n"
        with pytest.raises(CycloneError, match=rf"already running \(pid {holder.pid}, pid file {path}\)"):
            PidFile(path).acquire()
    finally:
        holder.kill()
        holder.wait()
    # Killed: its lock went with it, so the file it left behind is stale.
    assert path.exists()
    with PidFile(path):
        assert path.read_text() == f"{os.getpid()}\n"


def test_a_stale_file_naming_a_dead_pid_is_replaced(tmp_path: Path) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    path = tmp_path / "d.pid"
    path.write_text(f"{dead.pid};1700000000\n")  # the Cyclone 2.x format
    with PidFile(path):
        assert path.read_text() == f"{os.getpid()}\n"


def test_an_unlocked_file_naming_a_live_process_is_respected(tmp_path: Path) -> None:
    path = tmp_path / "d.pid"
    path.write_text(f"{os.getppid()}\n")  # written by something that does not lock it
    with pytest.raises(CycloneError, match="names running process"):
        PidFile(path).acquire()


def test_an_unwritable_place_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(CycloneError, match=f"pid file {tmp_path}/missing/d.pid: No such file or directory"):
        PidFile(tmp_path / "missing" / "d.pid").acquire()
