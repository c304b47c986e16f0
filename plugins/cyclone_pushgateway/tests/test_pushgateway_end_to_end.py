"""A whole run through the engine to a Pushgateway that is down when the run starts and comes
up during it: the master's outbox keeps the results until the push succeeds."""

from __future__ import annotations

import threading
from typing import Any

from cyclone_core.testing import wait_until

TASKS = 500


def test_metrics_arrive_when_the_gateway_comes_up_mid_run(gateway, cyclone_cluster) -> None:
    gateway.stop()
    sink_errors: list[str] = []

    def watch(snapshot: dict[str, Any]) -> None:  # the master's progress callback, once a second
        sink_errors.extend(s["last_error"] for s in snapshot["sinks"] if s["last_error"])

    def come_up_later() -> None:
        wait_until(lambda: sink_errors, timeout=60, what="the sink to report the gateway down")
        gateway.start()

    starter = threading.Thread(target=come_up_later, daemon=True)
    starter.start()
    run = cyclone_cluster(
        "benchmark",
        {"count": TASKS, "task": "sleep", "args": {"seconds": 0.005}},
        sinks={"pushgateway": {"url": gateway.url, "interval": 0.2, "timeout": 2, "grouping": {"instance": "e2e"}}},
        progress=watch,
    )
    starter.join(timeout=60)
    assert run.exit_code == 0, run.summary
    assert run.summary["undelivered"] == 0
    assert any("push failed" in error for error in sink_errors), sink_errors
    key = (
        "cyclone_results_total",
        frozenset({"job": "cyclone", "instance": "e2e", "task_type": "sleep", "status": "ok"}.items()),
    )
    assert gateway.samples()[key] == TASKS
