"""The pushgateway sink against a real Pushgateway."""

from __future__ import annotations

from typing import Any

import pytest
from cyclone_pushgateway import PushgatewaySink
from prometheus_client import CollectorRegistry, Counter, Gauge, delete_from_gateway, push_to_gateway

from cyclone_core import ConfigError, CycloneError, Metric, MetricKind, Result, Status, structure

T0 = 1_764_000_000.0


def _sink(gateway, **options: Any) -> PushgatewaySink:
    sink = structure({"url": gateway.url, **options}, PushgatewaySink, where="sink 'pushgateway'")
    sink.open()
    return sink


def _result(task_id: str, *metrics: Metric, task_type: str = "lustre-ost-io", status: Status = Status.OK) -> Result:
    return Result(
        task_id=task_id, task_type=task_type, status=status, started_at=T0, duration=1.0, metrics=list(metrics)
    )


def _probe(task_id: str, ost: str, value: float, at: float) -> Result:
    labels = {"fs": "lustre", "ost": ost}
    return _result(task_id, Metric("lustre_ost_write_bytes_per_second", value, "bytes/s", labels, at))


def _key(name: str, **labels: str) -> tuple[str, frozenset[tuple[str, str]]]:
    return name, frozenset(labels.items())


def test_metrics_arrive_with_their_labels_and_the_grouping_key(gateway) -> None:
    sink = _sink(gateway, job="ost-monitor", grouping={"instance": "node01", "site": "a/b c"})
    files = Metric("files_created", 12, "1", {"node": "n1"}, kind=MetricKind.COUNTER)
    sink.write([_probe("r1", "OST000a", 5.12e8, T0), _result("r2", files, task_type="files", status=Status.FAILED)])
    group = {"job": "ost-monitor", "instance": "node01", "site": "a/b c"}
    samples = gateway.samples()
    assert samples == {
        _key("lustre_ost_write_bytes_per_second", fs="lustre", ost="OST000a", **group): 5.12e8,
        _key("files_created_total", node="n1", **group): 12.0,
        _key("cyclone_results_total", task_type="lustre-ost-io", status="ok", **group): 1.0,
        _key("cyclone_results_total", task_type="files", status="failed", **group): 1.0,
    }
    types = gateway.types()
    assert types["lustre_ost_write_bytes_per_second"] == "gauge"
    assert types["files_created"] == "counter"  # the parser names a counter family without _total
    (pushed,) = [g for g in gateway.groups() if g["labels"].get("job") == "ost-monitor"]
    assert pushed["labels"] == group
    assert pushed["last_push_successful"] is True


def test_file_creation_metrics_keep_their_cyclone_2_names(gateway) -> None:
    sink = _sink(gateway)  # job "cyclone", no other grouping label: as Cyclone 2.x pushed
    labels = [{"target": "lustre", "mdt_index": str(mdt), "ost_index": "10"} for mdt in (0, 1)]
    sink.write(
        [
            _result("c0", Metric("cyclone_lustre_file_creation_check", 1.0, "1", labels[0]),
                    Metric("cyclone_lustre_file_creation_error", 0.0, "1", labels[0]), task_type="file-create"),
            _result("c1", Metric("cyclone_lustre_file_creation_check", 0.0, "1", labels[1]),
                    Metric("cyclone_lustre_file_creation_error", 1.0, "1", labels[1]), task_type="file-create"),
        ]
    )  # fmt: skip
    samples = gateway.samples()
    group = {"job": "cyclone", "instance": ""}  # the gateway adds an empty instance
    assert samples[_key("cyclone_lustre_file_creation_check", **labels[0], **group)] == 1.0
    assert samples[_key("cyclone_lustre_file_creation_check", **labels[1], **group)] == 0.0
    assert samples[_key("cyclone_lustre_file_creation_error", **labels[0], **group)] == 0.0
    assert samples[_key("cyclone_lustre_file_creation_error", **labels[1], **group)] == 1.0
    types = gateway.types()
    assert types["cyclone_lustre_file_creation_check"] == types["cyclone_lustre_file_creation_error"] == "gauge"


def test_each_push_carries_the_latest_known_state(gateway) -> None:
    sink = _sink(gateway)
    first = [_probe("r1", "OST0001", 1.0, T0), _probe("r2", "OST0002", 2.0, T0)]
    sink.write(first)
    sink.write([_probe("r3", "OST0001", 3.0, T0 + 60)])  # the next round probed only OST0001
    sink.write(first)  # a late re-delivery of the first batch changes nothing
    samples = gateway.samples()
    group = {"job": "cyclone", "instance": ""}
    name = "lustre_ost_write_bytes_per_second"
    assert samples[_key(name, fs="lustre", ost="OST0001", **group)] == 3.0
    assert samples[_key(name, fs="lustre", ost="OST0002", **group)] == 2.0  # kept although not re-measured
    assert samples[_key("cyclone_results_total", task_type="lustre-ost-io", status="ok", **group)] == 3.0


@pytest.mark.parametrize(("method", "kept"), [("put", False), ("post", True)])
def test_put_replaces_the_group_and_post_only_its_own_names(gateway, method: str, kept: bool) -> None:
    registry = CollectorRegistry()
    Gauge("pushed_by_someone_else", "another pusher's metric", registry=registry).set(7)
    push_to_gateway(gateway.url, job="cyclone", registry=registry)
    _sink(gateway, method=method).write([_probe("r1", "OST0001", 1.0, T0)])
    names = {name for name, _ in gateway.samples()}
    assert "lustre_ost_write_bytes_per_second" in names
    assert ("pushed_by_someone_else" in names) is kept


def test_gateway_down_then_up_loses_nothing(gateway) -> None:
    sink = _sink(gateway, grouping={"instance": "node01"})
    sink.write([_probe("r1", "OST0001", 1.0, T0)])
    gateway.stop()
    during = [_probe("r2", "OST0002", 2.0, T0)]
    for _ in range(2):  # every attempt while it is down fails with one line
        with pytest.raises(CycloneError) as caught:
            sink.write(during)
        message = str(caught.value)
        assert message.startswith(f"pushgateway {gateway.url} (job cyclone, instance node01): push failed: ")
        assert "Connection refused" in message
        assert "\n" not in message
    gateway.start()  # empty: it keeps no state across restarts here
    sink.write(during)  # the master offers the failed batch again
    group = {"job": "cyclone", "instance": "node01"}
    name = "lustre_ost_write_bytes_per_second"
    samples = gateway.samples()
    assert samples[_key(name, fs="lustre", ost="OST0001", **group)] == 1.0
    assert samples[_key(name, fs="lustre", ost="OST0002", **group)] == 2.0
    assert samples[_key("cyclone_results_total", task_type="lustre-ost-io", status="ok", **group)] == 2.0


def test_a_metric_of_another_type_elsewhere_is_one_clear_line(gateway) -> None:
    registry = CollectorRegistry()
    Counter("probe_runs", "counted elsewhere", registry=registry).inc()
    push_to_gateway(gateway.url, job="elsewhere", registry=registry)
    sink = _sink(gateway)
    with pytest.raises(CycloneError) as caught:
        sink.write([_result("r1", Metric("probe_runs_total", 5.0))])  # a gauge here
    message = str(caught.value)
    assert message.startswith(
        f"pushgateway {gateway.url} (job cyclone): push failed: HTTP 400: pushed metrics are invalid"
    )
    assert "probe_runs_total" in message
    assert "\n" not in message
    delete_from_gateway(gateway.url, job="elsewhere")  # the operator resolves the clash
    sink.write([])
    assert gateway.samples()[_key("probe_runs_total", job="cyclone", instance="")] == 5.0


def test_invalid_names_are_mapped_and_accepted_by_the_gateway(gateway) -> None:
    sink = _sink(gateway)
    sink.write([_result("r1", Metric("probe.latency-ms", 1.5, labels={"0node": "a", "__x": "b", "os-t": "c"}))])
    assert gateway.samples()[_key("probe_latency_ms", _0node="a", _x="b", os_t="c", job="cyclone", instance="")] == 1.5


@pytest.mark.parametrize(
    ("options", "problem"),
    [
        (
            {"url": "ftp://gateway:9091"},
            "url: expected http://HOST:PORT or https://HOST:PORT, got 'ftp://gateway:9091'",
        ),
        ({"url": "gateway:9091"}, "url: expected http://HOST:PORT"),
        ({"job": ""}, "job: must not be empty"),
        ({"grouping": {"job": "x"}}, "grouping: 'job' cannot be a grouping label"),
        ({"grouping": {"in-stance": "x"}}, "grouping: 'in-stance' cannot be a grouping label"),
        ({"method": "patch"}, "method: expected put or post, got 'patch'"),
        ({"timeout": 0}, "timeout: must be > 0, got 0"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_bad_options_are_one_line_config_errors(options: dict[str, Any], problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        structure(options, PushgatewaySink, where="sink 'pushgateway'")
    message = str(caught.value)
    assert message.startswith("sink 'pushgateway': ")
    assert problem in message
    assert "\n" not in message


def test_interval_is_the_flush_interval() -> None:
    assert structure({"interval": 60}, PushgatewaySink, where="sink").flush_interval == 60.0
    assert structure({}, PushgatewaySink, where="sink").flush_interval == 15.0


def test_the_sink_is_registered_under_its_name(cyclone_plugins) -> None:
    assert cyclone_plugins.sink("pushgateway") is PushgatewaySink
