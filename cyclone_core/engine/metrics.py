"""The master's Prometheus endpoint.

The master publishes a snapshot of its counters about once a second (:meth:`MetricsServer.publish`);
a scrape reads the latest snapshot.  Nothing is updated per task on the hot path, and the
endpoint has its own registry, so embedding Cyclone does not touch the process-wide one.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from cyclone_core.engine.retry import attempt_counters
from cyclone_core.errors import ConfigError

if TYPE_CHECKING:
    from cyclone_core.engine.scheduler import Histogram

__all__ = ("MetricsServer",)


def _bound(bound: float) -> str:
    return "+Inf" if math.isinf(bound) else repr(float(bound))


class _Collector(Collector):
    def __init__(self) -> None:
        #: The master's latest status snapshot and its task durations as (upper bound,
        #: cumulative count) pairs ending with +Inf, and their sum; swapped in whole.
        self.latest: tuple[dict[str, Any], list[tuple[float, int]], float] | None = None

    def collect(self) -> Iterator[Metric]:
        latest = self.latest  # one reference read: the master swaps in whole snapshots
        if latest is None:
            return
        s, duration_buckets, duration_sum = latest
        tasks = CounterMetricFamily(
            "cyclone_tasks", "Tasks that reached a terminal result, by outcome.", labels=["outcome"]
        )
        for outcome in ("succeeded", "failed", "quarantined"):
            tasks.add_metric([outcome], s[outcome])
        yield tasks
        attempts = CounterMetricFamily(
            "cyclone_attempts_ended", "Attempts that ended without a result of the task's own.", labels=["reason"]
        )
        for counter, ending in attempt_counters().items():
            attempts.add_metric([ending.value], s[counter])
        yield attempts
        yield CounterMetricFamily("cyclone_tasks_submitted", "Tasks taken from the generator.", value=s["submitted"])
        yield GaugeMetricFamily("cyclone_queue_depth", "Tasks waiting for a controller.", value=s["queued"])
        yield GaugeMetricFamily("cyclone_in_flight", "Tasks leased to controllers.", value=s["in_flight"])
        yield GaugeMetricFamily("cyclone_controllers", "Controllers connected.", value=len(s["controllers"]))
        yield CounterMetricFamily(
            "cyclone_protocol_errors", "Frames the master could not understand.", value=s["protocol_errors"]
        )
        if duration_buckets:
            yield HistogramMetricFamily(
                "cyclone_task_duration_seconds",
                "Execution time of task attempts, as reported by the controllers.",
                buckets=[(_bound(bound), count) for bound, count in duration_buckets],
                sum_value=duration_sum,
            )
        backlog = GaugeMetricFamily(
            "cyclone_sink_backlog", "Results in the journal a sink does not have yet.", labels=["sink"]
        )
        errors = CounterMetricFamily("cyclone_sink_errors", "Failed deliveries to a sink.", labels=["sink"])
        for sink in sorted(s["sinks"], key=lambda sink: sink["name"]):
            backlog.add_metric([sink["name"]], sink["backlog"])
            errors.add_metric([sink["name"]], sink["errors"])
        yield backlog
        yield errors


class MetricsServer:
    """An HTTP endpoint serving the master's metrics.

    :param port: TCP port; 0 picks a free one (see :attr:`port`).
    :param addr: address to listen on.
    """

    def __init__(self, port: int, addr: str = "0.0.0.0") -> None:  # noqa: S104  (scraped from other hosts)
        self.registry = CollectorRegistry(auto_describe=False)
        self._collector = _Collector()
        self.registry.register(self._collector)
        try:
            self._server, self._thread = start_http_server(port, addr=addr, registry=self.registry)
        except OSError as exc:
            raise ConfigError(f"metrics port {port}: cannot listen ({exc.strerror or exc})") from None
        #: The port actually listened on.
        self.port: int = self._server.server_port

    def publish(self, snapshot: dict[str, Any], durations: Histogram) -> None:
        """Make the master's status ``snapshot`` and task ``durations`` what scrapes see."""
        self._collector.latest = (snapshot, durations.cumulative(), durations.sum)

    def close(self) -> None:
        """Stop serving."""
        self._server.shutdown()
        self._server.server_close()
