"""The sink's state without a gateway: ordering, expiry, kinds and name mapping."""

from __future__ import annotations

import pytest
from cyclone_pushgateway.state import MetricState, label_name, metric_name
from prometheus_client import CollectorRegistry, generate_latest

from cyclone_core import Metric, MetricKind, Result, Status


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _result(task_id: str, *metrics: Metric, started_at: float = 100.0) -> Result:
    return Result(
        task_id=task_id, task_type="t", status=Status.OK, started_at=started_at, duration=1.0, metrics=list(metrics)
    )


def _exposed(state: MetricState) -> list[str]:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(state)
    return [line for line in generate_latest(registry).decode().splitlines() if not line.startswith("# HELP")]


def test_newer_measurements_win_whatever_the_arrival_order() -> None:
    state = MetricState()
    state.apply([_result("b", Metric("m", 2.0, timestamp=20.0))])
    state.apply([_result("a", Metric("m", 1.0, timestamp=10.0))])  # older, arrives later
    state.apply([_result("c", Metric("m", 3.0), started_at=5.0)])  # no timestamp: its task's end, 6.0
    assert "m 2.0" in _exposed(state)


def test_series_not_updated_for_expire_seconds_are_dropped() -> None:
    clock = Clock()
    state = MetricState(expire=60, clock=clock)
    state.apply(
        [_result("a", Metric("m", 1.0, labels={"ost": "OST0001"}), Metric("m", 2.0, labels={"ost": "OST0002"}))]
    )
    clock.now += 45
    state.apply([_result("b", Metric("m", 3.0, labels={"ost": "OST0001"}, timestamp=500.0))])
    clock.now += 30  # OST0002 was last seen 75 s ago
    state.drop_expired()
    lines = _exposed(state)
    assert 'm{ost="OST0001"} 3.0' in lines
    assert not any("OST0002" in line for line in lines)
    clock.now += 3600
    state.drop_expired()
    assert not any(line.startswith("m") for line in _exposed(state))


def test_without_expire_every_series_stays() -> None:
    clock = Clock()
    state = MetricState(clock=clock)
    state.apply([_result("a", Metric("m", 1.0))])
    clock.now += 10**9
    state.drop_expired()
    assert "m 1.0" in _exposed(state)


def test_counters_are_exposed_with_total_and_a_kind_clash_is_skipped(caplog: pytest.LogCaptureFixture) -> None:
    state = MetricState()
    state.apply(
        [
            _result(
                "a", Metric("files", 4.0, kind=MetricKind.COUNTER), Metric("bytes_total", 9.0, kind=MetricKind.COUNTER)
            ),
            _result("b", Metric("files_total", 1.0), Metric("files_total", 1.0)),  # gauges under the counter's name
        ]
    )
    lines = _exposed(state)
    assert "# TYPE files_total counter" in lines
    assert "files_total 4.0" in lines
    assert "bytes_total 9.0" in lines
    assert "files_total 1.0" not in lines
    assert caplog.text.count("metric files_total arrives as counter and as gauge") == 1


def test_results_are_counted_once_by_type_and_status() -> None:
    state = MetricState()
    batch = [_result("a"), _result("b"), Result(task_id="c", task_type="t", status=Status.TIMEOUT)]
    state.apply(batch)
    state.apply(batch)
    lines = _exposed(state)
    assert 'cyclone_results_total{status="ok",task_type="t"} 2.0' in lines
    assert 'cyclone_results_total{status="timeout",task_type="t"} 1.0' in lines


@pytest.mark.parametrize(
    ("name", "expected"),
    [("lustre_ost_read_seconds", "lustre_ost_read_seconds"), ("a.b-c d", "a_b_c_d"), ("9lives", "_9lives"),
     ("ns:sub", "ns:sub"), ("", "_"), ("ünï", "_n_")],
)  # fmt: skip
def test_metric_names_are_mapped_onto_prometheus_rules(name: str, expected: str) -> None:
    assert metric_name(name) == expected


@pytest.mark.parametrize(
    ("name", "expected"),
    [("ost_index", "ost_index"), ("ns:sub", "ns_sub"), ("0x", "_0x"), ("__name__", "_name__"), ("a-b", "a_b")],
)
def test_label_names_are_mapped_onto_prometheus_rules(name: str, expected: str) -> None:
    assert label_name(name) == expected
