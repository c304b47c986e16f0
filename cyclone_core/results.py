"""Reading stored results back: the files of the built-in ``sqlite`` and ``jsonl`` sinks.

What ``cyclone results`` lists, and what a script reads with :func:`read_results`::

    for result in read_results("cyclone-results.sqlite", status="failed"):
        print(result.key, result.error)

A task id is ``<run_id>-<seq>``, so the results of one run are those whose id starts with its
run id.  Results of an SQLite file come in the order their tasks started, those of a JSON-lines
file in the file's order (the order they were delivered), read as they are needed.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from cyclone_core.builtins.sinks import SQLITE_COLUMNS
from cyclone_core.errors import CycloneError, UsageError
from cyclone_core.model import Attempt, Metric, MetricKind, Result, Status

__all__ = ("read_results", "run_id_of")


def run_id_of(task_id: str) -> str:
    """The run id in a task id (``<run_id>-<seq>``)."""
    return task_id.rpartition("-")[0]


def read_results(
    path: str | Path,
    *,
    run: str | None = None,
    status: str | Status | None = None,
    task_type: str | None = None,
) -> Iterator[Result]:
    """The results stored in ``path``, an SQLite file of the ``sqlite`` sink or a JSON-lines
    file of the ``jsonl`` sink (``.jsonl``, ``.json``): those of run ``run``, with status
    ``status`` and of type ``task_type``, when given.

    :raises CycloneError: the file is missing or is not a results file (one line).
    :raises UsageError: ``status`` is not a status.
    """
    path = Path(path)
    wanted = _status(status)
    if not path.is_file():
        raise CycloneError(f"{path}: no such results file (the sqlite sink writes cyclone-results.sqlite)")
    rows = _jsonl(path) if path.suffix.lower() in (".jsonl", ".json") else _sqlite(path, run, wanted, task_type)
    for row in rows:
        if run is not None and run_id_of(row["task_id"]) != run:
            continue
        if (wanted is not None and row["status"] != wanted) or (
            task_type is not None and row["task_type"] != task_type
        ):
            continue
        yield _result(row, path)


def _result(row: dict[str, Any], path: Path) -> Result:
    """A stored result (plain data, as the sinks store it) as a :class:`Result`."""
    try:
        return Result(
            task_id=row["task_id"],
            task_type=row["task_type"],
            status=Status(row["status"]),
            key=row.get("key"),
            attempt=row.get("attempt", 1),
            started_at=row.get("started_at", 0.0),
            duration=row.get("duration", 0.0),
            error=row.get("error"),
            metrics=[_metric(metric) for metric in row.get("metrics") or []],
            payload=row.get("payload"),
            controller=row.get("controller"),
            history=[_attempt(attempt) for attempt in row.get("history") or []],
        )
    except (KeyError, ValueError, TypeError) as exc:
        raise CycloneError(f"{path}: result {row.get('task_id')!r} is not a stored result: {exc}") from None


def _metric(data: dict[str, Any]) -> Metric:
    return Metric(
        name=data["name"],
        value=data["value"],
        unit=data.get("unit", ""),
        labels=data.get("labels") or {},
        timestamp=data.get("timestamp"),
        kind=MetricKind(data.get("kind", "gauge")),
    )


def _attempt(data: dict[str, Any]) -> Attempt:
    return Attempt(
        attempt=data["attempt"],
        status=Status(data["status"]),
        error=data.get("error"),
        controller=data.get("controller"),
        finished_at=data.get("finished_at", 0.0),
    )


def _status(status: str | Status | None) -> str | None:
    if status is None:
        return None
    try:
        return Status(status).value
    except ValueError:
        raise UsageError(f"status {status!r}: expected one of {', '.join(s.value for s in Status)}") from None


def _sqlite(path: Path, run: str | None, status: str | None, task_type: str | None) -> Iterator[dict[str, Any]]:
    where, values = [], []
    if run is not None:
        where.append("task_id LIKE ? ESCAPE '\\'")
        values.append(run.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "-%")
    if status is not None:
        where.append("status = ?")
        values.append(status)
    if task_type is not None:
        where.append("task_type = ?")
        values.append(task_type)
    query = f"SELECT {', '.join(SQLITE_COLUMNS)} FROM results"  # noqa: S608  (constant columns)
    if where:
        query += " WHERE " + " AND ".join(where)
    query += " ORDER BY started_at, task_id"
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise CycloneError(f"{path}: cannot open: {exc}") from None
    try:
        cursor = db.execute(query, values)
        for row in cursor:
            (task_id, status_, type_, key, attempt, started, duration, error, controller, metrics, payload, history) = (
                row
            )
            yield {
                "task_id": task_id,
                "status": status_,
                "task_type": type_,
                "key": key,
                "attempt": attempt,
                "started_at": started,
                "duration": duration,
                "error": error,
                "controller": controller,
                "metrics": json.loads(metrics),
                "payload": None if payload is None else json.loads(payload),
                "history": json.loads(history),
            }
    except sqlite3.DatabaseError as exc:
        raise CycloneError(f"{path}: not a results database of the sqlite sink ({exc})") from None
    finally:
        db.close()


def _jsonl(path: Path) -> Iterator[dict[str, Any]]:
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            if not line.endswith("\n"):
                break  # torn by a crash: the sink writes it again
            try:
                row = json.loads(line)
            except ValueError:
                raise CycloneError(f"{path}:{number}: not a result line of the jsonl sink") from None
            if not isinstance(row, dict) or "task_id" not in row:
                raise CycloneError(f"{path}:{number}: not a result line of the jsonl sink")
            yield row
