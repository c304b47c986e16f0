"""The mysql sink against the shared MariaDB: idempotence, both layouts, strict modes, odd
text, a killed connection, and one-line errors."""

from __future__ import annotations

import json
import math
import socket
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cyclone_mysql_sink import MySQLSink

from cyclone_core import Attempt, ConfigError, CycloneError, Metric, MetricKind, Status, structure

STRICT = "STRICT_ALL_TABLES,NO_ZERO_DATE,NO_ZERO_IN_DATE,ERROR_FOR_DIVISION_BY_ZERO,NO_ENGINE_SUBSTITUTION"


def _utc(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC).replace(tzinfo=None)


def _batch(make: Any, prefix: str, count: int) -> list[Any]:
    return [make(f"{prefix}-{i}") for i in range(count)]


@pytest.mark.parametrize("layout", ["results", "ost_perf"])
def test_a_batch_delivered_again_is_stored_once(layout, make_sink, table, table_rows, ost_result) -> None:
    sink = make_sink(layout=layout)
    first, second = _batch(ost_result, "run1-a", 300), _batch(ost_result, "run1-b", 200)
    sink.write(first)
    sink.write(first)  # the master offers a batch again after a failure it did not see succeed
    sink.write(first[100:] + second)  # overlapping re-delivery
    sink.write(second + second)  # a duplicate inside one batch
    stored = [row[0] for row in table_rows(table, "task_id")]
    assert sorted(stored) == sorted(r.task_id for r in first + second)


def test_results_layout_stores_every_field(make_sink, table, table_rows, make_result) -> None:
    sink = make_sink()
    metric = Metric("probe_seconds", 1.25, "s", {"node": "n1"}, 1_764_000_000.5, MetricKind.COUNTER)
    result = make_result(
        "run3-1",
        task_type="sleep",
        status=Status.QUARANTINED,
        key="ost7",
        attempt=3,
        started_at=1_764_000_000.123456,
        duration=2.5,
        error="worker crashed",
        metrics=[metric, Metric("ratio", math.nan)],
        payload={"path": "/lustre/x", "sizes": [1, 2]},
        controller="node01-4242",
        history=[Attempt(attempt=1, status=Status.CRASHED, error="killed", controller="node01-4242", finished_at=5.0)],
    )
    before = datetime.now(UTC).replace(tzinfo=None)
    sink.write([result])
    columns = "task_id, task_type, task_key, status, attempt, started_at, duration, error, controller, inserted_at"
    (row,) = table_rows(table, columns)
    assert row[:-1] == (
        "run3-1", "sleep", "ost7", "quarantined", 3, _utc(1_764_000_000.123456), 2.5, "worker crashed", "node01-4242"
    )  # fmt: skip
    ((metrics, payload, history),) = table_rows(table, "metrics, payload, history")
    assert json.loads(metrics) == [
        {"name": "probe_seconds", "value": 1.25, "unit": "s", "labels": {"node": "n1"}, "timestamp": 1_764_000_000.5,
         "kind": "counter"},
        {"name": "ratio", "value": "NaN", "unit": "", "labels": {}, "timestamp": None, "kind": "gauge"},
    ]  # fmt: skip
    assert json.loads(payload) == {"path": "/lustre/x", "sizes": [1, 2]}
    assert json.loads(history) == [
        {"attempt": 1, "status": "crashed", "error": "killed", "controller": "node01-4242", "finished_at": 5.0}
    ]
    # inserted_at is UTC whatever the server's time zone (the sink's sessions run in UTC).
    assert before - timedelta(seconds=5) <= row[-1] <= before + timedelta(minutes=5)


def test_ost_perf_layout_maps_the_probe_metrics(make_sink, table, table_rows, ost_result, make_result) -> None:
    sink = make_sink(layout="ost_perf")
    probed = ost_result("run4-probe", ost="OST000a")
    inactive = make_result(
        "run4-inactive",
        task_type="lustre-ost-io",
        status=Status.FAILED,
        key="OST0003/r1",
        error="OST0003 is inactive",
        # What the probe of an inactive OST reports: no metrics it measured, its labels in the payload.
        payload={"mode": "lustre", "fs": "lustre", "component": "ost", "target": "lustre-OST0003", "state": "inactive"},
    )
    unrelated = make_result("run4-noop")  # another task type: not an OST probe, no row
    sink.write([probed, inactive, unrelated])
    columns = (
        "task_id, fs, ost, size, read_throughput, write_throughput, read_duration, write_duration, "
        "read_seconds, write_seconds, read_timestamp, write_timestamp, status, error"
    )
    assert table_rows(table, columns) == [
        (
            "run4-probe", "lustre", "OST000a", 1 << 30, 2_500_000_000, 512_000_000, 0, 2, 0.4, 2.049,
            _utc(1_764_000_002.75), _utc(1_764_000_001.5), "ok", None,
        ),
        (
            "run4-inactive", "lustre", "OST0003", 0, -1, -1, -1, -1, None, None,
            _utc(1_764_000_000.75), _utc(1_764_000_000.75), "failed", "OST0003 is inactive",
        ),
    ]  # fmt: skip


@pytest.mark.parametrize("layout", ["results", "ost_perf"])
def test_strict_sql_mode_accepts_every_edge_value(layout, make_sink, table, table_rows, ost_result) -> None:
    sink = make_sink(layout=layout, sql_mode=STRICT)
    cursor = sink._connection.cursor()
    cursor.execute("SELECT @@SESSION.sql_mode")
    assert set(STRICT.split(",")) <= set(cursor.fetchone()[0].split(","))
    edge = ost_result(
        "run5-edge",
        started_at=0.0,  # unknown start: NULL, never a zero date
        duration=math.inf,
        key="k" * 1000,
        error="e" * 100_000,
        controller="c" * 1000,
        payload={"value": math.nan, "nested": [math.inf]},
    )
    labels = {"fs": "lustre", "component": "ost", "target": "lustre-OST0001"}
    broken = [Metric(f"cyclone_lustre_ost_{name}", -math.inf if "seconds" in name else math.nan, labels=labels)
              for name in ("write_bytes_per_second", "read_seconds", "probe_bytes")]  # fmt: skip
    nan_metrics = ost_result("run5-nan", metrics=broken, started_at=1e300)  # beyond DATETIME: NULL
    sink.write([edge, nan_metrics])
    assert [row[0] for row in table_rows(table, "task_id")] == ["run5-edge", "run5-nan"]
    if layout == "ost_perf":
        assert table_rows(table, "ost, size, write_throughput, read_duration, read_seconds", order="task_id")[1] == (
            "OST0001",
            0,
            -1,
            -1,
            None,
        )
    else:
        assert table_rows(table, "started_at, duration, CHAR_LENGTH(task_key), CHAR_LENGTH(error)")[0] == (
            None,
            None,
            255,
            16_383,
        )


ODD = 'it\'s "quoted"; DROP TABLE x; -- | pipes | back\\slash \x00 nul, ünïcödé 日本語 🚀 \u200b'


def test_odd_characters_are_stored_verbatim(make_sink, table, table_rows, make_result) -> None:
    sink = make_sink()
    results = [
        make_result(
            f"run6-{ODD}", error=ODD, key=ODD, payload={ODD: ODD}, metrics=[Metric(ODD, 1.0, labels={ODD: ODD})]
        ),
        make_result("run6-surrogate", error="bad name \udcff"),
    ]
    sink.write(results)
    (odd, surrogate) = table_rows(table, "task_id, error, task_key, payload, metrics")
    assert odd[:3] == (f"run6-{ODD}", ODD, ODD)
    assert json.loads(odd[3]) == {ODD: ODD}
    assert json.loads(odd[4])[0]["labels"] == {ODD: ODD}
    assert surrogate[1] == "bad name \ufffd"  # a lone surrogate cannot be stored as UTF-8


def test_killed_connection_reconnects_and_loses_nothing(
    make_sink, admin, table, table_rows, make_result, poll_until
) -> None:
    sink = make_sink()
    first, second = _batch(make_result, "run7-a", 50), _batch(make_result, "run7-b", 50)
    sink.write(first)
    killed = sink._connection.thread_id()
    admin.cursor().execute(f"KILL {killed}")

    def gone() -> bool:
        cursor = admin.cursor()
        cursor.execute("SELECT COUNT(*) FROM information_schema.processlist WHERE id = %s", (killed,))
        return cursor.fetchone()[0] == 0

    poll_until(gone, what=f"connection {killed} to end")
    sink.write(second)
    assert sink._connection.thread_id() != killed
    sink.write(second)
    assert sorted(row[0] for row in table_rows(table, "task_id")) == sorted(r.task_id for r in first + second)


def _unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_unreachable_server_is_one_line_without_the_password() -> None:
    port = _unused_port()
    sink = structure({"port": port, "password": "s3cr3t-pw", "connect_timeout": 2}, MySQLSink, where="sink 'mysql'")
    with pytest.raises(CycloneError) as caught:
        sink.open()
    message = str(caught.value)
    assert message.startswith(f"mysql cyclone@127.0.0.1:{port}/cyclone: connect failed: (200")
    assert "\n" not in message
    assert "s3cr3t-pw" not in message
    assert "s3cr3t-pw" not in repr(sink)


def test_wrong_credentials_are_one_line_without_the_password(shared_server) -> None:
    options = {**shared_server, "user": "cyclone_nobody", "password": "s3cr3t-pw"}
    sink = structure(options, MySQLSink, where="sink 'mysql'")
    with pytest.raises(
        CycloneError, match=r"^mysql cyclone_nobody@.*: connect failed: \(1[0-9]{3}\) Access denied"
    ) as caught:
        sink.open()
    assert "s3cr3t-pw" not in str(caught.value)


@pytest.mark.parametrize(
    ("options", "problem"),
    [
        ({"table": "results; DROP TABLE x"}, "table: 'results; DROP TABLE x' is not a table name"),
        ({"table": "1abc"}, "is not a table name"),
        ({"layout": "wide"}, "layout: 'wide' is not a layout (known: results, ost_perf)"),
        ({"password": "a", "password_file": "/etc/secret"}, "set password or password_file, not both"),
        ({"port": 0}, "port: must be >= 1, got 0"),
        ({"sql_mode": "ANSI'; DROP"}, "is not a list of SQL modes"),
        ({"batch_size": "many"}, "batch_size: expected a whole number"),
    ],
)
def test_bad_options_are_one_line_config_errors(options: dict[str, Any], problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        structure(options, MySQLSink, where="sink 'mysql'")
    message = str(caught.value)
    assert message.startswith("sink 'mysql': ")
    assert problem in message
    assert "\n" not in message


def test_missing_table_without_create_table_says_what_to_do(shared_server, table) -> None:
    sink = structure({**shared_server, "table": table, "create_table": False}, MySQLSink, where="sink 'mysql'")
    with pytest.raises(CycloneError, match=rf"table {table} does not exist .*cyclone mysql create-table"):
        sink.open()
    sink.close()


def test_a_cyclone_2_table_is_reported_with_its_missing_columns(shared_server, admin, table) -> None:
    # The 2.x layout (fixed for strict modes): no task_id, so re-delivery could not be detected.
    admin.cursor().execute(
        f"CREATE TABLE `{table}` (id BIGINT UNSIGNED AUTO_INCREMENT PRIMARY KEY, read_timestamp DATETIME NULL, "
        "write_timestamp DATETIME NULL, ost CHAR(7), size BIGINT UNSIGNED, read_throughput BIGINT, "
        "write_throughput BIGINT, read_duration INT, write_duration INT) ENGINE=InnoDB"
    )
    sink = structure({**shared_server, "table": table, "layout": "ost_perf"}, MySQLSink, where="sink 'mysql'")
    with pytest.raises(CycloneError) as caught:
        sink.open()
    sink.close()
    assert str(caught.value).endswith(
        f"table {table} lacks column(s) read_seconds, write_seconds, fs, status, error, task_id of layout 'ost_perf' "
        "(see 'cyclone mysql create-table --print')"
    )


def test_a_row_the_server_rejects_raises_and_the_next_batch_still_works(make_sink, admin, table, make_result) -> None:
    sink = make_sink()
    admin.cursor().execute(f"ALTER TABLE `{table}` ADD CONSTRAINT no_boom CHECK (error IS NULL OR error <> 'boom')")
    with pytest.raises(CycloneError, match=rf"insert of 2 results into {table} failed: \((4025|3819)\) "):
        sink.write([make_result("run8-1"), make_result("run8-2", error="boom")])
    sink.write([make_result("run8-1")])  # the failed transaction was rolled back: nothing half-stored
    cursor = admin.cursor()
    cursor.execute(f"SELECT task_id FROM `{table}`")
    assert cursor.fetchall() == (("run8-1",),)


def test_the_sink_is_registered_under_its_name(cyclone_plugins) -> None:
    assert cyclone_plugins.sink("mysql") is MySQLSink


def test_connection_errors_other_than_lost_are_not_retried(make_sink, make_result, table) -> None:
    sink = make_sink()
    sink.write([make_result("run9-1")])
    thread = sink._connection.thread_id()
    sink._connection.cursor().execute(f"DROP TABLE `{table}`")
    with pytest.raises(CycloneError, match=r"\(1146\) Table '.*' doesn't exist"):
        sink.write([make_result("run9-2")])
    assert sink._connection.thread_id() == thread  # a SQL error keeps the connection
