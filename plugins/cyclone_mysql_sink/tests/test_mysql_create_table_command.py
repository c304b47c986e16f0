"""``cyclone mysql create-table``, run as the installed command."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

STRICT = "STRICT_ALL_TABLES,NO_ZERO_DATE,NO_ZERO_IN_DATE"


def _cyclone(*args: str) -> subprocess.CompletedProcess[str]:
    command = shutil.which("cyclone")
    if command is None:
        pytest.fail(f"the cyclone command is not installed for {sys.executable}")
    env = {**os.environ, "CYCLONE_LOAD_PLUGINS": "builtins,mysql"}
    return subprocess.run([command, *args], capture_output=True, text=True, env=env, timeout=60, check=False)


def _options(**options: object) -> list[str]:
    """``-s mysql.KEY=VALUE`` arguments."""
    return [part for key, value in options.items() for part in ("-s", f"mysql.{key}={value}")]


@pytest.mark.parametrize("layout", ["results", "ost_perf"])
def test_print_shows_the_statement_without_connecting(layout: str) -> None:
    done = _cyclone(
        "mysql", "create-table", "--print", "--layout", layout, "-s", "mysql.port=1", "-s", "mysql.table=perf"
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("CREATE TABLE IF NOT EXISTS `perf` (\n")
    assert done.stdout.rstrip().endswith("ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;")
    assert "0000-00-00" not in done.stdout
    assert "task_id VARCHAR(255)" in done.stdout


@pytest.mark.parametrize("layout", ["results", "ost_perf"])
def test_create_table_applies_the_schema_under_strict_mode(layout, shared_server, admin, table) -> None:
    options = _options(**shared_server, table=table, sql_mode=STRICT)
    for _ in range(2):  # creating an existing table is fine
        done = _cyclone("mysql", "create-table", "--layout", layout, *options)
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == (
            f"table {table} (layout {layout}) is ready in "
            f"{shared_server['user']}@{shared_server['host']}:{shared_server['port']}/{shared_server['database']}"
        )
    cursor = admin.cursor()
    cursor.execute(f"SHOW CREATE TABLE `{table}`")
    definition = cursor.fetchone()[1]
    assert "ENGINE=InnoDB" in definition
    assert "CHARSET=utf8mb4" in definition


def test_options_come_from_the_configuration_file(shared_server, admin, table, tmp_path) -> None:
    config = tmp_path / "cyclone.toml"
    settings = "\n".join(f"{key} = {value!r}" for key, value in shared_server.items() if key != "port")
    config.write_text(
        f"[sinks.mysql]\n{settings}\nport = {shared_server['port']}\ntable = 'not_this_one'\nlayout = 'ost_perf'\n"
    )
    done = _cyclone("mysql", "create-table", "--config", str(config), "-s", f"mysql.table={table}")
    assert done.returncode == 0, done.stderr
    assert f"table {table} (layout ost_perf)" in done.stdout
    cursor = admin.cursor()
    cursor.execute(
        "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = DATABASE() AND table_name = %s", (table,)
    )
    assert cursor.fetchone()[0] == 1


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (
            ["-s", "mysql.port=1", "-s", "mysql.connect_timeout=2"],
            1,
            "error: mysql cyclone@127.0.0.1:1/cyclone: connect failed: (200",
        ),
        (["-s", "mysql.table=a-b"], 2, "error: sink 'mysql': table: 'a-b' is not a table name"),
        (["--layout", "wide"], 2, "error: sink 'mysql': layout: 'wide' is not a layout (known: results, ost_perf)"),
        (
            ["-s", "sqlite.path=x"],
            2,
            "error: sink option 'sqlite.path=x': create-table takes mysql.KEY=VALUE options only",
        ),
        (["--config", "/nonexistent/cyclone.toml"], 2, "error: /nonexistent/cyclone.toml: cannot read"),
    ],
)
def test_errors_are_one_line(args: list[str], code: int, message: str) -> None:
    done = _cyclone("mysql", "create-table", *args)
    assert done.returncode == code
    assert done.stdout == ""
    assert done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith(message), done.stderr
