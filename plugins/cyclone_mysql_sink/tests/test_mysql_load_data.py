"""The two ways a batch is sent, against the shared MariaDB: LOAD DATA LOCAL INFILE through a
pipe, and the multi-row INSERTs it falls back to.  Both store the same rows; a value the
server would reject or alter is rejected, never stored mangled; a server without local_infile
gets INSERTs; nothing is left open."""

from __future__ import annotations

import logging
import math
import os
import threading
from typing import Any

import MySQLdb
import pytest
from cyclone_mysql_sink import MySQLSink

from cyclone_core import Attempt, CycloneError, Metric, MetricKind, Status

TRICKY = "tab\there, newline\nthere, cr\r, back\\slash, \\N, \\t, nul \x00, quote ' \" ünïcödé 🚀"


def _statements(sink: MySQLSink, command: str) -> int:
    """How many ``command`` statements (``load``, ``insert``) the sink's session ran."""
    cursor = sink._connection.cursor()
    cursor.execute(f"SHOW SESSION STATUS LIKE 'Com_{command}'")
    return int(cursor.fetchone()[1])


def _every_column(admin: Any, table: str) -> list[tuple[Any, ...]]:
    """``SELECT *`` but the time each row was stored."""
    cursor = admin.cursor()
    cursor.execute(f"SELECT * FROM `{table}` ORDER BY id")
    names = [column[0] for column in cursor.description]
    keep = [i for i, name in enumerate(names) if name != "inserted_at"]
    return [tuple(row[i] for i in keep) for row in cursor.fetchall()]


def _varied_results(make_result: Any, ost_result: Any) -> list[Any]:
    labels = {"fs": "lustre", "component": "ost", "target": "lustre-OST0007"}
    odd_metrics = [
        Metric("cyclone_lustre_ost_write_bytes_per_second", 1e300, "bytes/s", labels, 1_764_000_000.1234565),
        Metric("cyclone_lustre_ost_read_seconds", math.nan, "s", labels, -1.5),
        Metric("cyclone_lustre_ost_probe_bytes", 3.5, "bytes", labels),
        Metric(TRICKY, -0.0, TRICKY, {TRICKY: TRICKY}, math.inf, MetricKind.COUNTER),
    ]
    return [
        make_result("load-plain"),
        make_result(
            f"load-{TRICKY}",
            key=TRICKY,
            error=TRICKY,
            controller=TRICKY,
            payload={TRICKY: [TRICKY, math.nan, 2**70, None, True]},
            metrics=[Metric(TRICKY, 1.5, labels={TRICKY: TRICKY})],
            history=[Attempt(attempt=1, status=Status.CRASHED, error=TRICKY, controller="n1", finished_at=5.25)],
        ),
        make_result("load-edges", started_at=0.0, duration=math.inf, attempt=0, key="k" * 1000, error="e" * 20_000),
        make_result("load-none", key=None, error=None, controller=None, started_at=253_402_300_800.0, duration=-0.0),
        ost_result("load-probe"),
        ost_result("load-odd", metrics=odd_metrics, error=TRICKY, started_at=1_764_000_000.999_999_7),
        make_result("load-inactive", task_type="lustre-ost-io", status=Status.FAILED, payload={"ost": 10, "fs": "x"}),
        *(ost_result(f"load-many-{i}", ost=f"OST{i:04x}") for i in range(300)),
    ]


@pytest.mark.parametrize("layout", ["results", "ost_perf"])
def test_the_load_stores_what_the_inserts_store(
    layout, make_sink, table, other_table, admin, make_result, ost_result
) -> None:
    results = _varied_results(make_result, ost_result)
    inserted = make_sink(layout=layout, load_data=False)
    loaded = make_sink(layout=layout, table=other_table, load_data=True)
    inserted.write(results)
    loaded.write(results)
    assert (_statements(loaded, "load"), _statements(loaded, "insert")) == (1, 0)  # no fallback
    assert _statements(inserted, "load") == 0
    rows = _every_column(admin, table)
    assert len(rows) == (len(results) if layout == "results" else len(results) - 4)  # 4 are not OST probes
    assert _every_column(admin, other_table) == rows


def test_the_insert_path_sends_multi_row_inserts(make_sink, make_result) -> None:
    sink = make_sink(load_data=False)
    sink.write([make_result(f"ins-{i}") for i in range(2000)])
    # One statement per row would be 2000; rows are packed into statements of up to 128 KiB.
    assert 1 <= _statements(sink, "insert") <= 20
    assert _statements(sink, "load") == 0


def _attempt_beyond_int(make_result: Any, ost_result: Any) -> tuple[list[Any], Any]:
    return [make_result(f"a-{i}") for i in range(5)], make_result("a-bad", attempt=2**32)


def _task_type_too_long(make_result: Any, ost_result: Any) -> tuple[list[Any], Any]:
    return [make_result(f"t-{i}", task_type="noop") for i in range(5)], make_result("t-bad", task_type="sleep")


def _ost_too_long(make_result: Any, ost_result: Any) -> tuple[list[Any], Any]:
    return [ost_result(f"o-{i}") for i in range(5)], ost_result("o-bad", ost="OST0000a")


@pytest.mark.parametrize(
    ("layout", "narrower", "batch", "code"),
    [
        # attempt is INT UNSIGNED: LOAD would store 4294967295, with a warning.
        ("results", None, _attempt_beyond_int, 1264),
        # Tables whose columns are narrower than the layout's: LOAD would cut the value.
        ("results", "MODIFY task_type VARCHAR(4) NOT NULL", _task_type_too_long, 1406),
        ("ost_perf", "MODIFY ost VARCHAR(7) NULL", _ost_too_long, 1406),
    ],
    ids=["out-of-range", "too-long-results", "too-long-ost_perf"],
)
def test_a_value_the_server_would_alter_is_rejected_not_stored_mangled(
    layout, narrower, batch, code, make_sink, admin, table, table_rows, make_result, ost_result
) -> None:
    sink = make_sink(layout=layout, sql_mode="STRICT_ALL_TABLES", load_data=True)
    if narrower:
        admin.cursor().execute(f"ALTER TABLE `{table}` {narrower}")
    good, bad = batch(make_result, ost_result)
    with pytest.raises(CycloneError, match=rf"insert of 6 results into {table} failed: \({code}\) "):
        sink.write([*good[:3], bad, *good[3:]])
    assert _statements(sink, "load") == 1  # tried first, rolled back on its warning
    assert table_rows(table) == []  # nothing of the batch: neither the bad row nor the others
    sink.write(good)  # the bad result left out, as the master does with a rejected one
    assert [row[0] for row in table_rows(table, "task_id")] == [r.task_id for r in good]
    assert _statements(sink, "load") == 2


@pytest.mark.parametrize("layout", ["results", "ost_perf"])
def test_a_batch_delivered_again_adds_nothing_and_is_still_loaded(layout, make_sink, admin, table, ost_result) -> None:
    sink = make_sink(layout=layout, load_data=True)
    first = [ost_result(f"again-{i}") for i in range(300)]
    sink.write(first)
    stored = _every_column(admin, table)
    sink.write(first)  # 300 rows already stored: 300 duplicate-key warnings, more than the default 64 listed
    sink.write([*first[100:], ost_result("again-new")])
    after = _every_column(admin, table)
    assert after[:300] == stored  # the stored rows untouched (same ids, same values)
    assert [row[1 if layout == "results" else -1] for row in after[300:]] == ["again-new"]
    assert (_statements(sink, "load"), _statements(sink, "insert")) == (3, 0)  # duplicates are no reason for INSERTs


def test_a_server_without_local_infile_gets_inserts_and_one_log_line(
    make_sink, admin, table, table_rows, make_result, caplog
) -> None:
    cursor = admin.cursor()
    cursor.execute("SELECT @@GLOBAL.local_infile")
    (allowed,) = cursor.fetchone()
    cursor.execute("SET GLOBAL local_infile = 0")
    try:
        sink = make_sink(load_data=True)
        with caplog.at_level(logging.DEBUG, logger="cyclone.sink.mysql"):
            sink.write([make_result(f"off-a-{i}") for i in range(100)])
            sink.write([make_result(f"off-b-{i}") for i in range(100)])
    finally:
        cursor.execute(f"SET GLOBAL local_infile = {int(allowed)}")
    [record] = [record for record in caplog.records if record.levelno >= logging.INFO]
    assert record.levelname == "INFO"
    assert "the server refuses LOAD DATA LOCAL INFILE" in record.getMessage()
    assert "batches go as INSERTs" in record.getMessage()
    assert len(table_rows(table)) == 200
    assert _statements(sink, "insert") >= 2


def test_nothing_is_left_open_after_loads_that_work_and_fail(make_sink, table, table_rows, make_result) -> None:
    sink = make_sink(load_data=True)
    sink.write([make_result("open-0")])  # the connection and its session are set up
    descriptors, threads = sorted(os.listdir("/proc/self/fd")), threading.active_count()
    sink.write([make_result(f"open-{i}") for i in range(1, 500)])
    sink.write([make_result(f"open-{i}") for i in range(1, 500)])
    # The thread that builds the rows fails midway: the load is rolled back.
    with pytest.raises(CycloneError, match=r"cannot store a result .* longer than 255 characters"):
        sink.write([*(make_result(f"open-late-{i}") for i in range(200)), make_result("x" * 256)])
    # The load warns, is rolled back, and the INSERTs raise the server's error.
    with pytest.raises(CycloneError, match=r"\(1264\) Out of range"):
        sink.write([make_result("open-late-0"), make_result("open-bad", attempt=2**32)])
    assert sorted(os.listdir("/proc/self/fd")) == descriptors  # no pipe end left open
    assert threading.active_count() == threads
    assert len(table_rows(table)) == 500


@pytest.mark.parametrize("load_data", [False, True])
def test_by_default_the_connection_refuses_to_send_a_file_the_server_names(
    load_data, make_sink, make_result, tmp_path
) -> None:
    """In LOAD DATA LOCAL the server names the file the client sends, in answer to any
    statement; the MariaDB client library sends it unless the connection says otherwise.  A
    file of the master's host that the server asks for here (the statement names it, as a
    rogue server would) is refused by default, and sent only with ``load_data`` on."""
    secret = tmp_path / "master.secret"
    secret.write_text("not for the server\n")
    sink = make_sink(load_data=load_data)
    sink.write([make_result("file-request")])  # connected and its session set up
    cursor = sink._connection.cursor()
    cursor.execute("CREATE TEMPORARY TABLE stolen (line TEXT)")
    if load_data:
        cursor.execute("LOAD DATA LOCAL INFILE %s INTO TABLE stolen", (str(secret),))
        cursor.execute("SELECT line FROM stolen")
        assert cursor.fetchall() == (("not for the server",),)
    else:
        with pytest.raises(MySQLdb.OperationalError) as refused:
            cursor.execute("LOAD DATA LOCAL INFILE %s INTO TABLE stolen", (str(secret),))
        assert refused.value.args[0] in (2068, 4166), refused.value  # the client refuses LOCAL
        cursor.execute("SELECT COUNT(*) FROM stolen")
        assert cursor.fetchone() == (0,)
