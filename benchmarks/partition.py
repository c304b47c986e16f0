"""A controller cut off from its master by a network partition: how long until the master notices,
how long until its tasks have run elsewhere, and whether anything was lost or doubled.

    sudo python benchmarks/partition.py [--trials 3] [--controller-timeout 5] [--heartbeat 0.5]
    sudo python benchmarks/partition.py --daemon-defaults --count 6000

Root only: it builds the virtual cluster of the cluster tests (tests/cluster/netns.py: a head
node and three nodes in network namespaces on one bridge), runs a real ``cyclone master`` on the
head node and a ``cyclone controller`` (2 workers) on each node, with CurveZMQ keys, on a run of
0.05 s sleep tasks.  Once node1 has delivered results, its switch port goes down
(``ip link set ... down``) for twice the timeouts, then comes back up.  Per trial it prints:

- detected: partition to the master's ``controller node1 lost`` line (its tasks re-queued then);
- noticed: partition to node1's own ``master ... silent`` line;
- re-run: partition to the moment the last of node1's re-queued tasks had its result in the sink;
- rejoined: heal to node1's ``registered again`` line;
- lost and doubled: tasks without a result, results delivered more than once.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

CLUSTER_TESTS = Path(__file__).resolve().parent.parent / "tests" / "cluster"
sys.path[:0] = [str(CLUSTER_TESTS), str(CLUSTER_TESTS.parent / "engine")]

import attrs  # noqa: E402
from cluster_support import ClusterSetup  # noqa: E402
from netns import VirtualCluster, missing_requirements, wait_for  # noqa: E402

from cyclone_core.settings import ControllerSettings, MasterSettings  # noqa: E402

#: The settings that decide the figures, printed with them.
SHOWN = ("controller_timeout", "master_timeout", "heartbeat_interval", "reconnect_interval", "reconnect_max")

_STAMP = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) .*?(?:%s)", re.M)


def _logged_at(text: str, pattern: str) -> float | None:
    """Epoch time of the first log line matching ``pattern`` (the daemons log local time, in ms)."""
    match = re.search(_STAMP.pattern % pattern, text, re.M)
    return datetime.strptime(match[1], "%Y-%m-%d %H:%M:%S,%f").timestamp() if match else None


def trial(setup: ClusterSetup, directory: Path, count: int, partition: float) -> dict[str, float]:
    """One run with node1 partitioned for ``partition`` seconds; the figures of the docstring."""
    directory.mkdir()
    master, out = setup.start_master(directory, count=count, seconds=0.05)
    node1, *others = (setup.start_controller(node, directory) for node in setup.cluster.nodes)
    seen: dict[str, float] = {}  # task id -> when its result was first in the sink
    deliveries = 0

    def read() -> list[dict[str, object]]:
        nonlocal deliveries
        lines = out.read_text().splitlines() if out.exists() else []
        results = [json.loads(line) for line in lines if line.endswith("}")]
        now = time.time()
        for result in results[deliveries:]:
            seen.setdefault(str(result["task_id"]), now)
        deliveries = len(results)
        return results

    wait_for(lambda: sum(r["controller"] == "node1" for r in read()) >= 10, 120, "results from node1")
    cut = time.time()
    setup.cluster.cut("node1")
    healed = None
    while master.proc.poll() is None:
        results = read()
        if healed is None and time.time() > cut + partition:
            setup.cluster.heal("node1")
            healed = time.time()
        time.sleep(0.05)
    results = read()
    if healed is None:
        raise SystemExit("the run ended before the partition did: raise --count")
    if master.proc.returncode != 0:
        raise SystemExit(f"the master failed:\n{master.output()[-2000:]}")
    requeued = [str(r["task_id"]) for r in results if r["history"]]
    keys = {str(r["key"]) for r in results}
    log = master.output()
    detected = _logged_at(log, "controller node1 lost")
    noticed = _logged_at(node1.output(), r"master \S+ silent")
    rejoined = _logged_at(node1.output(), "registered again")
    for controller in (node1, *others):
        controller.proc.wait(60)
    return {
        "detected_s": detected - cut if detected else float("nan"),
        "noticed_s": noticed - cut if noticed else float("nan"),
        "rerun_s": max(seen[t] for t in requeued) - cut if requeued else float("nan"),
        "rejoined_s": rejoined - healed if rejoined else float("nan"),
        "requeued": len(requeued),
        "lost": count - len(keys),
        "doubled": len(results) - len(keys),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--count", type=int, default=2000, help="0.05 s sleep tasks per run")
    parser.add_argument("--controller-timeout", type=float, default=5.0, help="master and controller timeouts, s")
    parser.add_argument("--heartbeat", type=float, default=0.5, help="heartbeat interval of both sides, s")
    parser.add_argument(
        "--daemon-defaults", action="store_true", help="the daemons' default timeouts, heartbeats and reconnect delays"
    )
    args = parser.parse_args()
    reason = missing_requirements()
    if reason:
        raise SystemExit(f"partition.py: {reason}")
    if args.daemon_defaults:
        master_settings: dict[str, float] = {}
        controller_settings: dict[str, float] = {"drain_timeout": 5.0}
        timeout = max(MasterSettings().controller_timeout, ControllerSettings().master_timeout)
    else:
        timeout = args.controller_timeout
        master_settings = {"heartbeat_interval": args.heartbeat, "controller_timeout": timeout}
        controller_settings = {"heartbeat_interval": args.heartbeat, "master_timeout": timeout,
                               "reconnect_interval": 0.1, "reconnect_max": 0.5, "drain_timeout": 5.0}  # fmt: skip
    shown = {
        **attrs.asdict(MasterSettings(**master_settings)),
        **attrs.asdict(ControllerSettings(**controller_settings)),
    }
    print(", ".join(f"{key} {shown[key]:g} s" for key in SHOWN)
          + f"; partition {2 * timeout:g} s, {args.count} tasks of 0.05 s on 3 controllers x 2 workers")  # fmt: skip
    rows = []
    with tempfile.TemporaryDirectory(prefix="cyclone-partition-") as tmp, VirtualCluster(Path(tmp) / "vc") as vc:
        setup = ClusterSetup.make(
            vc, Path(tmp), master_settings=master_settings, controller_settings=controller_settings
        )
        for index in range(args.trials):
            rows.append(trial(setup, Path(tmp) / f"trial-{index}", args.count, 2 * timeout))
            vc.kill_strays()
            row = rows[-1]
            print(f"trial {index + 1}: detected {row['detected_s']:.2f} s, noticed {row['noticed_s']:.2f} s, "
                  f"re-run {row['rerun_s']:.2f} s ({row['requeued']} tasks), rejoined {row['rejoined_s']:.2f} s "
                  f"after the heal, lost {row['lost']}, doubled {row['doubled']}", flush=True)  # fmt: skip
    for key in ("detected_s", "noticed_s", "rerun_s", "rejoined_s"):
        print(f"median {key[:-2]}: {statistics.median(row[key] for row in rows):.2f} s")
    print(f"lost {sum(row['lost'] for row in rows)}, doubled {sum(row['doubled'] for row in rows)} in {len(rows)} runs")


if __name__ == "__main__":
    main()
