"""A full disk under the master's journal: a real tmpfs, filled during a run of real processes.

The master must stay up, say so once, dispatch nothing and acknowledge nothing meanwhile (the
controllers keep their results), and carry on by itself once there is space again, every
result delivered once.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq
from engine_support import FAST_CONTROLLER, FAST_MASTER, read_probe, toml
from rich.console import Console

from cyclone_core.engine import protocol as p
from cyclone_core.engine.journal import Journal, JournalWriteError
from cyclone_core.engine.scheduler import TaskRecord
from cyclone_core.engine.status import render_status
from cyclone_core.errors import CycloneError
from cyclone_core.testing import free_port, wait_until


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 2 MB tmpfs of its own (unmounted afterwards)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    mount = tmp_path / "small"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(directory: Path) -> Path:
    """Write a file in ``directory`` until its file system is full."""
    filler = directory / "filler"
    block = b"\0" * 65536
    with filler.open("wb", buffering=0) as out:
        with contextlib.suppress(OSError):
            while True:
                out.write(block)
        with contextlib.suppress(OSError):
            while True:
                out.write(b"\0" * 512)
    return filler


def test_a_journal_on_a_full_disk_raises_one_line_and_keeps_what_it_could_not_write(small_fs: Path) -> None:
    journal = Journal(small_fs / "journal.sqlite")
    journal.bind_run("benchmark", {}, deterministic=True)
    records = [TaskRecord(seq, f"{journal.run_id}-{seq}", "noop", {"pad": "x" * 2000}) for seq in range(1, 400)]
    filler = fill(small_fs)
    journal.add(records)
    with pytest.raises(JournalWriteError) as raised:
        journal.commit()
    message = str(raised.value)
    assert "\n" not in message, message
    assert "full" in message, message
    assert raised.value.__context__ is None or raised.value.__suppress_context__
    with pytest.raises(JournalWriteError):
        journal.compact(records, [])
    # A master starting on a full disk stops with one line, too.
    with pytest.raises(CycloneError) as starting:
        Journal(small_fs / "another.sqlite").bind_run("benchmark", {}, deterministic=True)
    assert "full" in str(starting.value)
    filler.unlink()
    journal.commit()
    journal.close()
    assert [r.seq for r in Journal(small_fs / "journal.sqlite").pending()] == list(range(1, 400))


def _status(port: int) -> dict[str, Any]:
    with zmq.Context() as ctx, ctx.socket(zmq.DEALER) as sock:
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(f"tcp://127.0.0.1:{port}")
        sock.send(p.encode(p.StatusRequest()))
        assert sock.poll(10_000), "no status from the master"
        return p.decode(sock.recv()).snapshot  # type: ignore[union-attr]


def test_the_master_waits_out_a_full_disk_under_its_journal_and_loses_nothing(
    cyclone, tmp_path: Path, small_fs: Path
) -> None:
    port, metrics_port, count = free_port(), free_port(), 400
    out = tmp_path / "probe.jsonl"
    path = tmp_path / "cyclone.toml"
    path.write_text(
        toml(
            {
                "master": {
                    "bind": f"tcp://127.0.0.1:{port}",
                    "insecure": True,
                    "journal": str(small_fs / "journal.sqlite"),
                    "journal_min_free_mb": 0.5,
                    "metrics_port": metrics_port,
                    **FAST_MASTER,
                },
                "controller": {"master": f"tcp://127.0.0.1:{port}", "insecure": True, "workers": 2, **FAST_CONTROLLER},
                "generator": {
                    "name": "benchmark",
                    "options": {"count": count, "task": "sleep", "args": {"seconds": 0.01}},
                },
                "sinks.probe": {"path": str(out), "flush_interval": 0.05, "batch_size": 20},
            }
        )
    )
    master = cyclone("master", "--config", str(path))
    cyclone("controller", "--config", str(path))
    wait_until(lambda: len(read_probe(out)) >= 40, 60, "the first results")
    filler = fill(small_fs)
    wait_until(lambda: "cannot write" in master.output(), 30, "the master to find its journal full")
    wait_until(lambda: _status(port)["journal"]["full"], 10, "status to show the journal full")
    wait_until(lambda: _status(port)["journal"]["low_space"], 10, "status to show little space left")
    console = Console(record=True, width=300)
    render_status(_status(port), console)
    assert "cannot be written (disk full?): nothing is dispatched" in console.export_text()
    wait_until(
        lambda: (
            b"cyclone_journal_full 1.0" in urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics").read()
        ),
        10,
        "the metric to show the journal full",
    )
    # While it is full, the master stays up and says nothing more; the run does not move on.
    wait_until(lambda: _status(port)["journal"]["full_for_s"] >= 3, 20, "three seconds of a full journal")
    assert master.popen.poll() is None, master.output()
    assert master.output().count("cannot write") == 1, master.output()
    assert master.output().count("below master.journal_min_free_mb") == 1, master.output()
    assert "Traceback" not in master.output()
    assert _status(port)["in_flight"] == 0, "nothing dispatched while the journal is full"
    filler.unlink()
    assert master.wait(90) == 0, master.output()
    assert "written again" in master.output()
    delivered = read_probe(out)
    assert len(delivered) == count, "every result exactly once"
    assert Counter(r["key"] for r in delivered) == Counter(str(i) for i in range(count))
    assert master.output().count("cannot write") == 1
