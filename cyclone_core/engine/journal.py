"""The master's journal: an SQLite file that lets a killed master resume where it stopped.

It records the run id, the generator's high-water mark (the highest task sequence number
handed out), every task in the window with its attempt counters, and every terminal result in
an outbox that the sinks' delivery threads read from, each sink keeping its own delivered mark.
The master writes it from its event loop only, buffering a loop turn's changes and committing
them in one transaction (group commit); nothing it sends depends on an uncommitted change.

The journal is log-structured so that a commit costs a row or two, however many tasks it
carries: each commit adds at most one ``chunks`` row (the tasks that entered the window) and
one ``results`` row (the results of the tasks that settled, with their sequence numbers).  The
window is the tasks of all chunks minus those with a result, with the counters of
``attempts``.  :meth:`Journal.compact` rewrites the window as a single chunk and drops the
results every sink has, and the file gives the pages freed back to the file system: its size
follows what it holds (the window, undelivered results, dead letters), not the length of the
run.  Results rows are dropped only there, since they also mark their tasks done.  Results
are numbered 1, 2, 3, ... without gaps; a sink's delivered mark is the number of the last
result it has.  A result a sink cannot store is kept apart, with why, as a dead letter.  Beside
its mark, each sink keeps the last result it stored (which compaction keeps): the result a
restarted master writes to it again to tell a result it rejects from an outage.

When the file cannot be written (a full disk), :class:`JournalWriteError` says so and nothing of
the attempt is left behind; the buffered changes are written by the next commit that succeeds.

Resuming on an existing journal: tasks that were pending or leased go back to the queue with
their counters, the generator (if deterministic) is fast-forwarded past the high-water mark,
and results not yet delivered to a sink are delivered to it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import operator
import secrets
import shutil
import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import attrs
import msgpack

from cyclone_core.engine.protocol import result_from_row, result_to_row
from cyclone_core.engine.retry import BUDGETS
from cyclone_core.engine.scheduler import TaskRecord
from cyclone_core.errors import ConfigError, CycloneError
from cyclone_core.model import Attempt, Result, Status

__all__ = (
    "JOURNAL_RETRY",
    "DeadLetter",
    "Journal",
    "JournalHealth",
    "JournalWriteError",
    "Outbox",
    "UnreadableResult",
    "new_run_id",
    "read_dead_letters",
)

log = logging.getLogger("cyclone.master")

#: Seconds between two attempts to write a journal that could not be written.
JOURNAL_RETRY = 1.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS chunks (id INTEGER PRIMARY KEY, data BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS attempts (
    seq INTEGER PRIMARY KEY, {budgets}, history BLOB
);
CREATE TABLE IF NOT EXISTS results (
    first INTEGER PRIMARY KEY, count INTEGER NOT NULL, at REAL NOT NULL, seqs BLOB NOT NULL, data BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS delivered (sink TEXT PRIMARY KEY, last INTEGER NOT NULL, stored BLOB);
CREATE TABLE IF NOT EXISTS dead_letters (
    sink TEXT NOT NULL, number INTEGER NOT NULL, task_id TEXT, at REAL NOT NULL, error TEXT NOT NULL,
    data BLOB NOT NULL, PRIMARY KEY (sink, number)
);
""".replace("{budgets}", ", ".join(f"{name} INTEGER NOT NULL" for name in BUDGETS))

_SAVE_ATTEMPTS = f"INSERT OR REPLACE INTO attempts VALUES (?, {', '.join('?' for _ in BUDGETS)}, ?)"  # noqa: S608

#: Rows written since the last compaction after which the window is rewritten as one chunk
#: (about 2 per turn of the master's loop).  A compaction costs about 2 us per task in the
#: window; every 3,000 rows it costs 0.3 us per task settled at full speed (0.8 us every 1,000),
#: and the rows it leaves behind take a few MiB at most.
_COMPACT_ROWS = 3000
#: Bytes of write-ahead log kept on disk after a checkpoint.
_WAL_LIMIT = 4 << 20

_pack = msgpack.Packer().pack


def _unpack(data: bytes) -> Any:
    return msgpack.unpackb(data, raw=False)


class JournalWriteError(CycloneError):
    """The journal cannot be written now (its disk is full, or failing); nothing of the
    attempt was written, and what it carried is kept to be written by the next attempt."""


#: SQLite's primary result codes for a write that failed for want of space or by an I/O error.
_SQLITE_FULL = 13
_SQLITE_IOERR = 10


def _unwritable(exc: sqlite3.Error, path: Path) -> JournalWriteError | None:
    """``exc`` as a :class:`JournalWriteError` if it says the file cannot be written now."""
    code = getattr(exc, "sqlite_errorcode", 0) & 0xFF
    if code in (_SQLITE_FULL, _SQLITE_IOERR):
        return JournalWriteError(f"journal {path}: cannot write ({exc})")
    return None


@contextlib.contextmanager
def _writing(path: Path) -> Iterator[None]:
    """A failure to write ``path`` raises :class:`JournalWriteError`."""
    try:
        yield
    except sqlite3.Error as exc:
        unwritable = _unwritable(exc, path)
        if unwritable is not None:
            raise unwritable from None
        raise


@contextlib.contextmanager
def _transaction(conn: sqlite3.Connection, path: Path) -> Iterator[None]:
    """One transaction; a failure to write raises :class:`JournalWriteError`, and leaves
    nothing of the transaction behind."""
    with _writing(path):
        conn.execute("BEGIN")
        try:
            yield
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:  # SQLite itself rolls back after some errors (a full disk)
                conn.execute("ROLLBACK")
            raise


class UnreadableResult(Exception):
    """The outbox's next result cannot be read back as a result (:func:`result_from_row`
    refuses it): a dead letter, not a reason to stop delivering."""

    def __init__(self, number: int, row: Any, error: str) -> None:
        super().__init__(error)
        self.number, self.row, self.error = number, row, error

    def dead_letter(self, sink: str) -> DeadLetter:
        """This row as a dead letter of ``sink``."""
        row = self.row
        task_id = row[0] if type(row) is list and row and type(row[0]) is str else None
        return DeadLetter(sink, self.number, task_id, time.time(), self.error, row)


@attrs.frozen
class DeadLetter:
    """A result a sink cannot store, kept in the journal with why."""

    #: The sink that rejected it.
    sink: str
    #: Its number in the outbox.
    number: int
    task_id: str | None
    #: When it was rejected (seconds since the epoch).
    at: float
    #: Why, in one line.
    error: str
    #: The result's row (:func:`result_to_row`), as it was.
    row: Any

    @classmethod
    def of(cls, sink: str, number: int, result: Result, error: str) -> DeadLetter:
        """The dead letter of ``result``, number ``number`` of the outbox, rejected by ``sink``."""
        return cls(sink, number, result.task_id, time.time(), error, result_to_row(result))

    @property
    def result(self) -> Result | None:
        """The result, if its row can be read as one."""
        try:
            return result_from_row(self.row)
        except (ValueError, TypeError, KeyError):
            return None

    def packed(self) -> bytes:
        """The row packed for the journal; a row too deep for msgpack is kept without its payload."""
        try:
            return _pack(self.row)
        except ValueError:
            return _pack([*self.row[:9], None, *self.row[10:]])


def _dead_letters(conn: sqlite3.Connection, sink: str | None = None, limit: int = -1) -> list[DeadLetter]:
    """The dead letters (of ``sink``, if given; at most ``limit``, if not negative), newest first."""
    rows = conn.execute(
        "SELECT sink, number, task_id, at, error, data FROM dead_letters WHERE ?1 IS NULL OR sink = ?1 "
        "ORDER BY at DESC, number DESC LIMIT ?2",
        (sink, limit),
    ).fetchall()
    return [DeadLetter(s, n, t, a, e, _unpack(d)) for s, n, t, a, e, d in rows]


def read_dead_letters(path: str | Path) -> list[DeadLetter]:
    """The dead letters of the journal at ``path``, newest first (the master may be running)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"journal {path}: no such file")
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        try:
            return _dead_letters(conn)
        finally:
            conn.close()
    except sqlite3.Error as exc:
        raise ConfigError(f"journal {path}: cannot read its dead letters ({exc})") from None


def new_run_id() -> str:
    """A fresh run id: short, and unique across runs (task ids start with it)."""
    return secrets.token_hex(6)


def _connect(path: Path) -> sqlite3.Connection:
    try:
        conn = sqlite3.connect(path, isolation_level=None, timeout=60.0, check_same_thread=False)
        # The file gives back the pages compaction frees (set when it is created; a no-op after),
        # and the write-ahead log is cut back after each checkpoint: the journal's size on disk
        # follows what it holds, not how long the run has been going.
        conn.execute("PRAGMA auto_vacuum=INCREMENTAL")
        conn.execute(f"PRAGMA journal_size_limit={_WAL_LIMIT}")
        # WAL: the delivery threads read while the master writes.  NORMAL: a commit survives a
        # killed process (not a power cut), which is the failure the journal is for.
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
    except sqlite3.Error as exc:
        raise ConfigError(f"journal {path}: cannot open it as SQLite ({exc})") from None
    return conn


#: A task record's fields as a chunk row holds them, but its history.
_fields = operator.attrgetter("seq", "type", "args", "key", "timeout", *BUDGETS)


def _history_rows(history: Sequence[Attempt]) -> list[list[Any]] | None:
    if not history:
        return None
    return [[a.attempt, a.status.value, a.error, a.controller, a.finished_at] for a in history]


def _history(rows: list[list[Any]] | None) -> list[Attempt]:
    return [Attempt(a, Status(s), e, c, f) for a, s, e, c, f in rows or ()]


class Journal:
    """The master's side of the journal: one connection, used from the event loop only.

    :param path: the SQLite file (created if missing).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._conn = _connect(self.path)
        try:
            self._conn.executescript(_SCHEMA)
            if "stored" not in {column[1] for column in self._conn.execute("PRAGMA table_info(delivered)")}:
                self._conn.execute("ALTER TABLE delivered ADD COLUMN stored BLOB")  # a journal of an older master
            meta = dict(self._conn.execute("SELECT key, value FROM meta").fetchall())
            last_result = self._conn.execute("SELECT max(first + count - 1) FROM results").fetchone()[0]
            self._window = self._load_window()
        except sqlite3.Error as exc:
            raise ConfigError(f"journal {self.path}: {exc}") from None
        #: True when the journal was just created: nothing to resume.
        self.fresh = "run_id" not in meta
        self.run_id: str = meta.get("run_id") or new_run_id()
        # Both marks are in meta as of the last compaction, and in the rows written since.
        #: The highest task sequence number handed out (the generator's high-water mark).
        self.high_water = max(int(meta.get("high_water", 0)), self._high_water_in_chunks)
        #: Number of the newest result (results are numbered without gaps).
        self.last_result = max(int(meta.get("last_result", 0)), last_result or 0)
        self._meta = meta
        self._new: list[list[Any]] = []
        self._updates: list[tuple[Any, ...]] = []
        self._done: list[int] = []
        self._results: list[list[Any]] = []
        self._rows_since_compaction = 0

    def bind_run(self, generator: str, options: dict[str, Any], *, deterministic: bool) -> None:
        """Record which generator this run belongs to, or check that a resumed run is the same.

        A deterministic generator must also have the same options, since it is fast-forwarded
        past the tasks it already handed out.
        """
        text = json.dumps(options, sort_keys=True, default=str)
        if self.fresh:
            with _writing(self.path):
                self._conn.executemany(
                    "INSERT INTO meta (key, value) VALUES (?, ?)",
                    [
                        ("run_id", self.run_id),
                        ("generator", generator),
                        ("options", text),
                        ("high_water", "0"),
                        ("last_result", "0"),
                    ],
                )
            self.fresh = False
            return
        known = self._meta.get("generator")
        if known != generator:
            raise ConfigError(
                f"journal {self.path} belongs to a run of generator '{known}', not '{generator}': "
                "use another --journal or remove this one"
            )
        if deterministic and self._meta.get("options") != text:
            raise ConfigError(
                f"journal {self.path} belongs to a run of generator '{generator}' with options "
                f"{self._meta.get('options')}: resume with the same options, or use another --journal"
            )

    def _load_window(self) -> dict[int, list[Any]]:
        """Task rows of the window by sequence number, as of the last commit."""
        conn = self._conn
        rows: dict[int, list[Any]] = {}
        for (data,) in conn.execute("SELECT data FROM chunks ORDER BY id"):
            for row in _unpack(data):
                rows[row[0]] = row
        self._high_water_in_chunks = max(rows, default=0)
        for (seqs,) in conn.execute("SELECT seqs FROM results"):
            for seq in _unpack(seqs):
                rows.pop(seq, None)
        columns = ", ".join(BUDGETS)
        for seq, *counters, history in conn.execute(f"SELECT seq, {columns}, history FROM attempts"):  # noqa: S608
            if seq in rows:
                rows[seq] = [*rows[seq][:5], *counters, _unpack(history) if history else None]
        return rows

    def pending(self) -> list[TaskRecord]:
        """The tasks of the window as the journal was opened, in order, ready to be queued
        again (once: the journal forgets them, the master holds them from then on)."""
        run = self.run_id
        records = []
        window, self._window = self._window, {}
        for seq in sorted(window):
            _, type_, args, key, timeout, *saved = window[seq]
            *counters, history = saved or [*(0 for _ in BUDGETS), None]
            record = TaskRecord(seq, f"{run}-{seq}", type_, args, key=key, timeout=timeout, history=_history(history))
            for name, spent in zip(BUDGETS, counters, strict=True):
                setattr(record, name, spent)
            records.append(record)
        return records

    # -- buffered changes, written by commit() ---------------------------------------------

    def add(self, records: Iterable[TaskRecord]) -> None:
        """New tasks entered the window (in sequence order)."""
        new = self._new
        for r in records:
            new.append([r.seq, r.type, r.args, r.key, r.timeout])
        if new:
            self.high_water = max(self.high_water, new[-1][0])

    def retried(self, records: Iterable[TaskRecord]) -> None:
        """These tasks' counters and histories changed."""
        self._updates.extend(
            (r.seq, *[getattr(r, name) for name in BUDGETS], _pack(_history_rows(r.history)) if r.history else None)
            for r in records
        )

    def settled(self, pairs: Iterable[tuple[TaskRecord, Result]]) -> None:
        """These tasks reached their terminal results: out of the window, into the outbox."""
        done = self._done
        results = self._results
        for record, result in pairs:
            done.append(record.seq)
            results.append(result_to_row(result))

    def commit(self) -> int:
        """Write the buffered changes in one transaction; returns how many results were added."""
        if not (self._new or self._updates or self._done):
            return 0
        conn = self._conn
        added = len(self._results)
        with _transaction(conn, self.path):  # on failure, the buffered changes stay for the next commit
            if self._new:
                conn.execute("INSERT INTO chunks (data) VALUES (?)", (_pack(self._new),))
            if self._updates:
                conn.executemany(_SAVE_ATTEMPTS, self._updates)
            if added:
                conn.execute(
                    "INSERT INTO results (first, count, at, seqs, data) VALUES (?, ?, ?, ?, ?)",
                    (self.last_result + 1, added, time.time(), _pack(self._done), _pack(self._results)),
                )
        self._rows_since_compaction += bool(self._new) + len(self._updates) + bool(added)
        self._new.clear()
        self._updates.clear()
        self._done.clear()
        self._results.clear()
        self.last_result += added
        return added

    @property
    def needs_compaction(self) -> bool:
        """Whether enough was written since the last compaction to rewrite the window."""
        return self._rows_since_compaction >= _COMPACT_ROWS

    def compact(self, window: Iterable[TaskRecord], sinks: Sequence[str]) -> None:
        """Rewrite the window (every live task, as the master holds it) as one chunk, and drop
        the results that every one of ``sinks`` has.

        Call right after :meth:`commit`; ``window`` must be what the journal describes.
        """
        # In any order: the window is read back by sequence number.
        rows: list[list[Any]] = [[*_fields(r), _history_rows(r.history) if r.history else None] for r in window]
        conn = self._conn
        with _transaction(conn, self.path):
            conn.execute("DELETE FROM chunks")
            conn.execute("DELETE FROM attempts")
            if rows:
                conn.execute("INSERT INTO chunks (data) VALUES (?)", (_pack(rows),))
            conn.executemany(
                "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                [("high_water", str(self.high_water)), ("last_result", str(self.last_result))],
            )
            marks = dict(conn.execute("SELECT sink, last FROM delivered").fetchall())
            have_all = min((marks.get(sink, 0) for sink in sinks), default=self.last_result)
            conn.execute("DELETE FROM results WHERE first + count - 1 <= ?", (have_all,))
        self._rows_since_compaction = 0
        with _writing(self.path):
            # Freed pages go back to the file system (executescript: execute frees one per call).
            conn.executescript("PRAGMA incremental_vacuum;")

    # -- the outbox, master side ----------------------------------------------------------

    def register_sinks(self, names: Iterable[str]) -> None:
        """Give each sink a delivered mark; a sink new to this journal starts at the oldest
        result still in the outbox."""
        with _writing(self.path):
            self._conn.executemany("INSERT OR IGNORE INTO delivered (sink, last) VALUES (?, 0)", [(n,) for n in names])

    def close(self) -> None:
        """Close the connection (buffered, uncommitted changes are dropped)."""
        self._conn.close()


class Outbox:
    """One sink's view of the outbox, with its own connection (for its delivery thread)."""

    def __init__(self, path: str | Path, sink: str) -> None:
        self.sink = sink
        self._path = Path(path)
        self._conn = _connect(self._path)
        row = self._conn.execute("SELECT last, stored FROM delivered WHERE sink = ?", (sink,)).fetchone()
        mark, stored = row or (0, None)
        #: Number of the last result delivered to this sink.
        self.mark: int = mark
        #: The last result this sink stored, as the journal had it when opened (the delivery
        #: thread keeps it from then on), if it ever stored one.
        self.stored: Result | None = result_from_row(_unpack(stored)) if stored is not None else None
        self._cached: tuple[int, list[Any]] = (0, [])

    def _rows_from_mark(self, columns: str, limit: int) -> list[tuple[Any, ...]]:
        """Outbox rows from the one holding result ``mark + 1`` on."""
        conn = self._conn
        start = conn.execute("SELECT max(first) FROM results WHERE first <= ?", (self.mark + 1,)).fetchone()[0]
        return conn.execute(
            f"SELECT {columns} FROM results WHERE first >= ? ORDER BY first LIMIT ?",  # noqa: S608  (fixed columns)
            (start if start is not None else self.mark + 1, limit),
        ).fetchall()

    def fetch(self, limit: int) -> tuple[int, list[Result]]:
        """Up to ``limit`` undelivered results and the number of the last one; the batch ends
        before a row that cannot be read as a result, and :class:`UnreadableResult` is raised
        when the first one cannot."""
        results: list[Result] = []
        number = self.mark
        for first, data in self._rows_from_mark("first, data", 1 + limit):
            if self._cached[0] != first:  # a row bigger than a batch is unpacked once, not per batch
                self._cached = (first, _unpack(data))
            rows = self._cached[1]
            offset = max(number + 1 - first, 0)
            take = rows[offset : offset + limit - len(results)]
            for index, row in enumerate(take):
                try:
                    results.append(result_from_row(row))
                except (ValueError, TypeError, KeyError) as exc:
                    if results:  # the batch ends before it
                        return first + offset + index - 1, results
                    raise UnreadableResult(first + offset + index, row, f"unreadable in the journal: {exc}") from None
            number = first + offset + len(take) - 1
            if len(results) >= limit:
                break
        return number, results

    def delivered(self, last: int, dead_letters: Sequence[DeadLetter] = (), stored: Result | None = None) -> None:
        """Results up to number ``last`` are stored by the sink, but for ``dead_letters``, kept
        apart, and ``stored`` is the last one it stored (:class:`JournalWriteError` if that
        cannot be written now)."""
        conn = self._conn
        with _transaction(conn, self._path):
            conn.executemany(
                "INSERT OR IGNORE INTO dead_letters VALUES (?, ?, ?, ?, ?, ?)",
                [(d.sink, d.number, d.task_id, d.at, d.error, d.packed()) for d in dead_letters],
            )
            # In the mark's row: a commit of the delivery thread writes one page, as before.
            conn.execute(
                "UPDATE delivered SET last = ?, stored = coalesce(?, stored) WHERE sink = ?",
                (last, None if stored is None else _pack(result_to_row(stored)), self.sink),
            )
        self.mark = last

    def dead_letters(self, limit: int) -> tuple[int, list[DeadLetter]]:
        """How many dead letters this sink has, and the latest ``limit`` of them."""
        count = self._conn.execute("SELECT count(*) FROM dead_letters WHERE sink = ?", (self.sink,)).fetchone()[0]
        return count, _dead_letters(self._conn, self.sink, limit)

    def close(self) -> None:
        """Close the connection."""
        self._conn.close()


class JournalHealth:
    """Whether the master's journal can be written, and the free space under it: each change
    is said once, in one line (and shown by :meth:`status`).

    :param path: the journal file.
    :param min_free_mb: free space (MB) under the journal's directory below which to warn; 0:
        never.
    """

    def __init__(self, path: Path, min_free_mb: float) -> None:
        self.path = path
        self.min_free_mb = min_free_mb
        #: When (monotonic) the journal stopped taking writes; ``None`` while it takes them.
        self.full_since: float | None = None
        #: Bytes free under the journal's directory, as last checked.
        self.free_bytes: int | None = None
        #: Whether the free space is below ``min_free_mb``.
        self.low = False
        self._retry_at = 0.0

    @property
    def full(self) -> bool:
        """Whether the journal cannot be written (until a write succeeds again)."""
        return self.full_since is not None

    def may_write(self, now: float) -> bool:
        """Whether to try a write now: always, unless the last one failed less than
        :data:`JOURNAL_RETRY` seconds ago."""
        return self.full_since is None or now >= self._retry_at

    def failed(self, exc: JournalWriteError, now: float) -> None:
        """A write failed; the first failure of a row is logged."""
        self._retry_at = now + JOURNAL_RETRY
        if self.full_since is None:
            self.full_since = now
            log.error(
                "%s: dispatching stops, results stay unacknowledged with their controllers, retrying every %g s",
                exc,
                JOURNAL_RETRY,
            )

    def written(self, now: float) -> None:
        """A write succeeded: if writes had failed, say that the journal works again."""
        if self.full_since is not None:
            log.warning("journal %s written again after %.0f s: dispatching resumes", self.path, now - self.full_since)
            self.full_since = None

    def check_space(self) -> None:
        """Look at the free space under the journal; crossing ``min_free_mb`` is said once."""
        try:
            self.free_bytes = shutil.disk_usage(self.path.parent).free
        except OSError:
            self.free_bytes = None
            return
        free_mb = self.free_bytes / 1e6
        low = free_mb < self.min_free_mb
        if low and not self.low:
            log.warning(
                "journal %s: %.1f MB free on its file system, below master.journal_min_free_mb = %g",
                self.path,
                free_mb,
                self.min_free_mb,
            )
        elif self.low and not low:
            log.info("journal %s: %.1f MB free again", self.path, free_mb)
        self.low = low

    def status(self) -> dict[str, Any]:
        """The journal's state as plain data (the master's status ``journal`` field)."""
        return {
            "path": str(self.path),
            "full": self.full,
            "full_for_s": round(time.monotonic() - self.full_since, 1) if self.full_since is not None else None,
            "free_bytes": self.free_bytes,
            "low_space": self.low,
        }
