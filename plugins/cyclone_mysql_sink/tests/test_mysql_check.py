"""The mysql sink's check: a login the server refuses, an unknown database or host stop the
run before it starts; a server that does not answer is left to the delivery's retries."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from cyclone_mysql_sink import MySQLSink

from cyclone_core import CycloneError, structure
from cyclone_core.testing import free_port


def _sink(server: dict[str, Any], **options: Any) -> MySQLSink:
    return structure({**server, **options}, MySQLSink, where="sink 'mysql'")


def test_a_refused_login_stops_cyclone_run_at_once(shared_server: dict[str, Any], tmp_path: Path) -> None:
    cyclone = shutil.which("cyclone")
    assert cyclone is not None
    server = f"{shared_server['user']}@{shared_server['host']}:{shared_server['port']}/{shared_server['database']}"
    options = [f"mysql.{key}={value}" for key, value in shared_server.items()] + ["mysql.password=wrong-password"]
    env = {key: value for key, value in os.environ.items() if not key.startswith("CYCLONE_")}
    done = subprocess.run(
        [cyclone, "run", "-g", "count=1", "--sink", "mysql", *(arg for o in options for arg in ("-s", o))],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith(f"error: sink 'mysql': mysql {server}: connect failed: (1045) Access denied for ")
    assert done.stderr.count("\n") == 1
    assert "wrong-password" not in done.stderr
    assert done.stdout == ""


def test_an_unknown_database_or_host_is_found_by_the_check(shared_server: dict[str, Any]) -> None:
    with pytest.raises(CycloneError, match=r"^mysql .*/no_such_db: connect failed: \(1049\) Unknown data"):
        _sink(shared_server, database="no_such_db").check()
    with pytest.raises(CycloneError, match=r"connect failed: \(2005\) Unknown server host 'no-such-host.invalid'"):
        _sink(shared_server, host="no-such-host.invalid").check()


def test_a_missing_table_the_sink_may_not_create_is_found_by_the_check(shared_server: dict[str, Any]) -> None:
    with pytest.raises(CycloneError, match=r"table cyclone_no_such_table does not exist"):
        _sink(shared_server, table="cyclone_no_such_table", create_table=False).check()


def test_a_server_that_does_not_answer_passes_with_a_warning(
    shared_server: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    port = free_port()  # nobody listens there: the server may come up later
    with caplog.at_level(logging.WARNING, logger="cyclone.sink.mysql"):
        _sink(shared_server, port=port).check()
    [message] = [record.getMessage() for record in caplog.records]
    server = f"{shared_server['user']}@{shared_server['host']}:{port}/{shared_server['database']}"
    assert message.startswith(f"mysql {server}: connect failed: (200")  # 2002 or 2003: cannot connect
    assert message.endswith("; results wait in the journal until it answers")
