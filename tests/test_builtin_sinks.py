"""The built-in sinks: durable, and idempotent on task_id."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from cyclone_core import Attempt, CycloneError, Metric, Result, Status
from cyclone_core.builtins import sinks
from cyclone_core.builtins.sinks import JsonlSink, SqliteSink


def result(task_id: str, **fields: object) -> Result:
    values: dict[str, object] = {"task_type": "sleep", "status": Status.OK, **fields}
    return Result(task_id=task_id, **values)  # type: ignore[arg-type]


OK = result(
    "run1-0",
    key="ost7",
    attempt=2,
    started_at=1700000000.5,
    duration=0.25,
    metrics=[Metric("write_bytes_per_second", 1.5e9, "bytes/s", {"ost": "OST0007"}, timestamp=1700000000.75)],
    payload={"bytes": 4096, "path": "/scratch/x"},
    controller="node01-123",
    history=[Attempt(attempt=1, status=Status.CRASHED, error="worker died", controller="node02-9")],
)
FAILED = result("run1-1", status=Status.FAILED, error="RuntimeError: boom")
#: OK's metrics as both sinks store them.
OK_METRICS = [
    {
        "name": "write_bytes_per_second",
        "value": 1.5e9,
        "unit": "bytes/s",
        "labels": {"ost": "OST0007"},
        "timestamp": 1700000000.75,
        "kind": "gauge",
    }
]


# -- sqlite --------------------------------------------------------------------------------


@pytest.fixture
def sqlite_sink(tmp_path: Path) -> Iterator[SqliteSink]:
    sink = SqliteSink(path=str(tmp_path / "results.sqlite"))
    sink.open()
    yield sink
    sink.close()


def rows(path: str) -> list[sqlite3.Row]:
    with sqlite3.connect(path) as db:
        db.row_factory = sqlite3.Row
        return db.execute("SELECT * FROM results ORDER BY task_id").fetchall()


def test_sqlite_stores_every_field(sqlite_sink: SqliteSink) -> None:
    sqlite_sink.write([OK, FAILED])
    stored = rows(sqlite_sink.path)
    assert [dict(row) for row in stored] == [
        {
            "task_id": "run1-0",
            "status": "ok",
            "task_type": "sleep",
            "key": "ost7",
            "attempt": 2,
            "started_at": 1700000000.5,
            "duration": 0.25,
            "error": None,
            "controller": "node01-123",
            "metrics": json.dumps(OK_METRICS, separators=(",", ":")),
            "payload": '{"bytes":4096,"path":"/scratch/x"}',
            "history": (
                '[{"attempt":1,"status":"crashed","error":"worker died","controller":"node02-9","finished_at":0.0}]'
            ),
        },
        {
            "task_id": "run1-1",
            "status": "failed",
            "task_type": "sleep",
            "key": None,
            "attempt": 1,
            "started_at": 0.0,
            "duration": 0.0,
            "error": "RuntimeError: boom",
            "controller": None,
            "metrics": "[]",
            "payload": None,
            "history": "[]",
        },
    ]


def test_sqlite_writing_a_result_twice_leaves_one_row(sqlite_sink: SqliteSink) -> None:
    sqlite_sink.write([OK])
    sqlite_sink.write([OK, FAILED, FAILED])
    again = SqliteSink(path=sqlite_sink.path)  # a restarted master offers the batch again
    again.write([OK, FAILED])
    again.close()
    assert [row["task_id"] for row in rows(sqlite_sink.path)] == ["run1-0", "run1-1"]


def test_sqlite_uses_wal(sqlite_sink: SqliteSink) -> None:
    with sqlite3.connect(sqlite_sink.path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)


def test_sqlite_that_cannot_open_says_where(tmp_path: Path) -> None:
    sink = SqliteSink(path=str(tmp_path / "missing" / "results.sqlite"))
    with pytest.raises(CycloneError, match=r"^sink 'sqlite': cannot open .*missing/results.sqlite: unable to open"):
        sink.open()


# -- jsonl ---------------------------------------------------------------------------------


def lines(path: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def test_jsonl_writes_one_object_per_result(tmp_path: Path) -> None:
    sink = JsonlSink(path=str(tmp_path / "results.jsonl"))
    sink.open()
    sink.write([OK, FAILED])
    sink.close()
    first, second = lines(sink.path)
    assert first["task_id"] == "run1-0"
    assert first["status"] == "ok"
    assert first["metrics"] == OK_METRICS
    assert first["payload"] == {"bytes": 4096, "path": "/scratch/x"}
    assert second["status"] == "failed"
    assert second["error"] == "RuntimeError: boom"


def test_jsonl_writing_a_result_twice_leaves_one_line(tmp_path: Path) -> None:
    path = str(tmp_path / "results.jsonl")
    sink = JsonlSink(path=path)
    sink.open()
    sink.write([OK])
    sink.write([OK, FAILED, FAILED])
    sink.close()
    reopened = JsonlSink(path=path)  # reads the ids already stored
    reopened.open()
    reopened.write([FAILED, OK])
    reopened.close()
    assert [line["task_id"] for line in lines(path)] == ["run1-0", "run1-1"]


def test_jsonl_drops_a_torn_last_line_and_skips_garbage(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "results.jsonl"
    stored = json.dumps({"task_id": "run1-0", "status": "ok", "metrics": []})
    path.write_text(f"{stored}\nnot json\n" + '{"task_id": "run1-1", "sta')  # killed mid-write
    sink = JsonlSink(path=str(path))
    sink.open()
    assert path.read_text() == f"{stored}\nnot json\n"
    assert f"{path}: the line at byte {len(stored) + 1} is not a result, ignored" in caplog.messages
    sink.write([OK, FAILED])  # run1-0 is stored already; run1-1 never was
    sink.close()
    assert path.read_text().splitlines()[:2] == [stored, "not json"]
    assert [json.loads(line)["task_id"] for line in path.read_text().splitlines()[2:]] == ["run1-1"]


FULL_DISK = """
import os, resource, signal, sys
from cyclone_core import Result, Status
from cyclone_core.builtins.sinks import JsonlSink

sink = JsonlSink(path=sys.argv[1])
sink.open()
sink.write([Result("a", "noop", Status.OK)])
size = os.path.getsize(sink.path)
# Let the file grow by 10 bytes only: the next batch is written in part, then fails.
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (size + 10, resource.RLIM_INFINITY))
try:
    sink.write([Result("b", "noop", Status.FAILED, error="x" * 100)])
except OSError as exc:
    print("write failed:", exc.strerror)
print("size unchanged:", os.path.getsize(sink.path) == size)
resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
sink.write([Result("b", "noop", Status.FAILED, error="x" * 100)])  # offered again
sink.close()
"""


def test_jsonl_write_that_fails_leaves_nothing_behind_and_succeeds_later(tmp_path: Path) -> None:
    path = tmp_path / "results.jsonl"
    done = subprocess.run(
        [sys.executable, "-c", FULL_DISK, str(path)], check=False, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "write failed: File too large\nsize unchanged: True\n"
    assert [line["task_id"] for line in lines(str(path))] == ["a", "b"]


def test_jsonl_remembers_only_the_latest_ids_and_reads_them_from_the_end(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A small window and small blocks: the file is read back from its end in many blocks.
    monkeypatch.setattr(sinks, "JSONL_RECENT_IDS", 5)
    monkeypatch.setattr(sinks, "_TAIL_BLOCK", 64)
    path = tmp_path / "results.jsonl"
    sink = JsonlSink(path=str(path), batch_size=1)
    assert sink.remembered == 5
    sink.open()
    results = [Result(f"run1-{n}", "noop", Status.OK) for n in range(20)]
    for result in results:
        sink.write([result])
    sink.close()
    with path.open("a") as torn:
        torn.write('{"task_id": "run1-20", "sta')  # killed mid-write
    reopened = JsonlSink(path=str(path), batch_size=1)
    reopened.open()
    # What the master may offer again (the latest batches) is stored once; the torn line is gone.
    reopened.write(results[-5:])
    assert [line["task_id"] for line in lines(str(path))] == [r.task_id for r in results]
    # An id older than the window is no longer looked up: memory does not grow with the file.
    reopened.write(results[:1])
    reopened.close()
    assert [line["task_id"] for line in lines(str(path))][-1] == "run1-0"
    assert len(lines(str(path))) == 21
