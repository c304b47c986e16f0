"""A whole run through the engine into MariaDB while the database misbehaves: the sink's
connection is killed mid-run, then the server is stopped for a while and started again.  The
master's durable outbox keeps every result until the sink has it: no row lost, none doubled."""

from __future__ import annotations

import threading
import time
from typing import Any

import MySQLdb

TASKS = 3000
TABLE = "end_to_end"


def _count(server) -> int:
    try:
        connection = MySQLdb.connect(database="cyclone", connect_timeout=2, **server.options)
    except MySQLdb.Error:
        return -1
    try:
        cursor = connection.cursor()
        cursor.execute(f"SELECT COUNT(*) FROM `{TABLE}`")
        return int(cursor.fetchone()[0])
    except MySQLdb.Error:
        return -1  # not created yet
    finally:
        connection.close()


def _kill_sink_connections(server) -> int:
    connection = MySQLdb.connect(autocommit=True, **server.options)
    try:
        cursor = connection.cursor()
        cursor.execute("SELECT id FROM information_schema.processlist WHERE db = 'cyclone' AND id <> CONNECTION_ID()")
        ids = [row[0] for row in cursor.fetchall()]
        for connection_id in ids:
            cursor.execute(f"KILL {int(connection_id)}")
        return len(ids)
    finally:
        connection.close()


def test_no_row_lost_or_doubled_when_the_database_misbehaves_mid_run(
    private_server, poll_until, cyclone_cluster
) -> None:
    private_server.execute(f"DROP TABLE IF EXISTS cyclone.`{TABLE}`")
    sink = {
        **private_server.options,
        "database": "cyclone",
        "table": TABLE,
        "batch_size": 100,
        "flush_interval": 0.05,
        "connect_timeout": 2,
    }
    sink_errors: list[str] = []
    happened: list[str] = []

    def watch(snapshot: dict[str, Any]) -> None:  # the master's progress callback, once a second
        sink_errors.extend(s["last_error"] for s in snapshot["sinks"] if s["last_error"])

    def misbehave() -> None:
        poll_until(lambda: _count(private_server) >= 300, timeout=60, what="the first rows")
        poll_until(lambda: _kill_sink_connections(private_server) > 0, timeout=30, what="a sink connection")
        happened.append("killed")
        poll_until(lambda: _count(private_server) >= 900, timeout=60, what="rows after the kill")
        private_server.stop()
        happened.append("stopped")
        poll_until(lambda: sink_errors, timeout=60, what="the sink to report the server down")
        private_server.start()
        happened.append("started")

    trouble = threading.Thread(target=misbehave, daemon=True)
    trouble.start()
    started = time.monotonic()
    try:
        run = cyclone_cluster(
            "benchmark",
            {"count": TASKS, "task": "sleep", "args": {"seconds": 0.002}},
            sinks={"mysql": sink},
            progress=watch,
        )
    finally:
        trouble.join(timeout=120)
        if private_server.process.poll() is not None:  # leave the module's server running
            private_server.start()
    assert happened == ["killed", "stopped", "started"], (
        f"disruption incomplete after {time.monotonic() - started:.0f} s"
    )
    assert run.exit_code == 0, run.summary
    assert run.summary["succeeded"] == TASKS
    assert run.summary["undelivered"] == 0
    assert any("connect failed" in error for error in sink_errors), sink_errors

    connection = MySQLdb.connect(database="cyclone", **private_server.options)
    try:
        cursor = connection.cursor()
        cursor.execute(f"SELECT COUNT(*), COUNT(DISTINCT task_id), MIN(status), MAX(status) FROM `{TABLE}`")
        assert cursor.fetchone() == (TASKS, TASKS, "ok", "ok")
    finally:
        connection.close()
