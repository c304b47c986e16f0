"""``command`` tasks running ``/bin/true``: tasks per second with ``cyclone run`` (one
controller, two workers, the journal on, the default sqlite sink) beside ``xargs -P 2`` and GNU
``parallel -j 2`` (when installed) running the same program the same number of times, in the
same run.

Cyclone's rate is the marginal rate between a short and a long run, so that starting the
controller and its workers does not count; every result is checked (each task succeeded and is
stored once).  ``xargs`` and ``parallel`` are timed whole (they start in milliseconds).

Usage: ``python benchmarks/command.py [--count N]``.
"""

from __future__ import annotations

import argparse
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from contextlib import closing
from pathlib import Path


def cyclone(count: int, directory: Path) -> float:
    """Seconds ``cyclone run`` takes for ``count`` command tasks of /bin/true, checked."""
    database = directory / f"results-{count}.sqlite"
    start = time.perf_counter()
    subprocess.run(
        [
            "cyclone",
            "run",
            "--workers",
            "2",
            "--generator",
            "benchmark",
            "-g",
            f"count={count}",
            "-g",
            "task=command",
            "-g",
            'args={"argv": ["/bin/true"]}',
            "-s",
            f"sqlite.path={database}",
            "--journal",
            str(directory / f"journal-{count}.sqlite"),
            "--json",
        ],
        check=True,
        capture_output=True,
    )
    seconds = time.perf_counter() - start
    with closing(sqlite3.connect(database)) as db:
        (stored, ok) = db.execute("SELECT COUNT(DISTINCT task_id), SUM(status = 'ok') FROM results").fetchone()
    assert (stored, ok) == (count, count), f"{stored} results stored, {ok} ok, of {count}"
    return seconds


def shell_tool(argv: list[str], count: int) -> float:
    """Seconds ``argv`` takes to run /bin/true ``count`` times, fed one line per run."""
    lines = "".join(f"{n}\n" for n in range(count)).encode()
    start = time.perf_counter()
    subprocess.run(argv, input=lines, check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=5000, help="tasks in the long run")
    count = parser.parse_args().count
    short = max(count // 10, 100)
    with tempfile.TemporaryDirectory(prefix="cyclone-bench-command-") as scratch:
        directory = Path(scratch)
        cyclone(short, directory)  # warm the file cache
        base, full = cyclone(short, directory), cyclone(count, directory)
    rate = (count - short) / (full - base)
    print(f"cyclone run, command /bin/true, 2 workers: {rate:,.0f} tasks/s (marginal; {count:,} in {full:.2f} s)")
    xargs = shell_tool(["xargs", "-P", "2", "-n", "1", "/bin/true"], count)
    print(f"xargs -P 2 -n 1 /bin/true: {count / xargs:,.0f} tasks/s ({count:,} in {xargs:.2f} s)")
    if shutil.which("parallel") is None:
        print("GNU parallel: not installed (apt-get install -y parallel)")
    else:
        seconds = shell_tool(["parallel", "-j", "2", "/bin/true"], count)
        print(f"GNU parallel -j 2 /bin/true: {count / seconds:,.0f} tasks/s ({count:,} in {seconds:.2f} s)")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
