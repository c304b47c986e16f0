"""What the ``pushgateway`` sink pushes: the latest known value of every series.

Pure bookkeeping, no I/O: :meth:`MetricState.apply` folds results in, :meth:`MetricState.collect`
(the ``prometheus_client`` collector protocol) yields the metric families to push.

Rules
    * A series is a metric name plus its labels.  Each push carries every series seen since the
      sink started, with its latest value ("latest known state"): OSTs probed in rounds stay
      visible between their probes, and a PUT (which replaces the whole group) never drops a
      series just because it was not measured in the last interval.  ``expire`` drops series
      not refreshed for that many seconds (an OST taken out of service).
    * "Latest" is by measurement time (the metric's timestamp, else the end of its task), so a
      batch delivered again, or late, never overwrites a newer value.
    * Metrics are gauges unless their ``kind`` is ``counter``.  A counter's value is its total
      (as Prometheus expects), not an increment, and its sample name ends in ``_total``
      (added when missing, as ``prometheus_client`` does).
    * Names and label names are mapped onto the Prometheus rules: every character other than
      ASCII letters, digits, ``_`` (and ``:`` in metric names) becomes ``_``; a leading digit
      gets a ``_`` in front; a label name starting with ``__`` (reserved) keeps one ``_``.  The
      first kind seen for a name wins; a metric of the other kind under the same name is
      skipped with a warning (a Pushgateway rejects a push that mixes them).
    * ``cyclone_results_total{task_type,status}`` counts the results delivered to the sink
      since it started; a result delivered again is not counted twice.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterator, Sequence

import attrs
from prometheus_client.metrics_core import Metric as Family

from cyclone_core import MetricKind, Result

__all__ = ("RESULTS_TOTAL", "MetricState", "label_name", "metric_name")

log = logging.getLogger("cyclone.sink.pushgateway")

#: The sink's own counter of delivered results.
RESULTS_TOTAL = "cyclone_results"
# Task ids remembered to count each result once; re-delivery follows a failure within minutes.
_RECENT_IDS = 100_000

_BAD_METRIC_CHARS = re.compile(r"[^a-zA-Z0-9_:]")
_BAD_LABEL_CHARS = re.compile(r"[^a-zA-Z0-9_]")


def metric_name(name: str) -> str:
    """``name`` mapped onto the Prometheus metric name rules."""
    name = _BAD_METRIC_CHARS.sub("_", name) or "_"
    return f"_{name}" if name[0].isdigit() else name


def label_name(name: str) -> str:
    """``name`` mapped onto the Prometheus label name rules."""
    name = _BAD_LABEL_CHARS.sub("_", name) or "_"
    if name[0].isdigit():
        return f"_{name}"
    return "_" + name.lstrip("_") if name.startswith("__") else name


@attrs.define
class _Series:
    value: float
    measured_at: float  # orders updates
    seen_at: float  # the sink's clock when last updated; for expiry


@attrs.define
class _Family:
    kind: MetricKind
    help: str
    series: dict[tuple[tuple[str, str], ...], _Series] = attrs.field(factory=dict)


class MetricState:
    """The latest value of every series, and the count of results by type and status.

    :param expire: seconds after which a series that was not updated is dropped; 0 keeps
        every series for the life of the sink.
    :param clock: monotonic seconds (tests pass their own).
    """

    def __init__(self, expire: float = 0.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.expire = expire
        self.clock = clock
        # keyed by the exposed sample name, so a gauge "x_total" and a counter "x" collide here
        # rather than at the gateway
        self._families: dict[str, _Family] = {}
        self._counts: dict[tuple[str, str], int] = {}
        self._recent: dict[str, None] = {}  # insertion-ordered set of task ids
        self._warned: set[str] = set()

    def apply(self, results: Sequence[Result]) -> None:
        """Fold a batch of results into the state."""
        now = self.clock()
        for result in results:
            if result.task_id not in self._recent:
                self._recent[result.task_id] = None
                if len(self._recent) > _RECENT_IDS:
                    del self._recent[next(iter(self._recent))]
                key = (result.task_type, str(result.status))
                self._counts[key] = self._counts.get(key, 0) + 1
            ended = result.started_at + result.duration
            for metric in result.metrics:
                name = metric_name(metric.name)
                if metric.kind is MetricKind.COUNTER:
                    name = name.removesuffix("_total") + "_total"
                family = self._families.get(name)
                if family is None:
                    unit = f" ({metric.unit})" if metric.unit else ""
                    family = self._families[name] = _Family(metric.kind, f"Cyclone task metric {metric.name}{unit}")
                elif family.kind is not metric.kind:
                    if name not in self._warned:
                        self._warned.add(name)
                        log.warning("metric %s arrives as %s and as %s; the %s samples are skipped", name,
                                    family.kind, metric.kind, metric.kind)  # fmt: skip
                    continue
                labels = tuple(sorted((label_name(k), v) for k, v in metric.labels.items()))
                measured_at = metric.timestamp if metric.timestamp is not None else ended
                current = family.series.get(labels)
                if current is None or measured_at >= current.measured_at:
                    family.series[labels] = _Series(metric.value, measured_at, now)

    def drop_expired(self) -> None:
        """Forget series not updated for ``expire`` seconds (nothing when ``expire`` is 0)."""
        if not self.expire:
            return
        oldest = self.clock() - self.expire
        for name, family in list(self._families.items()):
            family.series = {k: s for k, s in family.series.items() if s.seen_at >= oldest}
            if not family.series:
                del self._families[name]

    def collect(self) -> Iterator[Family]:
        """The metric families to push (the ``prometheus_client`` collector protocol)."""
        for name, family in sorted(self._families.items()):
            # prometheus_client names a counter family without "_total" and adds it back.
            kind = str(family.kind)
            exposed = Family(name.removesuffix("_total") if kind == "counter" else name, family.help, kind)
            for labels, series in family.series.items():
                exposed.add_sample(name, dict(labels), series.value)
            yield exposed
        results = Family(
            RESULTS_TOTAL, "Results delivered to this sink since it started, by task type and status.", "counter"
        )
        for (task_type, status), count in sorted(self._counts.items()):
            results.add_sample(f"{RESULTS_TOTAL}_total", {"task_type": task_type, "status": status}, count)
        yield results
