"""Throughput and round trip of a controller's worker pool on its own (no master, no network).

    python benchmarks/pool.py [--workers 2] [--seconds 5] [--window 64] [--depth 4]

Keeps ``window`` no-op tasks submitted at all times (a controller's credit), for ``seconds``,
and prints tasks per second and the time from submit to result (p50, p99).  ``--window 1``
measures the bare round trip through a worker process.
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import time

from cpu_time import cpu_seconds

from cyclone_core.engine.protocol import TaskEnvelope
from cyclone_core.engine.workers import DEFAULT_DEPTH, WorkerPool


def run(workers: int, seconds: float, window: int, depth: int) -> None:
    pool = WorkerPool(workers, controller_id="bench", depth=depth)
    pool.start()
    ids = (f"t{n}" for n in itertools.count())
    submitted: dict[str, float] = {}
    latencies: list[float] = []
    try:
        # Warm up: every worker is up and has run a task.
        pool.submit([TaskEnvelope(next(ids), "noop") for _ in range(workers * 4)])
        while pool.busy:
            pool.wait(5.0)
        pool.results.clear()

        pids = [worker.process.pid for worker in pool._workers.values()]
        cpu_before = _cpu_seconds(pids)
        clock = time.perf_counter
        start = clock()
        end = start + seconds
        done = 0
        while True:
            now = clock()
            if now < end:
                fresh = [TaskEnvelope(next(ids), "noop") for _ in range(window - len(submitted))]
                for envelope in fresh:
                    submitted[envelope.id] = now
                pool.submit(fresh)
            elif not submitted:
                break
            pool.wait(5.0)
            now = clock()
            for row in pool.results:
                latencies.append(now - submitted.pop(row[0]))
            done += len(pool.results)
            pool.results.clear()
        elapsed = clock() - start
        cpu = [after - before for after, before in zip(_cpu_seconds(pids), cpu_before, strict=True)]
    finally:
        pool.close()
    latencies.sort()
    p99 = latencies[int(len(latencies) * 0.99)]
    print(
        f"workers={workers} window={window} depth={depth}: {done / elapsed:,.0f} tasks/s, "
        f"round trip p50 {statistics.median(latencies) * 1000:.3f} ms, p99 {p99 * 1000:.3f} ms, "
        f"CPU per task: controller {cpu[0] / done * 1e6:.1f} us, workers {cpu[1] / done * 1e6:.1f} us ({done:,} tasks)"
    )


def _cpu_seconds(worker_pids: list[int]) -> tuple[float, float]:
    """CPU seconds used so far by this process, and by the workers."""
    return cpu_seconds(os.getpid()), sum(cpu_seconds(pid) for pid in worker_pids)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--window", type=int, default=64, help="tasks kept in the pool (the controller's credit)")
    parser.add_argument("--depth", type=int, default=DEFAULT_DEPTH, help="tasks queued per worker at most")
    args = parser.parse_args()
    run(args.workers, args.seconds, args.window, args.depth)


if __name__ == "__main__":
    main()
