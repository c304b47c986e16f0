"""CPU time of processes, read from /proc (Linux), for the benchmark scripts."""

from __future__ import annotations

import os
from pathlib import Path

_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User plus system CPU seconds used so far by process ``pid`` (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


def children(pid: int) -> list[int]:
    """Pids of the children of ``pid``."""
    return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def thread_cpu_seconds(pid: int) -> dict[str, float]:
    """CPU time of ``pid``'s threads so far by role: the main thread (the master's loop),
    ZeroMQ's I/O threads, and the rest (the sinks' delivery threads, metrics)."""
    seconds = {"loop": 0.0, "zmq": 0.0, "other": 0.0}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
            name = (task / "comm").read_text().strip()
        except OSError:
            continue  # the thread ended
        role = "loop" if task.name == str(pid) else "zmq" if name.startswith("ZMQbg") else "other"
        seconds[role] += (int(fields[11]) + int(fields[12])) / _TICKS
    return seconds
