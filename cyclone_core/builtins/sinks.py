"""Built-in result sinks on local disk: ``sqlite`` (the default) and ``jsonl``.

Both store a batch durably before :meth:`write` returns and skip results whose ``task_id`` they
already hold (the jsonl sink: among its latest ones, which are those the master may offer
again), so a batch offered again after a failure or a master restart leaves one record per
task.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sqlite3
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import attrs

from cyclone_core.convert import unstructure
from cyclone_core.errors import CycloneError, ResultsRejected, one_line_error
from cyclone_core.model import Result, ResultSink

__all__ = ("JSONL_RECENT_IDS", "SQLITE_COLUMNS", "JsonlSink", "SqliteSink")

log = logging.getLogger("cyclone.sinks")

_T = TypeVar("_T")


# default=str: a payload value JSON cannot carry (bytes, say) must not block the sink forever.
# One encoder for the module: building one per call costs more than encoding a small result.
_json = json.JSONEncoder(separators=(",", ":"), default=str).encode


def _json_line(result: Result) -> str:
    return _json(unstructure(result)) + "\n"


def _number(value: float) -> bool:
    """Whether SQLite stores ``value`` as a number (a whole one within 64 bits, or a float)."""
    return type(value) is not int or value in _SQLITE_INT


def _json_list(items: list[Any]) -> str:
    return _json(unstructure(items)) if items else "[]"


#: Whole numbers SQLite stores (signed 64 bits).
_SQLITE_INT = range(-(1 << 63), 1 << 63)


def _encode_each(results: Iterable[Result], encode: Callable[[Result], _T], what: str) -> list[_T]:
    """``encode`` applied to each result; :class:`ResultsRejected` names those it fails for
    (``what`` says what they cannot be: the master keeps them as dead letters)."""
    encoded: list[_T] = []
    rejected: list[Result] = []
    why = ""
    for result in results:
        try:
            encoded.append(encode(result))
        except (RecursionError, ValueError, TypeError, OverflowError) as exc:
            rejected.append(result)
            why = one_line_error(exc)
    if rejected:
        raise ResultsRejected(rejected, f"cannot be {what} ({why})")
    return encoded


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
    if not (result.attempt in _SQLITE_INT and _number(result.started_at) and _number(result.duration)):
        raise OverflowError("a number beyond SQLite's 64-bit integers")
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

    def check(self) -> None:
        """Open (or create) the database and its table, and close it: a path that cannot be
        written stops the run before it starts."""
        try:
            self.open()
        finally:
            self.close()

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
            self._db.executemany(_INSERT, _encode_each(results, _row, "stored in SQLite"))

    def close(self) -> None:
        """Close the database."""
        if self._db is not None:
            self._db.close()
            self._db = None


#: Ids of the latest results the jsonl sink remembers, at the least (see :class:`JsonlSink`).
JSONL_RECENT_IDS = 10_000
#: Bytes read at a time from the end of a jsonl file when it is opened.
_TAIL_BLOCK = 1 << 20


@attrs.define(kw_only=True)
class JsonlSink(ResultSink):
    """Results as JSON lines, one object per task with every field of the result.

    ``write`` skips the results whose task ids are among the latest ones stored, appends the
    rest and syncs the file.  The master offers a sink again only results it has not recorded
    as delivered: the batch of a ``write`` that failed (which leaves nothing behind), or the
    batch that was being written when the master was killed.  So the ids of the latest
    ``max(JSONL_RECENT_IDS, 4 * batch_size)`` results are enough to store each result once,
    across restarts too, and memory stays flat however many results the file holds.  On open
    the sink reads them from the end of the file (and drops a torn last line left by a crash
    during a write).

    :param path: the file (created if missing).
    """

    name: ClassVar[str] = "jsonl"

    path: str = "cyclone-results.jsonl"
    _fd: int | None = attrs.field(default=None, init=False, repr=False, eq=False)
    # The latest ids in the order they were stored, and the same as a set for lookups.
    _recent: deque[str] = attrs.field(factory=deque, init=False, repr=False, eq=False)
    _seen: set[str] = attrs.field(factory=set, init=False, repr=False, eq=False)

    @property
    def remembered(self) -> int:
        """How many of the latest ids the sink keeps."""
        return max(JSONL_RECENT_IDS, 4 * self.batch_size)

    def check(self) -> None:
        """Open the file for appending (creating it) and close it: a path that cannot be
        written stops the run before it starts."""
        try:
            os.close(os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644))
        except OSError as exc:
            raise CycloneError(f"cannot open {self.path} for writing: {exc.strerror or exc}") from None

    def open(self) -> None:
        """Read the latest ids stored and open the file for appending."""
        path = Path(self.path)
        self._recent.clear()
        self._seen.clear()
        try:
            self._fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
            self._remember(self._stored_ids(path, self._fd, self.remembered))
        except OSError as exc:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
            raise CycloneError(f"sink 'jsonl': cannot open {path}: {exc.strerror or exc}") from None

    @staticmethod
    def _stored_ids(path: Path, fd: int, count: int) -> list[str]:
        """The task ids of the last ``count`` complete lines of the file, oldest first; a torn
        last line (a crash during a write: its batch was never acknowledged and comes again)
        is cut off."""
        size = os.fstat(fd).st_size
        tail = b""
        offset = size
        # Read blocks from the end until the tail holds more than ``count`` line ends.
        while offset > 0 and tail.count(b"\n") <= count:
            step = min(_TAIL_BLOCK, offset)
            offset -= step
            tail = os.pread(fd, step, offset) + tail
        complete = tail.rfind(b"\n") + 1  # just after the last complete line, within the tail
        if offset + complete < size:
            os.ftruncate(fd, offset + complete)
        lines = tail[:complete].split(b"\n")[:-1]
        if offset > 0:
            lines = lines[1:]  # the first may be the end of a line that starts before the tail
        ids: list[str] = []
        at = offset + complete - sum(len(line) + 1 for line in lines[-count:])
        for line in lines[-count:]:
            try:
                ids.append(json.loads(line)["task_id"])
            except (ValueError, KeyError, TypeError):
                log.warning("%s: the line at byte %d is not a result, ignored", path, at)
            at += len(line) + 1
        return ids

    def _remember(self, ids: Iterable[str]) -> None:
        recent, seen = self._recent, self._seen
        for task_id in ids:
            if task_id not in seen:
                recent.append(task_id)
                seen.add(task_id)
        for _ in range(len(recent) - self.remembered):
            seen.discard(recent.popleft())

    def write(self, results: Sequence[Result]) -> None:
        """Append the results not yet in the file, then fsync."""
        if self._fd is None:
            self.open()
        assert self._fd is not None
        new: dict[str, Result] = {}
        for result in results:
            if result.task_id not in self._seen and result.task_id not in new:
                new[result.task_id] = result
        if not new:
            return
        lines = _encode_each(new.values(), _json_line, "written as JSON")
        data = memoryview("".join(lines).encode())
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
        self._remember(new)

    def close(self) -> None:
        """Close the file."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
