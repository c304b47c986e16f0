"""Built-in result sinks on local disk: ``sqlite`` (the default) and ``jsonl``.

Both store a batch durably before :meth:`write` returns and skip results whose ``task_id`` they
already hold, so a batch offered again after a failure or a master restart leaves one record
per task.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import attrs

from cyclone_core.convert import unstructure
from cyclone_core.errors import CycloneError
from cyclone_core.model import Result, ResultSink

__all__ = ("SQLITE_COLUMNS", "JsonlSink", "SqliteSink")

log = logging.getLogger("cyclone.sinks")


# default=str: a payload value JSON cannot carry (bytes, say) must not block the sink forever.
# One encoder for the module: building one per call costs more than encoding a small result.
_json = json.JSONEncoder(separators=(",", ":"), default=str).encode


def _json_list(items: list[Any]) -> str:
    return _json(unstructure(items)) if items else "[]"


_COLUMNS = (
    "task_id TEXT PRIMARY KEY",
    "status TEXT NOT NULL",
    "task_type TEXT NOT NULL",
    "key TEXT",
    "attempt INTEGER NOT NULL",
    "started_at REAL NOT NULL",
    "duration REAL NOT NULL",
    "error TEXT",
    "controller TEXT",
    "metrics TEXT NOT NULL",
    "payload TEXT",
    "history TEXT NOT NULL",
)

#: The column names of the sqlite sink's ``results`` table (what ``cyclone results`` reads).
SQLITE_COLUMNS = tuple(column.split()[0] for column in _COLUMNS)

_INSERT = f"INSERT OR IGNORE INTO results VALUES ({', '.join('?' * len(_COLUMNS))})"  # noqa: S608  (placeholders only)


def _row(result: Result) -> tuple[Any, ...]:
    return (
        result.task_id,
        result.status.value,
        result.task_type,
        result.key,
        result.attempt,
        result.started_at,
        result.duration,
        result.error,
        result.controller,
        _json_list(result.metrics),
        None if result.payload is None else _json(result.payload),
        _json_list(result.history),
    )


@attrs.define(kw_only=True)
class SqliteSink(ResultSink):
    """Results in an SQLite table ``results``, one row per task; the default sink.

    Metrics, payload and attempt history are stored as JSON text.  The database runs in WAL
    mode with full sync, and each batch is one transaction.

    :param path: the database file (created if missing).
    """

    name: ClassVar[str] = "sqlite"

    path: str = "cyclone-results.sqlite"
    _db: sqlite3.Connection | None = attrs.field(default=None, init=False, repr=False, eq=False)

    def open(self) -> None:
        """Open (or create) the database and its table."""
        try:
            # The master writes from a delivery thread of the sink's own, one call at a time.
            db = sqlite3.connect(self.path, check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            with db:
                # Keyed by task_id alone: no rowid B-tree beside the primary key's (cheaper inserts).
                db.execute(f"CREATE TABLE IF NOT EXISTS results ({', '.join(_COLUMNS)}) WITHOUT ROWID")
        except sqlite3.Error as exc:
            raise CycloneError(f"sink 'sqlite': cannot open {self.path}: {exc}") from None
        self._db = db

    def write(self, results: Sequence[Result]) -> None:
        """Insert the batch in one transaction; rows already present are left as they are."""
        if self._db is None:
            self.open()
        assert self._db is not None
        with self._db:
            self._db.executemany(_INSERT, map(_row, results))

    def close(self) -> None:
        """Close the database."""
        if self._db is not None:
            self._db.close()
            self._db = None


@attrs.define(kw_only=True)
class JsonlSink(ResultSink):
    """Results as JSON lines, one object per task with every field of the result.

    On open it reads the task ids already in the file (and drops a torn last line left by a
    crash during a write); ``write`` skips those ids, appends the rest and syncs the file.  The
    ids are kept in memory: about 100 bytes per result.

    :param path: the file (created if missing).
    """

    name: ClassVar[str] = "jsonl"

    path: str = "cyclone-results.jsonl"
    _fd: int | None = attrs.field(default=None, init=False, repr=False, eq=False)
    _seen: set[str] = attrs.field(factory=set, init=False, repr=False, eq=False)

    def open(self) -> None:
        """Read the ids already stored and open the file for appending."""
        path = Path(self.path)
        try:
            self._seen = self._stored_ids(path) if path.is_file() else set()
            self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        except OSError as exc:
            raise CycloneError(f"sink 'jsonl': cannot open {path}: {exc.strerror or exc}") from None

    @staticmethod
    def _stored_ids(path: Path) -> set[str]:
        ids: set[str] = set()
        complete = 0  # offset just after the last complete line
        with path.open("rb") as lines:
            for number, line in enumerate(lines, 1):
                if not line.endswith(b"\n"):
                    break  # torn by a crash: its batch was never acknowledged and comes again
                complete += len(line)
                try:
                    ids.add(json.loads(line)["task_id"])
                except (ValueError, KeyError, TypeError):
                    log.warning("%s:%d: not a result line, ignored", path, number)
        if complete < path.stat().st_size:
            os.truncate(path, complete)
        return ids

    def write(self, results: Sequence[Result]) -> None:
        """Append the results not yet in the file, then fsync."""
        if self._fd is None:
            self.open()
        assert self._fd is not None
        new: dict[str, str] = {}
        for result in results:
            if result.task_id not in self._seen and result.task_id not in new:
                new[result.task_id] = _json(unstructure(result)) + "\n"
        if not new:
            return
        data = memoryview("".join(new.values()).encode())
        start = os.lseek(self._fd, 0, os.SEEK_END)
        try:
            while data:
                data = data[os.write(self._fd, data) :]
            os.fsync(self._fd)
        except OSError:
            # Leave no partial batch behind: the whole batch is offered again.
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, start)
            raise
        self._seen.update(new)

    def close(self) -> None:
        """Close the file."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
