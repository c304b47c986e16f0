"""Fixtures for the mysql sink's tests: the shared MariaDB, throw-away tables, and a private
server that a test may stop and start.

The shared server is ``127.0.0.1:3306`` (user root, no password, database ``test``) unless
``CYCLONE_TEST_MYSQL_HOST``/``_PORT``/``_USER``/``_DATABASE`` say otherwise.  A missing server
or binary skips the test with the reason, except under ``CI=true``, where it fails.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import MySQLdb
import pytest
from cyclone_mysql_sink import MySQLSink

from cyclone_core import Metric, Result, Status, structure
from cyclone_core.testing import free_port, unavailable, wait_until

SHARED = {
    "host": os.environ.get("CYCLONE_TEST_MYSQL_HOST", "127.0.0.1"),
    "port": int(os.environ.get("CYCLONE_TEST_MYSQL_PORT", "3306")),
    "user": os.environ.get("CYCLONE_TEST_MYSQL_USER", "root"),
    "database": os.environ.get("CYCLONE_TEST_MYSQL_DATABASE", "test"),
}


def _make_result(task_id: str, **fields: Any) -> Result:
    """A result with sensible defaults for the fields a test does not care about."""
    fields.setdefault("task_type", "noop")
    fields.setdefault("status", Status.OK)
    fields.setdefault("started_at", 1_764_000_000.25)
    fields.setdefault("duration", 0.5)
    return Result(task_id=task_id, **fields)


def _ost_result(task_id: str, ost: str = "OST000a", **fields: Any) -> Result:
    """A lustre-ost-io result carrying the metrics the ost_perf layout reads, named and
    labelled as the probe makes them (the Lustre exporters' ``component`` and ``target``)."""
    labels = {"fs": "lustre", "component": "ost", "target": f"lustre-{ost}"}
    metrics = [
        Metric("cyclone_lustre_ost_write_bytes_per_second", 512e6, "bytes/s", labels, 1_764_000_001.5),
        Metric("cyclone_lustre_ost_read_bytes_per_second", 2.5e9, "bytes/s", labels, 1_764_000_002.75),
        Metric("cyclone_lustre_ost_write_seconds", 2.049, "s", labels, 1_764_000_001.5),
        Metric("cyclone_lustre_ost_read_seconds", 0.4, "s", labels, 1_764_000_002.75),
        Metric("cyclone_lustre_ost_probe_bytes", 1 << 30, "bytes", labels, 1_764_000_002.75),
        Metric("cyclone_lustre_ost_probe_status", 1.0, "", labels),  # one the layout does not read
    ]
    fields.setdefault("key", f"lustre-{ost}")
    fields.setdefault("metrics", metrics)
    return _make_result(task_id, task_type="lustre-ost-io", **fields)


@pytest.fixture(scope="session")
def shared_server() -> dict[str, Any]:
    """Connection options of the shared MariaDB; skips (or fails under CI) when it is down."""
    try:
        MySQLdb.connect(connect_timeout=5, **SHARED).close()
    except MySQLdb.Error as exc:
        unavailable(f"MariaDB at {SHARED['host']}:{SHARED['port']} is not reachable: {exc}")
    return dict(SHARED)


@pytest.fixture
def admin(shared_server: dict[str, Any]) -> Iterator[Any]:
    """An autocommit connection for inspecting tables and killing sessions."""
    connection = MySQLdb.connect(autocommit=True, charset="utf8mb4", **shared_server)
    yield connection
    connection.close()


def _throwaway_table(admin: Any) -> Iterator[str]:
    name = f"cyclone_test_{uuid.uuid4().hex[:12]}"
    yield name
    admin.cursor().execute(f"DROP TABLE IF EXISTS `{name}`")


@pytest.fixture
def table(admin: Any) -> Iterator[str]:
    """A table name unique to this test; the table is dropped afterwards."""
    yield from _throwaway_table(admin)


@pytest.fixture
def other_table(admin: Any) -> Iterator[str]:
    """A second table name unique to this test, dropped afterwards."""
    yield from _throwaway_table(admin)


@pytest.fixture
def make_sink(shared_server: dict[str, Any], table: str) -> Iterator[Callable[..., MySQLSink]]:
    """Build sinks from plain options (as the configuration does) on the shared server and the
    test's table; each is opened, and closed after the test."""
    sinks: list[MySQLSink] = []

    def build(**options: Any) -> MySQLSink:
        sink = structure({**shared_server, "table": table, **options}, MySQLSink, where="sink 'mysql'")
        sink.open()
        sinks.append(sink)
        return sink

    yield build
    for sink in sinks:
        sink.close()


@pytest.fixture
def table_rows(admin: Any) -> Callable[..., list[tuple[Any, ...]]]:
    """``table_rows(table, columns="*", order="id")``: every row of a table."""

    def select(table: str, columns: str = "*", order: str = "id") -> list[tuple[Any, ...]]:
        cursor = admin.cursor()
        cursor.execute(f"SELECT {columns} FROM `{table}` ORDER BY {order}")
        return list(cursor.fetchall())

    return select


@pytest.fixture
def poll_until() -> Callable[..., Any]:
    """``poll_until(condition, timeout, what)``: wait for a condition with a deadline."""
    return wait_until


@pytest.fixture
def make_result() -> Callable[..., Result]:
    """``make_result(task_id, **fields)``: a result with defaults for the other fields."""
    return _make_result


@pytest.fixture
def ost_result() -> Callable[..., Result]:
    """``ost_result(task_id, ost="OST000a", **fields)``: a lustre-ost-io result with metrics."""
    return _ost_result


# -- a private server, for stopping and starting -------------------------------------------


class PrivateServer:
    """A MariaDB server of the test's own on a free port and a temporary data directory."""

    def __init__(self, mariadbd: str, datadir: Path) -> None:
        self.mariadbd = mariadbd
        self.datadir = datadir
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def options(self) -> dict[str, Any]:
        """Connection options for root."""
        return {"host": "127.0.0.1", "port": self.port, "user": "root"}

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        self.process = subprocess.Popen(
            [
                self.mariadbd,
                "--no-defaults",
                "--user=root",
                f"--datadir={self.datadir}",
                f"--socket={self.datadir / 'mysqld.sock'}",
                f"--pid-file={self.datadir / 'mysqld.pid'}",
                f"--log-error={self.datadir / 'error.log'}",
                f"--port={self.port}",
                "--bind-address=127.0.0.1",
                "--skip-log-bin",
                "--innodb-buffer-pool-size=32M",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_until(self._ready, timeout=60, what=f"MariaDB on port {self.port} to accept connections")

    def _ready(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            log = (self.datadir / "error.log").read_text(errors="replace")[-2000:]
            pytest.fail(f"mariadbd exited with {self.process.returncode}: {log}")
        try:
            MySQLdb.connect(connect_timeout=2, **self.options).close()
        except MySQLdb.Error:
            return False
        return True

    def stop(self) -> None:
        """Stop the server with SIGTERM (SIGKILL if it has not exited after 60 s)."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def execute(self, *statements: str) -> None:
        """Run statements as root."""
        connection = MySQLdb.connect(autocommit=True, **self.options)
        try:
            for statement in statements:
                connection.cursor().execute(statement)
        finally:
            connection.close()


@pytest.fixture(scope="module")
def private_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateServer]:
    """A running private MariaDB with a database ``cyclone``; stopped after the module."""
    mariadbd = shutil.which("mariadbd") or shutil.which("mariadbd", path="/usr/sbin:/usr/libexec")
    install = shutil.which("mariadb-install-db")
    if not mariadbd or not install:
        unavailable("mariadbd and mariadb-install-db are not installed (Debian package mariadb-server)")
    datadir = tmp_path_factory.mktemp("mariadb")
    done = subprocess.run(
        [
            install,
            "--no-defaults",
            "--user=root",
            f"--datadir={datadir}",
            "--auth-root-authentication-method=normal",
            "--skip-test-db",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.fail(f"mariadb-install-db failed: {done.stderr.strip()[-2000:]}")
    server = PrivateServer(mariadbd, datadir)
    try:
        server.start()
        server.execute("CREATE DATABASE cyclone CHARACTER SET utf8mb4")
        yield server
    finally:
        server.stop()
