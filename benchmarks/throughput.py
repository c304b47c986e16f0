"""Throughput, round-trip latency and master memory of ``cyclone run``.

Runs the real command line (a master, one controller with two workers, the journal on, the
default sqlite sink) and prints:

- no-op tasks per second, end to end: the marginal rate between a short and a long run, so
  that starting the controller and its workers does not count;
- the round trip of a single task (dispatch to result at the master), one task at a time;
- the master's peak memory (RSS) with 10 thousand and with 1 million tasks from the benchmark
  generator (the window keeps it flat), and the rate sustained over the 1 million;
- no-op tasks per second between a ``cyclone master`` and a ``cyclone controller`` process over
  TCP on loopback, with CurveZMQ (the default) and in plaintext (``insecure``): what the
  encryption costs (target: at most 20%);
- the master process's CPU time per task over those 1 million (all its threads: the loop, the
  sinks' delivery threads and ZeroMQ's I/O thread; the start-up's share taken out);
- for scale, ``multiprocessing.Pool(2)`` on this machine: chunksize 1, and one task at a time
  (54,000 tasks/s and 0.17 ms on the machine the targets were set on).

Every run is checked: each task succeeded and its result is in the sink exactly once.

Targets (not tests): >= 25,000 tasks/s, p50 round trip < 0.5 ms, memory with 1M tasks within
1.2x of memory with 10k, master CPU <= 15 us per task.

Usage: ``python benchmarks/throughput.py [--quick]`` (``--quick``: smaller runs, 200k tasks for
the memory comparison instead of 1M).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import closing
from pathlib import Path
from typing import Any

from cpu_time import cpu_seconds


def cyclone_run(workdir: Path, count: int, *, window: int | None = None) -> tuple[dict[str, Any], int]:
    """Run ``cyclone run`` for ``count`` no-op tasks; its summary and the master's peak RSS (KiB)."""
    args = ["cyclone", "run", "--controllers", "1", "--workers", "2", "--json", "-g", f"count={count}"]
    args += [
        "--journal",
        str(workdir / f"journal-{count}.sqlite"),
        "-s",
        f"sqlite.path={workdir}/results-{count}.sqlite",
    ]
    if window is not None:
        config = workdir / "window.toml"
        config.write_text(f"[master]\nwindow = {window}\n")
        args += ["--config", str(config)]
    process = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
    peak = 0
    cpu = 0.0
    status = Path(f"/proc/{process.pid}/status")
    while process.poll() is None:
        try:
            for line in status.read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peak = max(peak, int(line.split()[1]))
            cpu = cpu_seconds(process.pid)
        except OSError:
            break
        time.sleep(0.05)
    out, _ = process.communicate()
    if process.returncode != 0:
        raise SystemExit(f"cyclone run failed with exit code {process.returncode}")
    summary = json.loads(out.strip().splitlines()[-1])
    with closing(sqlite3.connect(workdir / f"results-{count}.sqlite")) as db:
        rows, distinct = db.execute("SELECT COUNT(*), COUNT(DISTINCT task_id) FROM results").fetchone()
    if not summary["succeeded"] == rows == distinct == count or summary["undelivered"]:
        raise SystemExit(
            f"{count:,} tasks: {summary['succeeded']:,} succeeded, {rows:,} rows ({distinct:,} distinct) in the sink, "
            f"{summary['undelivered']:,} undelivered"
        )
    # The master process's CPU time (all its threads: the loop, the sinks' delivery, ZeroMQ's
    # I/O; not the controller's), as last sampled before it exited.
    summary["master_cpu_s"] = cpu
    return summary, peak


def free_port() -> int:
    import socket  # noqa: PLC0415

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def make_keys(workdir: Path) -> tuple[Path, Path]:
    """A master key directory and a controller key directory whose key it admits."""
    master, controller = workdir / "master-keys", workdir / "controller-keys"
    subprocess.run(["cyclone", "keys", "init", "--dir", str(master)], check=True, capture_output=True)
    public = subprocess.run(
        ["cyclone", "keys", "new", "--dir", str(controller)], check=True, capture_output=True, text=True
    ).stdout.strip()
    subprocess.run(["cyclone", "keys", "allow", public, "--dir", str(master)], check=True, capture_output=True)
    pin = ["cyclone", "keys", "pin", str(master / "master.public"), "--dir", str(controller)]
    subprocess.run(pin, check=True, capture_output=True)
    return master, controller


def distributed_run(workdir: Path, count: int, keys: tuple[Path, Path] | None, run: int) -> float:
    """No-op tasks per second between a ``cyclone master`` and a ``cyclone controller`` (2
    workers, TCP on loopback); ``keys``: CurveZMQ, else plaintext.  The rate is read from the
    tasks' start times in the sink, over the middle 90% of the run (start-up and the last
    stragglers aside), so that the processes' start-up does not count."""
    name = f"{'curve' if keys else 'plain'}-{count}-{run}"
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    security = [f'keys = "{keys[0]}"', f'keys = "{keys[1]}"'] if keys else ["insecure = true"] * 2
    config = workdir / f"{name}.toml"
    config.write_text(
        f'[master]\nbind = "{endpoint}"\njournal = "{workdir}/{name}.journal"\n{security[0]}\n'
        f'[controller]\nmaster = "{endpoint}"\nworkers = 2\n{security[1]}\n'
        f'[generator]\nname = "benchmark"\noptions = {{ count = {count} }}\n'
        f'[sinks.sqlite]\npath = "{workdir}/{name}.sqlite"\n'
    )
    master = subprocess.Popen(["cyclone", "master", "--config", str(config)], stderr=subprocess.DEVNULL)
    controller = subprocess.Popen(["cyclone", "controller", "--config", str(config)], stderr=subprocess.DEVNULL)
    code = master.wait()
    controller.wait(60)
    if code != 0:
        raise SystemExit(f"cyclone master ({name}) failed with exit code {code}")
    with closing(sqlite3.connect(workdir / f"{name}.sqlite")) as db:
        rows, distinct = db.execute("SELECT COUNT(*), COUNT(DISTINCT task_id) FROM results").fetchone()
        starts = sorted(at for (at,) in db.execute("SELECT started_at FROM results"))
    if not rows == distinct == count:
        raise SystemExit(f"{name}: {rows:,} rows ({distinct:,} distinct) in the sink for {count:,} tasks")
    low, high = starts[count // 20], starts[count - count // 20 - 1]
    return (count - 2 * (count // 20)) / (high - low)


def _noop(value: int) -> int:
    return value


def pool_calibration(count: int) -> tuple[float, float]:
    """``multiprocessing.Pool(2)`` on this machine, for scale: tasks per second with chunksize 1,
    and the median round trip (ms) of one task at a time."""
    with multiprocessing.Pool(2) as pool:
        list(pool.imap(_noop, range(1000), chunksize=1))
        start = time.perf_counter()
        list(pool.imap(_noop, range(count), chunksize=1))
        rate = count / (time.perf_counter() - start)
        trips = []
        for value in range(2000):
            sent = time.perf_counter()
            pool.apply(_noop, (value,))
            trips.append(time.perf_counter() - sent)
    return rate, statistics.median(trips) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller runs")
    quick = parser.parse_args().quick
    short, long_, small, large = (5_000, 30_000, 10_000, 200_000) if quick else (20_000, 120_000, 10_000, 1_000_000)
    workdir = Path(tempfile.mkdtemp(prefix="cyclone-bench-"))
    try:
        rate, trip = pool_calibration(50_000)
        print(
            f"multiprocessing.Pool(2), chunksize 1: {rate:,.0f} tasks/s, round trip p50 {trip:.3f} ms "
            f"(reference machine: 54,000 and 0.17 ms)"
        )

        first, _ = cyclone_run(workdir, short)
        second, _ = cyclone_run(workdir, long_)
        marginal = (long_ - short) / (second["duration_s"] - first["duration_s"])
        print(
            f"throughput: {marginal:,.0f} no-op tasks/s end to end, journal on "
            f"({long_:,} tasks in {second['duration_s']:.2f} s including start-up: "
            f"{second['tasks_per_second']:,.0f}/s; target >= 25,000)"
        )
        print(f"  round trip under load: p50 {second['latency_ms_p50']} ms, p99 {second['latency_ms_p99']} ms")

        keys = make_keys(workdir)
        rates: dict[str, list[float]] = {"CurveZMQ": [], "plaintext": []}
        for run in range(3):  # interleaved, so that the machine's drift touches both alike
            rates["CurveZMQ"].append(distributed_run(workdir, long_, keys, run))
            rates["plaintext"].append(distributed_run(workdir, long_, None, run))
        curve, plain = statistics.median(rates["CurveZMQ"]), statistics.median(rates["plaintext"])
        print(
            f"master and controller processes over TCP: {curve:,.0f} no-op tasks/s with CurveZMQ, {plain:,.0f} in "
            f"plaintext (runs: {', '.join(f'{r:,.0f}' for r in rates['CurveZMQ'])} vs "
            f"{', '.join(f'{r:,.0f}' for r in rates['plaintext'])}): CurveZMQ costs {1 - curve / plain:.0%} "
            f"(target <= 20%)"
        )

        single, _ = cyclone_run(workdir, 2_000, window=1)
        print(
            f"single-task round trip: p50 {single['latency_ms_p50']} ms, p99 {single['latency_ms_p99']} ms "
            f"(target p50 < 0.5 ms)"
        )

        small_run, rss_small = cyclone_run(workdir, small)
        sustained, rss_large = cyclone_run(workdir, large)
        print(
            f"master memory: {rss_small / 1024:.1f} MiB with {small:,} tasks, {rss_large / 1024:.1f} MiB with "
            f"{large:,} tasks: {rss_large / rss_small:.2f}x (target <= 1.2x)"
        )
        print(
            f"sustained: {large:,} tasks in {sustained['duration_s']:.1f} s including start-up: "
            f"{sustained['tasks_per_second']:,.0f} tasks/s"
        )
        marginal_cpu = (sustained["master_cpu_s"] - small_run["master_cpu_s"]) / (large - small)
        print(
            f"master CPU per task: {marginal_cpu * 1e6:.1f} us over {large:,} tasks (all its threads, sinks included, "
            f"start-up aside: the CPU time of a {small:,}-task run subtracted; whole run "
            f"{sustained['master_cpu_s'] / large * 1e6:.1f} us; target 15 us)"
        )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
