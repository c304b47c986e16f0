"""The ``mysql`` result sink: idempotent bulk writes into MySQL or MariaDB.

The master's delivery thread calls :meth:`MySQLSink.write` with batches of results.  Each batch
is streamed to the server by one ``LOAD DATA LOCAL INFILE`` where the server allows it, else
sent as multi-row ``INSERT ... ON DUPLICATE KEY UPDATE`` statements; either way it is committed
as one transaction, so a batch is stored completely or not at all, and a batch delivered again
(after a failure or a master restart) adds nothing: the table has a unique key on task_id.
A connection that was killed or lost is opened again once and the batch re-sent; if that
fails too, :meth:`~MySQLSink.write` raises and the master offers the batch again later.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import attrs
import MySQLdb

from cyclone_core import ConfigError, CycloneError, Result, ResultSink
from cyclone_mysql_sink import tsv
from cyclone_mysql_sink.layouts import LAYOUTS, Layout

__all__ = ("MySQLSink",)

log = logging.getLogger("cyclone.sink.mysql")

# Error codes that mean "the connection is gone": reconnect and send the batch again.
_CONNECTION_LOST = frozenset(
    {
        1053,  # ER_SERVER_SHUTDOWN: the server is shutting down
        1927,  # ER_CONNECTION_KILLED (MariaDB)
        2002,  # CR_CONNECTION_ERROR: cannot connect (refused, no socket)
        2003,  # CR_CONN_HOST_ERROR: cannot connect to the host
        2006,  # CR_SERVER_GONE_ERROR
        2013,  # CR_SERVER_LOST: lost during a query
        2055,  # CR_SERVER_LOST_EXTENDED
        4031,  # ER_CLIENT_INTERACTION_TIMEOUT (MySQL 8)
    }
)
# Error codes that mean "LOAD DATA LOCAL is not allowed here": the batch goes as INSERTs.
_LOAD_REFUSED = frozenset(
    {
        1148,  # ER_NOT_ALLOWED_COMMAND: the server's local_infile is off (MySQL 5.7, older MariaDB)
        2068,  # CR_LOAD_DATA_LOCAL_INFILE_REJECTED: the client library refused
        3948,  # ER_CLIENT_LOCAL_FILES_DISABLED (MySQL 8)
        4166,  # ER_LOAD_INFILE_CAPABILITY_DISABLED (MariaDB 10.6 and later)
    }
)
_DUPLICATE_KEY = 1062  # ER_DUP_ENTRY: what LOAD DATA's IGNORE makes of a task_id already stored
# Results made into rows and sent down the pipe at a time, while the server reads the previous ones.
_LOAD_CHUNK_ROWS = 64
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
_SQL_MODE = re.compile(r"[A-Za-z_,]*")
# Statements of up to 128 KiB (far below the servers' max_allowed_packet: 16 MiB by default in
# MariaDB, 64 MiB in MySQL 8), so that a batch makes several and the pipeline has work to
# overlap: the next statement is built while the server stores the previous one.
_STATEMENT_BYTES = 128 * 1024


def _identifier(_: object, attribute: attrs.Attribute[str], value: str) -> None:
    if not _IDENTIFIER.fullmatch(value):
        raise ValueError(
            f"{attribute.name}: {value!r} is not a table name (up to 64 letters, digits and _, no leading digit)"
        )


def _layout(_: object, attribute: attrs.Attribute[str], value: str) -> None:
    if value not in LAYOUTS:
        raise ValueError(f"{attribute.name}: {value!r} is not a layout (known: {', '.join(LAYOUTS)})")


def _sql_mode(_: object, attribute: attrs.Attribute[str], value: str) -> None:
    if not _SQL_MODE.fullmatch(value):
        raise ValueError(
            f"{attribute.name}: {value!r} is not a list of SQL modes such as 'STRICT_ALL_TABLES,NO_ZERO_DATE'"
        )


def _row_literal(connection: Any) -> Callable[[tuple[Any, ...]], bytes]:
    """A row -> its quoted SQL values ``(...)``, as ``connection.literal`` makes them but about
    twice as fast: strings, integers and NULLs (most of a row) are quoted here, through the
    connection's own escaping; anything else goes to ``connection.literal``."""
    quote, literal = connection.string_literal, connection.literal

    def row_literal(row: tuple[Any, ...]) -> bytes:
        return b"(%b)" % b",".join(
            [
                b"NULL"
                if value is None
                else quote(value.encode())
                if type(value) is str
                else b"%d" % value
                if type(value) is int
                else literal(value)
                for value in row
            ]
        )

    return row_literal


def _one_line(text: str) -> str:
    return " ".join(text.split())


class _NotLoaded(Exception):
    """A batch's load was refused or not exact; the message says why."""


class _Feeder:
    """Builds the rows of a batch and writes them down a pipe, in a thread of its own, while
    the client library reads the other end for the server; closes its end when done."""

    def __init__(self, pipe: int, results: Sequence[Result], to_row: Callable[[Result], tuple[Any, ...] | None]):
        self._pipe = pipe
        self._results = results
        self._to_row = to_row
        #: Rows written.
        self.rows = 0
        #: What stopped the feeder early, other than the reader going away.
        self.error: Exception | None = None

    def run(self) -> None:
        """Write every row, then close the pipe."""
        try:
            for start in range(0, len(self._results), _LOAD_CHUNK_ROWS):
                chunk = self._results[start : start + _LOAD_CHUNK_ROWS]
                self._send([row for row in map(self._to_row, chunk) if row is not None])
        except BrokenPipeError:
            pass  # the load ended before reading everything: its own outcome says why
        except Exception as exc:  # handed to the writing thread
            self.error = exc
        finally:
            os.close(self._pipe)

    def _send(self, rows: list[tuple[Any, ...]]) -> None:
        if not rows:
            return
        data = memoryview(tsv.encode(rows))
        while data:
            data = data[os.write(self._pipe, data) :]
        self.rows += len(rows)


@attrs.define(kw_only=True)
class MySQLSink(ResultSink):
    """Store results in a MySQL or MariaDB table (``layout`` ``results`` or ``ost_perf``).

    The password comes from ``password``, else from the file ``password_file``, else from the
    environment variable named by ``password_env``; it is never logged or shown in an error.
    """

    name: ClassVar[str] = "mysql"

    #: Server host name or address.
    host: str = "127.0.0.1"
    port: int = attrs.field(default=3306, validator=[attrs.validators.ge(1), attrs.validators.le(65535)])
    user: str = "cyclone"
    password: str = attrs.field(default="", repr=False)
    #: A file holding the password (a trailing newline is ignored); read at each connect.
    password_file: str = ""
    #: Environment variable holding the password, used when neither of the above is set.
    password_env: str = "CYCLONE_MYSQL_PASSWORD"  # noqa: S105  (a variable name, not a password)
    database: str = "cyclone"
    table: str = attrs.field(default="cyclone_results", validator=_identifier)
    #: ``results`` (every field of a result) or ``ost_perf`` (the Cyclone 2.x OST table).
    layout: str = attrs.field(default="results", validator=_layout)
    #: Create the table when the sink opens, if it does not exist.
    create_table: bool = True
    #: SQL mode of the sink's sessions; empty keeps the server's default.
    sql_mode: str = attrs.field(default="", validator=_sql_mode)
    #: Seconds to wait for a connection, and for each network read and write.
    connect_timeout: int = attrs.field(default=10, validator=attrs.validators.gt(0))
    read_timeout: int = attrs.field(default=60, validator=attrs.validators.gt(0))
    write_timeout: int = attrs.field(default=60, validator=attrs.validators.gt(0))
    #: Rows per batch (Cyclone 2.x ``store_max_count``) and seconds between flushes
    #: (2.x ``store_timeout``).
    batch_size: int = attrs.field(default=1000, validator=attrs.validators.gt(0))
    flush_interval: float = attrs.field(default=5.0, validator=attrs.validators.ge(0))
    #: Send batches with LOAD DATA LOCAL INFILE where the server allows it (its ``local_infile``),
    #: about 1.2x (``results``) to 2.2x (``ost_perf``) the INSERTs' rate.  Off by default: LOCAL
    #: lets the server ask the client for any file it names, so a server (or anyone posing as
    #: one) could read what the master can; with it off, the connection refuses such requests
    #: (the MariaDB client library allows them unless told not to).  Turn it on for a server you
    #: trust, over TLS or a local socket.
    load_data: bool = False

    _connection: Any = attrs.field(default=None, init=False, repr=False, eq=False)
    # Whether this connection sends batches with LOAD DATA (until the server refuses it).
    _loading: bool = attrs.field(default=False, init=False, repr=False, eq=False)
    # The password of the last connect, kept only to mask it should a message ever echo it.
    _secret: str = attrs.field(default="", init=False, repr=False, eq=False)

    def __attrs_post_init__(self) -> None:
        if self.password and self.password_file:
            raise ValueError("set password or password_file, not both")

    # -- public ------------------------------------------------------------------------

    @property
    def server(self) -> str:
        """``user@host:port/database``, the name errors and logs use (never the password)."""
        return f"{self.user}@{self.host}:{self.port}/{self.database}"

    @property
    def schema(self) -> Layout:
        """The table layout in use."""
        return LAYOUTS[self.layout]

    def create_table_sql(self) -> str:
        """The ``CREATE TABLE IF NOT EXISTS`` statement of the configured table and layout."""
        return self.schema.create_sql(self.table)

    def check(self) -> None:
        """Open and close again, before the run: a refused login, an unknown database or host,
        a missing table stop the run before it starts.  A server that does not answer now
        (refused connection, timeout) may later: logged, and left to the delivery's retries."""
        try:
            self.open()
        except CycloneError as exc:
            if not isinstance(exc.__cause__, MySQLdb.Error) or not self._lost(exc.__cause__):
                raise
            log.warning("%s; results wait in the journal until it answers", exc)
        finally:
            self.close()

    def open(self) -> None:
        """Connect, create the table if asked to, and check that it has the layout's columns."""
        self._connect()
        if self.create_table:
            self._send("create table", lambda cursor: cursor.execute(self.create_table_sql()))
        self._check_table()

    def write(self, results: Sequence[Result]) -> None:
        """Store the rows of ``results`` in one transaction; rows already stored are skipped.

        Where the server allows it, the rows are streamed to one ``LOAD DATA LOCAL INFILE``
        through a pipe: a thread builds them while the server stores those it has read.  LOCAL
        makes the server turn a value it would reject or alter into a warning, and a row
        already stored into a skipped one (ER_DUP_ENTRY); any warning but those rolls the load
        back and the batch goes as INSERTs, which raise the server's error for a bad value.
        """
        if not results:
            return

        def send(cursor: Any) -> None:
            if self._loading:
                try:
                    self._load(results, cursor)
                    return
                except _NotLoaded as exc:
                    self._connection.rollback()
                    log.debug("mysql %s: a batch of %d results goes as INSERTs: %s", self.server, len(results), exc)
            self._insert(results)

        try:
            self._send(f"insert of {len(results)} results into {self.table}", send)
        except ValueError as exc:  # a result no row can hold (a task id too long for the key)
            self._rollback()
            raise CycloneError(f"mysql {self.server}: cannot store a result in {self.table}: {exc}") from exc

    def close(self) -> None:
        """Close the connection."""
        self._disconnect()

    # -- connection handling -----------------------------------------------------------

    def _password(self) -> str:
        if self.password:
            return self.password
        if self.password_file:
            try:
                return Path(self.password_file).read_text(encoding="utf-8").rstrip("\r\n")
            except (OSError, UnicodeDecodeError) as exc:
                reason = getattr(exc, "strerror", None) or str(exc)
                raise ConfigError(f"sink 'mysql': password_file {self.password_file}: cannot read: {reason}") from None
        return os.environ.get(self.password_env, "") if self.password_env else ""

    def _connect(self) -> None:
        self._disconnect()
        # UTC sessions: DATETIME columns and CURRENT_TIMESTAMP hold UTC whatever the server's
        # time zone.  The SQL mode is validated to letters, "_" and ",".
        # max_error_count: SHOW WARNINGS lists every warning of a batch's load, not the first 64.
        init = "SET time_zone = '+00:00', max_error_count = 65535" + (
            f", sql_mode = '{self.sql_mode}'" if self.sql_mode else ""
        )
        self._secret = self._password()
        try:
            self._connection = MySQLdb.connect(
                host=self.host,
                port=self.port,
                user=self.user,
                password=self._secret,
                database=self.database,
                charset="utf8mb4",
                autocommit=False,
                init_command=init,
                connect_timeout=self.connect_timeout,
                read_timeout=self.read_timeout,
                write_timeout=self.write_timeout,
                local_infile=self.load_data,
            )
        except MySQLdb.Error as exc:
            raise self._error("connect", exc) from exc
        self._loading = self.load_data and os.path.isdir("/dev/fd")  # where the client library opens the pipe

    def _disconnect(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            with contextlib.suppress(MySQLdb.Error):  # already gone: nothing left to release
                connection.close()

    def _send(self, what: str, statements: Callable[[Any], None]) -> None:
        """Run ``statements`` on a cursor and commit; on a lost connection reconnect once and
        run them again.  Anything not committed is rolled back, so a retry starts clean."""
        if self._connection is None:
            self._connect()
        try:
            self._run(statements)
            return
        except MySQLdb.Error as exc:
            if not self._lost(exc):
                self._rollback()
                raise self._error(what, exc) from exc
            log.info("mysql %s: connection lost (%s); reconnecting", self.server, _one_line(str(exc)))
        # The first try never reached a commit the client saw: send the whole batch again.
        # Rows the server did commit before the connection dropped are skipped by the unique key.
        self._connect()
        try:
            self._run(statements)
        except MySQLdb.Error as exc:
            self._rollback()
            raise self._error(what, exc) from exc

    def _run(self, statements: Callable[[Any], None]) -> None:
        cursor = self._connection.cursor()
        try:
            statements(cursor)
        finally:
            cursor.close()
        self._connection.commit()

    # -- the two ways of sending a batch ----------------------------------------------------

    def _load(self, results: Sequence[Result], cursor: Any) -> None:
        """Stream the rows of ``results`` to one LOAD DATA LOCAL INFILE through a pipe that the
        client library reads as ``/dev/fd/N``: nothing is written to disk."""
        read_end, write_end = os.pipe()
        feeder = _Feeder(write_end, results, self.schema.to_row)
        thread = threading.Thread(target=feeder.run, name="cyclone-mysql-load", daemon=True)
        try:
            thread.start()
        except BaseException:
            os.close(write_end)
            os.close(read_end)
            raise
        try:
            cursor.execute(self.schema.load_sql(self.table, f"/dev/fd/{read_end}"))
        except MySQLdb.OperationalError as exc:
            if not exc.args or exc.args[0] not in _LOAD_REFUSED:
                raise
            self._loading = False
            log.info(
                "mysql %s: the server refuses LOAD DATA LOCAL INFILE (%s); batches go as INSERTs",
                self.server,
                _one_line(str(exc.args[-1])),
            )
            raise _NotLoaded("LOAD DATA LOCAL INFILE refused") from exc
        finally:
            os.close(read_end)  # a feeder still writing (the load failed) gets EPIPE and stops
            thread.join()
        if isinstance(feeder.error, TypeError):  # a value the text format cannot hold
            raise _NotLoaded(str(feeder.error))
        if feeder.error is not None:
            raise feeder.error
        self._check_load(cursor, feeder.rows)

    def _check_load(self, cursor: Any, rows: int) -> None:
        """Raise :class:`_NotLoaded` unless the server read ``rows`` rows and warned of nothing
        but task ids already stored."""
        read = re.match(r"Records: (\d+)", self._connection.info() or "")
        if read is None or int(read.group(1)) != rows:
            raise _NotLoaded(f"the server read {read and read.group(1)} rows of {rows}")
        count = self._connection.warning_count()
        if not count:
            return
        cursor.execute("SHOW WARNINGS")
        warnings = cursor.fetchall()
        if len(warnings) < count:
            raise _NotLoaded(f"{count} warnings, more than the server lists")
        for _level, code, message in warnings:
            if code != _DUPLICATE_KEY:
                raise _NotLoaded(f"({code}) {message}")

    def _insert(self, results: Sequence[Result]) -> None:
        """Send the rows of ``results`` as multi-row INSERTs of up to 128 KiB, pipelined: a
        statement is sent without waiting for the server, the next one is built (rows made and
        quoted) while the server stores it, and its outcome is read before the next is sent."""
        insert = self.schema.insert_sql(self.table)
        head = insert[: insert.index(" VALUES ") + 8].encode()
        tail = insert[insert.index(" ON DUPLICATE KEY ") :].encode()
        to_row = self.schema.to_row
        connection = self._connection
        literal = _row_literal(connection)
        waiting = False  # a statement was sent whose outcome is not read yet

        def pipe(values: bytearray) -> None:
            nonlocal waiting
            if waiting:
                waiting = False
                connection.read_query_result()  # raises the server's error for that statement
            connection.send_query(head + values + tail)
            waiting = True

        try:
            values = bytearray()
            for result in results:
                row = to_row(result)
                if row is None:
                    continue
                value = literal(row)
                if values:
                    if len(values) + len(value) > _STATEMENT_BYTES:
                        pipe(values)
                        values = bytearray()
                    else:
                        values += b","
                values += value
            if values:
                pipe(values)
            if waiting:
                waiting = False
                connection.read_query_result()
        finally:
            if waiting:  # failed while the server stored a statement: take its outcome, so the rollback can go
                with contextlib.suppress(MySQLdb.Error):
                    connection.read_query_result()

    @staticmethod
    def _lost(exc: MySQLdb.Error) -> bool:
        if isinstance(exc, MySQLdb.InterfaceError):  # the client already closed the connection
            return True
        return isinstance(exc, MySQLdb.OperationalError) and bool(exc.args) and exc.args[0] in _CONNECTION_LOST

    def _rollback(self) -> None:
        if self._connection is None:
            return
        try:
            self._connection.rollback()
        except MySQLdb.Error:
            self._disconnect()  # a broken connection: the next batch opens a new one

    def _check_table(self) -> None:
        found: set[str] = set()

        def columns(cursor: Any) -> None:
            cursor.execute(
                "SELECT column_name FROM information_schema.columns"
                " WHERE table_schema = DATABASE() AND table_name = %s",
                (self.table,),
            )
            found.update(row[0].lower() for row in cursor.fetchall())

        self._send(f"reading the columns of {self.table}", columns)
        if not found:
            raise CycloneError(
                f"mysql {self.server}: table {self.table} does not exist "
                "(set create_table = true, or run 'cyclone mysql create-table')"
            )
        missing = [column for column in self.schema.columns if column not in found]
        if missing:
            raise CycloneError(
                f"mysql {self.server}: table {self.table} lacks column(s) {', '.join(missing)} of layout "
                f"'{self.layout}' (see 'cyclone mysql create-table --print')"
            )

    def _error(self, what: str, exc: MySQLdb.Error) -> CycloneError:
        code, message = (exc.args[0], str(exc.args[1])) if len(exc.args) == 2 else ("?", str(exc))
        text = _one_line(f"mysql {self.server}: {what} failed: ({code}) {message}")
        if self._secret:  # servers do not echo it; masked all the same
            text = text.replace(self._secret, "***")
        return CycloneError(text)
