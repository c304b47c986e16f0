"""The master's peak memory against the number of tasks, with each built-in sink.

Runs the real command line, ``cyclone run`` (a master, one controller with two workers, the
journal on), as a child process for 10 thousand, 100 thousand and 1 million no-op tasks from the
benchmark generator, once with each built-in sink, and prints the master's peak RSS for each
size and its ratio to the 10 thousand figure (target: at most 1.2x).  The master is the
``cyclone run`` process itself (its controllers and workers are child processes of their own):
its ``VmHWM`` (the kernel's record of its peak RSS) is read from ``/proc/<pid>/status`` until it
exits.

Every run is checked: each task succeeded and its result is in the sink exactly once.

Usage: ``python benchmarks/memory.py [--max 10000000] [--repeat 2] [--sink jsonl]``
(``--max``: the largest run; 10 million takes an hour or more on a 2-core machine).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from contextlib import closing
from pathlib import Path

#: The built-in sinks, and the option that puts each one's file in the work directory.
SINKS = {"sqlite": "sqlite.path={}.sqlite", "jsonl": "jsonl.path={}.jsonl"}
SIZES = (10_000, 100_000, 1_000_000, 10_000_000)


def peak_rss(status: Path) -> int:
    """The process's peak RSS (KiB), from its ``/proc/<pid>/status``; 0 once it is gone."""
    try:
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def stored(sink: str, base: Path) -> tuple[int, int]:
    """Results in the sink's file, and how many distinct task ids among them."""
    if sink == "sqlite":
        with closing(sqlite3.connect(f"{base}.sqlite")) as db:
            rows, distinct = db.execute("SELECT COUNT(*), COUNT(DISTINCT task_id) FROM results").fetchone()
        return int(rows), int(distinct)
    ids = set()
    rows = 0
    with open(f"{base}.jsonl", "rb") as lines:
        for line in lines:
            rows += 1
            ids.add(json.loads(line)["task_id"])
    return rows, len(ids)


def run(workdir: Path, sink: str, count: int, attempt: int) -> tuple[int, float]:
    """``cyclone run`` of ``count`` no-op tasks into ``sink``: the master's peak RSS (KiB) and
    the run's duration (s)."""
    base = workdir / f"{sink}-{count}-{attempt}"
    args = ["cyclone", "run", "--controllers", "1", "--workers", "2", "--json", "-g", f"count={count}"]
    args += ["--journal", f"{base}.journal", "--sink", sink, "-s", SINKS[sink].format(base)]
    started = time.monotonic()
    process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    status = Path(f"/proc/{process.pid}/status")
    peak = 0
    while process.poll() is None:
        peak = max(peak, peak_rss(status))
        time.sleep(0.05)
    out, _ = process.communicate()
    duration = time.monotonic() - started
    if process.returncode != 0:
        raise SystemExit(f"cyclone run ({sink}, {count:,} tasks) failed with exit code {process.returncode}")
    summary = json.loads(out.strip().splitlines()[-1])
    rows, distinct = stored(sink, base)
    if not summary["succeeded"] == rows == distinct == count:
        raise SystemExit(
            f"{sink}, {count:,} tasks: {summary['succeeded']:,} succeeded, {rows:,} stored ({distinct:,} distinct)"
        )
    for leftover in workdir.glob(f"{base.name}.*"):
        leftover.unlink()
    return peak, duration


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--max", type=int, default=1_000_000, help="largest run (default 1000000; up to 10000000)")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each size (the range is printed)")
    parser.add_argument("--sink", choices=sorted(SINKS), action="append", help="only this sink (repeatable)")
    options = parser.parse_args()
    sizes = [size for size in SIZES if size <= options.max]
    workdir = Path(tempfile.mkdtemp(prefix="cyclone-bench-memory-"))
    try:
        for sink in options.sink or list(SINKS):
            base: float | None = None
            for count in sizes:
                peaks, durations = [], []
                for attempt in range(options.repeat):
                    peak, duration = run(workdir, sink, count, attempt)
                    peaks.append(peak / 1024)
                    durations.append(duration)
                # The smallest of the repeats: the machine's noise only ever adds memory.
                low, high = min(peaks), max(peaks)
                base = base or low
                spread = f" (runs {low:.1f}-{high:.1f})" if len(peaks) > 1 else ""
                print(
                    f"{sink:6} {count:>10,} tasks: master peak RSS {low:6.1f} MiB{spread}, "
                    f"{low / base:.2f}x the 10,000 figure, {min(durations):.0f} s",
                    flush=True,
                )
        print("target: at most 1.2x from 10,000 to 10,000,000 tasks with every sink", file=sys.stderr)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
