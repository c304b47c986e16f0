"""The master's Prometheus endpoint.

The master publishes a snapshot of its counters about once a second (:meth:`MetricsServer.publish`);
a scrape reads the latest snapshot.  Nothing is updated per task on the hot path, and the
endpoint has its own registry, so embedding Cyclone does not touch the process-wide one.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any

import attrs
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from cyclone_core.errors import ConfigError

__all__ = ("MetricsSample", "MetricsServer")


@attrs.frozen
class MetricsSample:
    """Everything one scrape shows; built by the master's event loop."""

    submitted: int = 0
    succeeded: int = 0
    failed: int = 0
    quarantined: int = 0
    timed_out: int = 0
    crashed: int = 0
    lost: int = 0
    queued: int = 0
    in_flight: int = 0
    controllers: int = 0
    protocol_errors: int = 0
    #: (upper bound, cumulative count) pairs ending with +Inf, and the sum, of task durations.
    duration_buckets: Sequence[tuple[float, int]] = ()
    duration_sum: float = 0.0
    #: sink name -> (backlog, errors)
    sinks: dict[str, tuple[int, int]] = attrs.field(factory=dict)


def _bound(bound: float) -> str:
    return "+Inf" if math.isinf(bound) else repr(float(bound))


class _Collector(Collector):
    def __init__(self) -> None:
        self.sample = MetricsSample()

    def collect(self) -> Iterator[Metric]:
        s = self.sample  # one reference read: the master swaps in whole samples
        tasks = CounterMetricFamily(
            "cyclone_tasks", "Tasks that reached a terminal result, by outcome.", labels=["outcome"]
        )
        for outcome, value in (("succeeded", s.succeeded), ("failed", s.failed), ("quarantined", s.quarantined)):
            tasks.add_metric([outcome], value)
        yield tasks
        attempts = CounterMetricFamily(
            "cyclone_attempts_ended", "Attempts that ended without a result of the task's own.", labels=["reason"]
        )
        for reason, value in (("timeout", s.timed_out), ("crashed", s.crashed), ("lost", s.lost)):
            attempts.add_metric([reason], value)
        yield attempts
        yield CounterMetricFamily("cyclone_tasks_submitted", "Tasks taken from the generator.", value=s.submitted)
        yield GaugeMetricFamily("cyclone_queue_depth", "Tasks waiting for a controller.", value=s.queued)
        yield GaugeMetricFamily("cyclone_in_flight", "Tasks leased to controllers.", value=s.in_flight)
        yield GaugeMetricFamily("cyclone_controllers", "Controllers connected.", value=s.controllers)
        yield CounterMetricFamily(
            "cyclone_protocol_errors", "Frames the master could not understand.", value=s.protocol_errors
        )
        if s.duration_buckets:
            yield HistogramMetricFamily(
                "cyclone_task_duration_seconds",
                "Execution time of task attempts, as reported by the controllers.",
                buckets=[(_bound(bound), count) for bound, count in s.duration_buckets],
                sum_value=s.duration_sum,
            )
        backlog = GaugeMetricFamily(
            "cyclone_sink_backlog", "Results in the journal a sink does not have yet.", labels=["sink"]
        )
        errors = CounterMetricFamily("cyclone_sink_errors", "Failed deliveries to a sink.", labels=["sink"])
        for name, (waiting, failures) in sorted(s.sinks.items()):
            backlog.add_metric([name], waiting)
            errors.add_metric([name], failures)
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

    def publish(self, sample: MetricsSample) -> None:
        """Make ``sample`` what scrapes see."""
        self._collector.sample = sample

    def close(self) -> None:
        """Stop serving."""
        self._server.shutdown()
        self._server.server_close()

    @staticmethod
    def sample(snapshot: dict[str, Any], duration: Any) -> MetricsSample:
        """A sample from a master status snapshot and its duration :class:`Histogram`."""
        return MetricsSample(
            submitted=snapshot["submitted"],
            succeeded=snapshot["succeeded"],
            failed=snapshot["failed"],
            quarantined=snapshot["quarantined"],
            timed_out=snapshot["timed_out"],
            crashed=snapshot["crashed"],
            lost=snapshot["lost"],
            queued=snapshot["queued"],
            in_flight=snapshot["in_flight"],
            controllers=len(snapshot["controllers"]),
            protocol_errors=snapshot["protocol_errors"],
            duration_buckets=duration.cumulative(),
            duration_sum=duration.sum,
            sinks={s["name"]: (s["backlog"], s["errors"]) for s in snapshot["sinks"]},
        )
