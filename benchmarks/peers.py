"""Cyclone beside its peers on the same no-op workload, in the same run.

Runs, interleaved round by round (A B C ... then again, so that the machine's drift touches
all alike):

- Cyclone: ``cyclone run`` with one controller and two workers, the journal and the default
  sqlite sink on (every run checked: each task succeeded, its result is stored once); the rate
  is the marginal rate between a short and a long run, so that start-up does not count
  (see ``throughput.py``);
- ``multiprocessing.Pool(2)``, chunksize 1: the calibration, what this machine does with two
  processes and no bookkeeping;
- Dask distributed: a ``LocalCluster`` of 2 worker processes of one thread, root-task queuing
  off (``distributed.scheduler.worker-saturation = inf``: the scheduler sends every ready task
  to the workers at once, its fastest setting for many tiny tasks), tasks submitted in one
  batch with ``client.map``;
- Parsl: a ``HighThroughputExecutor`` of 2 workers on a ``LocalProvider``;
- Celery with Redis (``--redis``, default ``redis://127.0.0.1:6379/13``: a throwaway database,
  flushed before and after): a worker of concurrency 2 started as a subprocess, tasks sent in
  one ``group``.

A peer that is not installed (``pip install -e '.[bench]'``) or whose service does not answer
is skipped with a line saying so.  Prints, per setup: no-op tasks per second (median of the
rounds, with their range), the round trip of a single task one at a time (p50), and how many
times Cyclone's rate it is; writes a bar chart to ``--png`` (when matplotlib is installed).

Targets (not tests): Cyclone >= 0.7x ``Pool(2)`` and >= 10x every peer.

Usage: ``python benchmarks/peers.py [--rounds 3] [--png benchmarks/peers.png] [--quick]``.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from throughput import cyclone_run, pool_calibration

#: Tasks per round for each setup: sized so that a round takes a few seconds everywhere.
COUNTS = {"Cyclone": 120_000, "Pool(2)": 50_000, "Dask": 4_000, "Parsl": 2_000, "Celery": 2_000}
#: Single tasks, one at a time, for the round trip.
TRIPS = 200


def noop(value: int) -> int:
    """The no-op task every peer runs."""
    return value


Measure = Callable[[int], tuple[float, float]]  # count -> (tasks per second, round trip p50 in ms)


def cyclone(workdir: Path) -> Measure:
    def measure(count: int) -> tuple[float, float]:
        few = count // 6  # the short run, subtracted from the long one: start-up does not count
        short, _ = cyclone_run(workdir, few)
        long_, _ = cyclone_run(workdir, count)
        single, _ = cyclone_run(workdir, 1000, window=1)
        for path in workdir.iterdir():  # the runs' journals and sinks: a fresh start each round
            path.unlink()
        rate = (count - few) / (long_["duration_s"] - short["duration_s"])
        return rate, single["latency_ms_p50"]

    return measure


def pool(count: int) -> tuple[float, float]:
    return pool_calibration(count)


def _round_trip(call: Callable[[int], Any]) -> float:
    """Median milliseconds of ``call`` (one task, waited for), after a few to warm up."""
    for value in range(10):
        call(value)
    trips = []
    for value in range(TRIPS):
        start = time.perf_counter()
        call(value)
        trips.append(time.perf_counter() - start)
    return statistics.median(trips) * 1000


def dask(count: int) -> tuple[float, float]:
    import dask as dask_  # noqa: PLC0415
    from distributed import Client, LocalCluster  # noqa: PLC0415

    with (
        dask_.config.set({"distributed.scheduler.worker-saturation": float("inf")}),
        LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster,
        Client(cluster) as client,
    ):
        client.gather(client.map(noop, range(200), pure=False))
        start = time.perf_counter()
        results = client.gather(client.map(noop, range(count), pure=False))
        rate = count / (time.perf_counter() - start)
        assert results == list(range(count))
        trip = _round_trip(lambda value: client.submit(noop, value, pure=False).result())
    return rate, trip


def parsl(count: int) -> tuple[float, float]:
    import parsl as parsl_  # noqa: PLC0415
    from parsl.config import Config  # noqa: PLC0415
    from parsl.executors import HighThroughputExecutor  # noqa: PLC0415
    from parsl.providers import LocalProvider  # noqa: PLC0415

    logging.getLogger("parsl").setLevel(logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="bench-parsl-") as run_dir:
        executor = HighThroughputExecutor(
            label="bench",
            max_workers_per_node=2,
            cores_per_worker=1,
            provider=LocalProvider(init_blocks=1, min_blocks=1, max_blocks=1),
        )
        dfk = parsl_.load(Config(executors=[executor], run_dir=run_dir, strategy="none"))
        try:
            app = parsl_.python_app(noop, executors=["bench"])
            [future.result() for future in [app(value) for value in range(200)]]
            start = time.perf_counter()
            results = [future.result() for future in [app(value) for value in range(count)]]
            rate = count / (time.perf_counter() - start)
            assert results == list(range(count))
            trip = _round_trip(lambda value: app(value).result())
        finally:
            dfk.cleanup()
            parsl_.clear()
    return rate, trip


#: The Celery application the worker subprocess imports (``celery -A peers:celery_app``).
celery_app: Any = None
with contextlib.suppress(ImportError):
    import celery as _celery

    _broker = os.environ.get("CYCLONE_BENCH_REDIS", "redis://127.0.0.1:6379/13")
    celery_app = _celery.Celery("peers", broker=_broker, backend=_broker)
    celery_app.conf.update(worker_hijack_root_logger=False, result_expires=600, broker_connection_retry=False)
    celery_noop = celery_app.task(name="peers.noop")(noop)


@contextlib.contextmanager
def celery_worker(url: str) -> Iterator[None]:
    """A Celery worker of concurrency 2 in a subprocess, on a flushed Redis database."""
    import redis  # noqa: PLC0415

    database = redis.Redis.from_url(url)
    database.flushdb()
    env = {**os.environ, "CYCLONE_BENCH_REDIS": url}
    argv = [sys.executable, "-m", "celery", "-A", "peers:celery_app", "worker", "--concurrency", "2", "--pool"]
    argv += ["prefork", "--loglevel", "WARNING", "--without-gossip", "--without-mingle", "--without-heartbeat"]
    worker = subprocess.Popen(
        argv,
        cwd=Path(__file__).parent,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield
    finally:
        worker.terminate()
        try:
            worker.wait(30)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()
        database.flushdb()
        database.close()


def celery(url: str) -> Measure:
    def measure(count: int) -> tuple[float, float]:
        from celery import group  # noqa: PLC0415

        celery_app.conf.broker_url = celery_app.conf.result_backend = url
        with celery_worker(url):
            group(celery_noop.s(value) for value in range(50)).apply_async().get(timeout=120)  # the worker is up
            start = time.perf_counter()
            results = group(celery_noop.s(value) for value in range(count)).apply_async().get(timeout=600)
            rate = count / (time.perf_counter() - start)
            assert results == list(range(count))
            trip = _round_trip(lambda value: celery_noop.delay(value).get(timeout=60))
        return rate, trip

    return measure


def installed(module: str) -> bool:
    try:
        __import__(module)
    except ImportError:
        return False
    return True


def redis_answers(url: str) -> str | None:
    """Why Redis at ``url`` cannot be used, or ``None``."""
    import redis  # noqa: PLC0415

    try:
        redis.Redis.from_url(url, socket_connect_timeout=2).ping()
    except redis.RedisError as exc:
        return f"Redis at {url} does not answer ({exc})"
    return None


def chart(path: Path, rates: dict[str, float]) -> None:
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    names = list(rates)
    figure, axes = plt.subplots(figsize=(6.4, 3.2), dpi=100)
    colors = ["#1f6feb" if name == "Cyclone" else "#8b949e" for name in names]
    bars = axes.bar(names, [rates[name] for name in names], color=colors)
    axes.set_yscale("log")
    axes.set_ylabel("no-op tasks per second (log)")
    axes.set_title("No-op tasks per second, 2 workers, 2-core machine")
    axes.bar_label(bars, labels=[f"{rates[name]:,.0f}" for name in names], fontsize=8)
    axes.margins(y=0.2)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--png", type=Path, help="write a bar chart of the rates here")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/13", help="a Redis database Celery may flush")
    parser.add_argument("--quick", action="store_true", help="a fifth of the tasks")
    args = parser.parse_args()
    counts = {name: count // 5 if args.quick else count for name, count in COUNTS.items()}
    workdir = Path(tempfile.mkdtemp(prefix="cyclone-bench-peers-"))
    setups: dict[str, Measure] = {"Cyclone": cyclone(workdir), "Pool(2)": pool}
    for name, module, measure in (("Dask", "distributed", dask), ("Parsl", "parsl", parsl)):
        if installed(module):
            setups[name] = measure
        else:
            print(f"{name}: skipped, {module} is not installed (pip install -e '.[bench]')")
    if not (installed("celery") and installed("redis")):
        print("Celery: skipped, celery[redis] is not installed (pip install -e '.[bench]')")
    elif reason := redis_answers(args.redis):
        print(f"Celery: skipped, {reason}")
    else:
        setups["Celery"] = celery(args.redis)

    rates: dict[str, list[float]] = {name: [] for name in setups}
    trips: dict[str, list[float]] = {name: [] for name in setups}
    try:
        for number in range(1, args.rounds + 1):
            for name, measure in setups.items():
                rate, trip = measure(counts[name])
                rates[name].append(rate)
                trips[name].append(trip)
                print(f"round {number}: {name}: {rate:,.0f} tasks/s, round trip p50 {trip:.2f} ms", flush=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    medians = {name: statistics.median(values) for name, values in rates.items()}
    ours = medians["Cyclone"]
    print(f"\n{'setup':<10} {'tasks/s (median)':>17} {'range':>17} {'round trip p50':>15} {'Cyclone is':>11}")
    for name, rate in medians.items():
        spread = f"{min(rates[name]):,.0f}-{max(rates[name]):,.0f}"
        trip = statistics.median(trips[name])
        print(f"{name:<10} {rate:>17,.0f} {spread:>17} {trip:>12.2f} ms {ours / rate:>10.1f}x")
    peers = [name for name in medians if name not in ("Cyclone", "Pool(2)")]
    print(
        f"targets: Cyclone >= 0.7x Pool(2): {ours / medians['Pool(2)']:.2f}x"
        + "".join(f"; >= 10x {name}: {ours / medians[name]:.1f}x" for name in peers)
    )
    if args.png is not None:
        if installed("matplotlib"):
            chart(args.png, medians)
            print(f"chart: {args.png}")
        else:
            print("chart: skipped, matplotlib is not installed (pip install -e '.[bench]')")


if __name__ == "__main__":
    sys.exit(main())
