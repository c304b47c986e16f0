"""The scheduler's cost per dispatched task with 1, 8 and 32 task types (no sockets).

    python benchmarks/dispatch.py [--tasks 200000] [--batch 64] [--types 1 8 32]

Fills the window with no-op records spread round-robin over the task types, then lets a
controller that runs every type take batches of ``--batch`` tasks (granting the credit back
with each result batch) until every task has been dispatched and settled.  Prints
microseconds per task for dispatch (``take``) and for settling (``results``); a second line
gives a controller that runs only half of the types, so the other heads are set aside.
"""

from __future__ import annotations

import argparse
import time

from cyclone_core.config import MasterSettings
from cyclone_core.engine.scheduler import Scheduler, TaskRecord
from cyclone_core.model import Result, Status


def run(tasks: int, batch: int, types: int, served: int) -> tuple[float, float]:
    names = [f"type{i}" for i in range(types)]
    scheduler = Scheduler(MasterSettings(window=tasks), known_types=names)
    scheduler.submit(TaskRecord(n, f"r-{n}", names[n % types], {}) for n in range(1, tasks + 1))
    runs = names[:served]
    scheduler.register("c1", host="h", pid=1, workers=1, credit=batch, task_types=runs, now=0.0)
    taking = settling = 0.0
    clock = time.perf_counter
    done = 0
    expected = sum(1 for n in range(1, tasks + 1) if names[n % types] in runs)
    while done < expected:
        start = clock()
        actions = scheduler.take(0.0)
        taking += clock() - start
        records = actions.dispatch.get("c1", [])
        results = [Result(r.id, r.type, Status.OK, attempt=r.attempt) for r in records]
        start = clock()
        scheduler.results("c1", results, 0.0)
        scheduler.grant("c1", len(records), 0.0)
        settling += clock() - start
        done += len(records)
    return taking / expected * 1e6, settling / expected * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--types", type=int, nargs="+", default=[1, 8, 32])
    args = parser.parse_args()
    print(f"{args.tasks:,} tasks, batches of {args.batch}; microseconds per task")
    for types in args.types:
        take, settle = run(args.tasks, args.batch, types, types)
        line = f"{types:3d} task types: dispatch {take:.2f} us, settle {settle:.2f} us"
        if types > 1:
            half_take, _ = run(args.tasks, args.batch, types, types // 2)
            line += f"; controller running {types // 2} of them: dispatch {half_take:.2f} us"
        print(line)


if __name__ == "__main__":
    main()
