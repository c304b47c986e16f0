"""The mysql sink against a private MariaDB that the tests stop and start, and whose users
they may change (the shared server is left alone)."""

from __future__ import annotations

import pytest
from cyclone_mysql_sink import MySQLSink

from cyclone_core import CycloneError, structure


def _sink(server, **options) -> MySQLSink:
    return structure(
        {**server.options, "database": "cyclone", "connect_timeout": 2, **options}, MySQLSink, where="sink 'mysql'"
    )


def _stored(server, table: str, layout: str = "results") -> list[str]:
    sink = _sink(server, table=table, layout=layout, create_table=False, password_env="")
    sink.open()
    try:
        cursor = sink._connection.cursor()
        cursor.execute(f"SELECT task_id FROM `{table}` ORDER BY task_id")
        return [row[0] for row in cursor.fetchall()]
    finally:
        sink.close()


def test_server_stopped_and_started_again_loses_and_doubles_nothing(private_server, make_result) -> None:
    sink = _sink(private_server, table="restart")
    sink.open()
    before = [make_result(f"run1-before-{i}") for i in range(100)]
    during = [make_result(f"run1-during-{i}") for i in range(100)]
    sink.write(before)

    private_server.stop()
    for _ in range(2):  # the master retries with backoff; every attempt fails with one line
        with pytest.raises(CycloneError) as caught:
            sink.write(during)
        message = str(caught.value)
        assert message.startswith(f"mysql root@127.0.0.1:{private_server.port}/cyclone: connect failed: (200")
        assert "\n" not in message

    private_server.start()
    sink.write(during)  # the same batch, offered again: reconnects by itself
    sink.write(before)  # and a batch already stored, delivered once more
    sink.close()
    assert _stored(private_server, "restart") == sorted(r.task_id for r in before + during)


def test_open_fails_while_the_server_is_down_and_succeeds_after(private_server, make_result) -> None:
    private_server.stop()
    sink = _sink(private_server, table="late_open", layout="ost_perf")
    try:
        with pytest.raises(CycloneError, match=rf"127\.0\.0\.1:{private_server.port}/cyclone: connect failed"):
            sink.open()
    finally:
        private_server.start()
    sink.open()  # the master calls open() again later
    sink.write([make_result("run2-1", task_type="lustre-ost-io", key="OST0001")])
    sink.close()
    assert _stored(private_server, "late_open", "ost_perf") == ["run2-1"]


def test_password_from_option_file_and_environment(private_server, tmp_path, monkeypatch, make_result) -> None:
    private_server.execute(
        "CREATE USER 'prober'@'127.0.0.1' IDENTIFIED BY 'pa ss''word'",
        "GRANT ALL ON cyclone.* TO 'prober'@'127.0.0.1'",
    )
    secret = tmp_path / "mysql.password"
    secret.write_text("pa ss'word\n")
    monkeypatch.setenv("PROBE_PASSWORD", "pa ss'word")
    monkeypatch.delenv("CYCLONE_MYSQL_PASSWORD", raising=False)
    ways = [{"password": "pa ss'word"}, {"password_file": str(secret)}, {"password_env": "PROBE_PASSWORD"}]
    for number, way in enumerate(ways):
        sink = _sink(private_server, user="prober", table="secrets", **way)
        sink.open()
        sink.write([make_result(f"run3-{number}")])
        sink.close()
    monkeypatch.setenv("CYCLONE_MYSQL_PASSWORD", "pa ss'word")  # the default variable
    sink = _sink(private_server, user="prober", table="secrets")
    sink.open()
    sink.close()
    assert _stored(private_server, "secrets") == ["run3-0", "run3-1", "run3-2"]

    monkeypatch.setenv("CYCLONE_MYSQL_PASSWORD", "wrong-secret")
    with pytest.raises(CycloneError, match=r"connect failed: \(1045\) Access denied for user 'prober'") as caught:
        _sink(private_server, user="prober", table="secrets").open()
    assert "wrong-secret" not in str(caught.value)

    missing = tmp_path / "nope"
    with pytest.raises(CycloneError, match=rf"^sink 'mysql': password_file {missing}: cannot read: No such file"):
        _sink(private_server, user="prober", password_file=str(missing)).open()
