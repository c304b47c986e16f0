"""File-create latency of an ordinary directory: create, make durable, stat, delete.

This is what the ``file-create`` task measures on a file system that is not Lustre (a local
disk, NFS, a GPFS mount), and the first check a new user runs.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from pathlib import Path

from cyclone_file_create.check import Budget, CheckError, CheckReport, CheckStatus

__all__ = ("check_plain", "scratch_name")


def scratch_name(tag: str) -> str:
    """Name of a file a check creates: hidden, and unique per host and process, so checks run by
    several controllers in one directory never collide, and a leftover says where it came from."""
    return f".cyclone-file-create-{socket.gethostname()}-{os.getpid()}-{tag}"


def check_plain(directory: Path, count: int, budget: Budget) -> CheckReport:
    """Create ``count`` files in ``directory`` one after the other and time each step.

    Creating a file is ``open(O_CREAT | O_EXCL)``, ``close`` and ``fsync`` of the directory, so
    the measured latency includes making the new entry durable.  Each file is then stat'ed and
    deleted; a file is deleted even when its stat fails.
    """
    if not directory.is_dir():
        raise CheckError(f"directory {directory} does not exist")
    timings: dict[str, list[float]] = {"create": [], "stat": [], "unlink": []}
    with budget.step(f"open directory {directory}"):
        dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for number in range(count):
            path = directory / scratch_name(str(number))
            with budget.step(f"create {path}"):
                started = time.perf_counter()
                os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
                os.fsync(dir_fd)
                timings["create"].append(time.perf_counter() - started)
            try:
                with budget.step(f"stat {path}"):
                    started = time.perf_counter()
                    os.stat(path)
                    timings["stat"].append(time.perf_counter() - started)
            finally:
                with budget.step(f"delete {path}", cleanup=True), contextlib.suppress(FileNotFoundError):
                    started = time.perf_counter()
                    os.unlink(path)
                    timings["unlink"].append(time.perf_counter() - started)
    finally:
        os.close(dir_fd)
    create = timings["create"]
    return CheckReport(
        CheckStatus.OK,
        seconds=sum(create) / len(create),
        details={
            "files": count,
            **{f"{op}_seconds": {"mean": sum(t) / len(t), "max": max(t)} for op, t in timings.items()},
        },
    )
