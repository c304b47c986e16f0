"""The master's Prometheus endpoint.

The master publishes a snapshot of its counters about once a second (:meth:`MetricsServer.publish`);
a scrape reads the latest snapshot.  Nothing is updated per task on the hot path, and the
endpoint has its own registry, so embedding Cyclone does not touch the process-wide one.

It listens on loopback unless told otherwise (``master.metrics_bind``), and serves from one
thread, one connection at a time, each given at most :data:`CONNECTION_TIMEOUT` seconds: a
client that connects and says nothing, or many at once, cost no more threads.
"""

from __future__ import annotations

import math
import socket
import socketserver
import threading
from collections.abc import Iterator
from http.server import HTTPServer
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import MetricsHandler
from prometheus_client.registry import Collector

from cyclone_core.engine.retry import attempt_counters
from cyclone_core.errors import ConfigError

if TYPE_CHECKING:
    from cyclone_core.engine.scheduler import Histogram

__all__ = ("CONNECTION_TIMEOUT", "MetricsServer")

#: Seconds one connection to the metrics endpoint may take, reading the request and writing
#: the answer.
CONNECTION_TIMEOUT = 5.0


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
        refusals = CounterMetricFamily(
            "cyclone_refusals", "Frames, handshakes and requests the master refused, by reason.", labels=["reason"]
        )
        for reason, count in sorted(s.get("refusals", {}).items()):
            refusals.add_metric([reason], count)
        yield refusals
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
        dead = CounterMetricFamily(
            "cyclone_dead_letters", "Results a sink cannot store, kept in the journal's dead letters.", labels=["sink"]
        )
        for sink in sorted(s["sinks"], key=lambda sink: sink["name"]):
            backlog.add_metric([sink["name"]], sink["backlog"])
            errors.add_metric([sink["name"]], sink["errors"])
            dead.add_metric([sink["name"]], sink.get("dead_letters", 0))
        yield backlog
        yield errors
        yield dead
        journal = s.get("journal")
        if journal is not None:
            yield GaugeMetricFamily(
                "cyclone_journal_full",
                "1 while the journal cannot be written (a full disk): nothing is dispatched meanwhile.",
                value=int(journal["full"]),
            )
            if journal["free_bytes"] is not None:
                yield GaugeMetricFamily(
                    "cyclone_journal_free_bytes",
                    "Free space on the journal's file system.",
                    value=journal["free_bytes"],
                )


class _Server(HTTPServer):
    """One connection at a time, in the thread that calls ``serve_forever``."""

    def __init__(self, addr: str, port: int, handler: type[MetricsHandler]) -> None:
        infos = socket.getaddrinfo(addr, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        self.address_family, _, _, _, address = infos[0]  # IPv4 or IPv6, as the address is
        super().__init__((str(address[0]), port), handler)

    def server_bind(self) -> None:
        # HTTPServer's own also looks up the host's fully qualified name, which may wait for DNS.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = str(self.server_address[0]), int(self.server_address[1])


class MetricsServer:
    """An HTTP endpoint serving the master's metrics, from one thread.

    :param port: TCP port; 0 picks a free one (see :attr:`port`).
    :param addr: address to listen on: loopback unless told otherwise.
    :param timeout: seconds one connection may take.
    """

    def __init__(self, port: int, addr: str = "127.0.0.1", timeout: float = CONNECTION_TIMEOUT) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self._collector = _Collector()
        self.registry.register(self._collector)
        try:
            # StreamRequestHandler sets ``timeout`` on each connection's socket.
            handler = type("_Handler", (MetricsHandler,), {"registry": self.registry, "timeout": timeout})
            self._server = _Server(addr, port, handler)
        except OSError as exc:
            raise ConfigError(f"metrics endpoint {addr}:{port}: cannot listen ({exc.strerror or exc})") from None
        self._thread = threading.Thread(target=self._server.serve_forever, name="cyclone-metrics", daemon=True)
        self._thread.start()
        #: The address and the port actually listened on.
        self.address: str = self._server.server_name
        self.port: int = self._server.server_port

    def publish(self, snapshot: dict[str, Any], durations: Histogram) -> None:
        """Make the master's status ``snapshot`` and task ``durations`` what scrapes see."""
        self._collector.latest = (snapshot, durations.cumulative(), durations.sum)

    def close(self) -> None:
        """Stop serving (after the connection being served, if any)."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()
