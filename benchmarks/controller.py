"""Throughput and round trip of one controller process against a minimal master.

    python benchmarks/controller.py [--workers 2] [--seconds 5] [--in-flight N]

The "master" here is a bare ROUTER loop in this process: it dispatches no-op tasks within the
credit the controller grants, acknowledges results and nothing else (no journal, no sinks), so
the numbers are the controller's and its workers' share of the end-to-end cost.  Prints tasks
per second, the dispatch-to-result time (p50, p99) and the CPU time per task of the controller
process and of its workers.  ``--in-flight 1`` measures the bare round trip: one task at a time.
"""

from __future__ import annotations

import argparse
import itertools
import math
import statistics
import subprocess
import sys
import time

import zmq
from cpu_time import children, cpu_seconds

from cyclone_core.engine.protocol import Ack, Dispatch, Hello, Results, Shutdown, TaskEnvelope, Welcome, decode, encode

CONTROLLER = """
import logging, sys
from cyclone_core.config import ControllerSettings
from cyclone_core.engine.controller import run_controller
logging.basicConfig(level=logging.WARNING)
sys.exit(run_controller(ControllerSettings(master=sys.argv[1], workers=int(sys.argv[2]), id="bench", insecure=True)))
"""


def run(workers: int, seconds: float, in_flight: int | None) -> None:
    context = zmq.Context()
    sock = context.socket(zmq.ROUTER)
    port = sock.bind_to_random_port("tcp://127.0.0.1")
    process = subprocess.Popen([sys.executable, "-c", CONTROLLER, f"tcp://127.0.0.1:{port}", str(workers)])
    ids = (f"t{n}" for n in itertools.count())
    sent: dict[str, float] = {}
    latencies: list[float] = []
    credit = 0
    identity = b""
    done = 0
    clock = time.perf_counter
    start = end = math.inf
    cpu_before: tuple[float, float] | None = None
    try:
        while True:
            if sock.poll(10_000) == 0:
                raise SystemExit("the controller does not answer")
            identity, frame = sock.recv_multipart()
            message = decode(frame)
            now = clock()
            if type(message) is Hello:
                credit = message.credit
                sock.send_multipart([identity, encode(Welcome("bench", "bench", 2.0, 20.0))])
            elif type(message) is Results:
                credit += message.credit
                for result in message.results:
                    latencies.append(now - sent.pop(result.task_id))
                done += len(message.results)
                sock.send_multipart([identity, encode(Ack([r.task_id for r in message.results]))])
            if start == math.inf and done >= 2000:  # warmed up: workers are running tasks
                start, end, done, latencies = now, now + seconds, 0, []
                cpu_before = _cpu_seconds(process.pid)
            count = credit if in_flight is None else min(credit, in_flight - len(sent))
            if now < end and count > 0 and identity:
                batch = [TaskEnvelope(next(ids), "noop") for _ in range(count)]
                for envelope in batch:
                    sent[envelope.id] = now
                sock.send_multipart([identity, encode(Dispatch(batch))])
                credit -= count
            if now >= end and not sent:
                break
        elapsed = clock() - start
        assert cpu_before is not None
        cpu = [after - before for after, before in zip(_cpu_seconds(process.pid), cpu_before, strict=True)]
        sock.send_multipart([identity, encode(Shutdown("benchmark over"))])
        process.wait(30)
    finally:
        if process.poll() is None:
            process.kill()
        sock.close(linger=0)
        context.term()
    latencies.sort()
    p50, p99 = statistics.median(latencies) * 1000, latencies[int(len(latencies) * 0.99)] * 1000
    print(
        f"workers={workers} in flight={in_flight or 'credit'}: {done / elapsed:,.0f} tasks/s, round trip p50"
        f" {p50:.3f} ms, p99 {p99:.3f} ms, CPU per task: controller {cpu[0] / done * 1e6:.1f} us, workers"
        f" {cpu[1] / done * 1e6:.1f} us ({done:,} tasks)"
    )


def _cpu_seconds(controller_pid: int) -> tuple[float, float]:
    """CPU seconds used so far by the controller process and by its workers (children of the
    fork server, itself a child of the controller)."""
    workers = sum(cpu_seconds(worker) for server in children(controller_pid) for worker in children(server))
    return cpu_seconds(controller_pid), workers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--in-flight", type=int, help="tasks dispatched at a time at most (default: all the credit)")
    args = parser.parse_args()
    run(args.workers, args.seconds, args.in_flight)


if __name__ == "__main__":
    main()
