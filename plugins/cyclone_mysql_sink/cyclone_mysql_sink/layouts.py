"""Table layouts of the ``mysql`` sink: the DDL of each, and how a result becomes a row.

A layout is pure data plus a pure function, so the mapping is tested without a server.  Every
value is made to fit its column here (strings cut to the column length, non-finite numbers
replaced, out-of-range timestamps dropped), because the sink runs under strict SQL modes and a
row the server rejects would be offered again and again.

``results``
    one row per result with every field of :class:`~cyclone_core.Result`; metrics, payload
    and attempt history as JSON.
``ost_perf``
    the Cyclone 2.x OST performance table, filled from the metrics of the ``lustre-ost-io``
    task (``cyclone_lustre_ost_*``, labelled with the Lustre exporters' ``component="ost"`` and
    ``target="<fs>-OST000a"``); the 2.x columns keep their names and meaning so existing
    dashboards keep working.
"""

from __future__ import annotations

import functools
import json
import math
import re
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any

import attrs
import orjson

from cyclone_core import Metric, Result
from cyclone_mysql_sink import tsv

__all__ = ("LAYOUTS", "OST_IO_TASK", "OST_METRICS", "Layout")

# Longest task id the unique key holds; engine ids ("<run id>-<sequence>") are far shorter.
TASK_ID_CHARS = 255
_NAME_CHARS = 255
# TEXT holds 65,535 bytes; utf8mb4 needs up to 4 bytes a character.
_TEXT_CHARS = 16_383
_BIGINT_MAX = 2**63 - 1
_INT_MAX = 2**31 - 1

#: The task type whose results the ``ost_perf`` layout stores.
OST_IO_TASK = "lustre-ost-io"
#: Metric name -> what it is, for the metrics the ``ost_perf`` layout reads.
OST_METRICS = {
    "cyclone_lustre_ost_write_bytes_per_second": "write throughput",
    "cyclone_lustre_ost_read_bytes_per_second": "read throughput",
    "cyclone_lustre_ost_write_seconds": "write duration",
    "cyclone_lustre_ost_read_seconds": "read duration",
    "cyclone_lustre_ost_probe_bytes": "bytes written and read",
}
_WRITE_RATE, _READ_RATE, _WRITE_SECONDS, _READ_SECONDS, _PROBE_BYTES = OST_METRICS
_OST_NAME = re.compile(r"OST[0-9a-fA-F]{4,}")
_SURROGATE = re.compile("[\ud800-\udfff]")

_TABLE_OPTIONS = "ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci"
# task_id compares byte for byte: a case-insensitive collation would make two distinct ids
# one key, and the second result would be dropped as a "duplicate".
_TASK_ID_COLUMN = f"task_id VARCHAR({TASK_ID_CHARS}) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL"


@attrs.frozen
class Layout:
    """One table layout.

    :param name: the ``layout`` option value.
    :param columns: the columns :attr:`to_row` fills, in order.
    :param definition: column and key definitions, the body of ``CREATE TABLE``.
    :param to_row: a result -> its row, or ``None`` when the result does not belong in this
        table.
    """

    name: str
    columns: tuple[str, ...]
    definition: str
    to_row: Callable[[Result], tuple[Any, ...] | None]

    def create_sql(self, table: str) -> str:
        """``CREATE TABLE IF NOT EXISTS`` for ``table`` (a validated identifier)."""
        return f"CREATE TABLE IF NOT EXISTS `{table}` (\n{self.definition}\n) {_TABLE_OPTIONS}"

    def insert_sql(self, table: str) -> str:
        """The parameterised insert that skips rows whose task_id is already stored.

        ``ON DUPLICATE KEY UPDATE task_id = task_id`` rather than ``INSERT IGNORE``: IGNORE also
        turns every other error (a value too long, a bad date) into a warning and stores a
        mangled row, while this form only ever skips the duplicate.  The statement matches
        mysqlclient's ``RE_INSERT_VALUES``, so ``executemany`` sends multi-row INSERTs.
        """
        columns = ", ".join(self.columns)
        marks = ", ".join(["%s"] * len(self.columns))
        insert = f"INSERT INTO `{table}` ({columns}) VALUES ({marks})"  # noqa: S608  (placeholders only)
        return f"{insert} ON DUPLICATE KEY UPDATE task_id = task_id"

    def load_sql(self, table: str, path: str) -> str:
        """``LOAD DATA LOCAL INFILE`` of ``path`` (text as :func:`~cyclone_mysql_sink.tsv.encode`
        writes it, a path of letters, digits and ``/``) into ``table``.

        IGNORE is what LOCAL does anyway (the server cannot stop the client's stream midway): a
        row whose task_id is stored already is skipped with a warning, and so is, as INSERT
        IGNORE would, any value the server rejects or alters; the sink checks the warnings.
        """
        columns = ", ".join(self.columns)
        return f"LOAD DATA LOCAL INFILE '{path}' IGNORE INTO TABLE `{table}` {tsv.STATEMENT_FORMAT} ({columns})"

    def rows(self, results: Iterable[Result]) -> list[tuple[Any, ...]]:
        """The rows of the results that belong in this table."""
        return [row for result in results if (row := self.to_row(result)) is not None]


# -- value helpers -------------------------------------------------------------------------


def _text(value: str | None, limit: int) -> str | None:
    """``value`` cut to ``limit`` characters and made encodable as UTF-8.

    Lone surrogates (an undecodable file name in an error text) cannot be sent to the server;
    they become U+FFFD.
    """
    if value is None:
        return None
    if len(value) > limit:
        value = value[:limit]
    if not value.isascii():  # the cheap test first: rows are built on the sink's hot path
        value = _SURROGATE.sub("\ufffd", value)
    return value


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def _clamp(value: float | None, low: int, high: int, missing: int) -> int:
    if value is None or not math.isfinite(value):
        return missing
    whole = round(value)
    return low if whole < low else high if whole > high else whole


# "YYYY-MM-DD hh:mm:ss." of the seconds since 1970 met lately: the results of a batch share a few.
_SECONDS: dict[int, str] = {}
_NAIVE_EPOCH = datetime(1970, 1, 1)  # naive: DATETIME columns hold UTC without a zone


def _utc(epoch: float | None) -> str | None:
    """Epoch seconds -> ``YYYY-MM-DD hh:mm:ss.ffffff`` in UTC (the session time zone); 0 or
    None -> None, and so is a time outside the years 1-9999.  A string, not a datetime:
    mysqlclient quotes a string several times faster.  The text is that of
    ``datetime.fromtimestamp(epoch, UTC)`` (microseconds rounded half to even, as it rounds
    them) without the offset, made in a third of the time."""
    if not epoch or not math.isfinite(epoch):
        return None
    fraction, whole = math.modf(epoch)
    micro = round(fraction * 1e6)
    seconds = int(whole)
    if micro >= 1_000_000:
        seconds += 1
        micro -= 1_000_000
    elif micro < 0:
        seconds -= 1
        micro += 1_000_000
    prefix = _SECONDS.get(seconds)
    if prefix is None:
        try:
            prefix = (_NAIVE_EPOCH + timedelta(seconds=seconds)).isoformat(" ") + "."
        except OverflowError:
            return None
        if len(_SECONDS) >= 4096:
            _SECONDS.clear()
        _SECONDS[seconds] = prefix
    return prefix + str(micro).zfill(6)


def _json_number(value: float) -> float | str:
    # JSON has no NaN or infinity; keep them as the strings Prometheus uses.
    if math.isfinite(value):
        return value
    return "NaN" if math.isnan(value) else ("+Inf" if value > 0 else "-Inf")


def _json_safe(data: Any) -> Any:
    if isinstance(data, float):
        return _json_number(data)
    if isinstance(data, Mapping):
        return {str(k): _json_safe(v) for k, v in data.items()}
    if isinstance(data, list | tuple):
        return [_json_safe(v) for v in data]
    return data


# One encoder for every row: json.dumps with options builds a new one at each call.
_encode_json = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False, default=str).encode


def _json(data: Any) -> str:
    try:
        text = _encode_json(data)
    except ValueError:  # NaN or infinity somewhere in a payload
        text = _encode_json(_json_safe(data))
    return _text(text, len(text)) or ""


def _metrics_json(metrics: list[Metric]) -> str:
    """The metrics as a JSON array: through orjson (several times faster than :mod:`json` on
    the sink's hot path), or :func:`_json` for what orjson will not take (a lone surrogate in a
    label, an integer beyond 64 bits) or would write differently (a non-finite timestamp)."""
    items = [_metric_json(m) for m in metrics]
    try:
        if all(m.timestamp is None or math.isfinite(m.timestamp) for m in metrics):
            return orjson.dumps(items).decode()
    except TypeError:  # orjson.JSONEncodeError
        pass
    return _json(items)


def _metric_json(metric: Metric) -> dict[str, Any]:
    return {
        "name": metric.name,
        "value": _json_number(metric.value),
        "unit": metric.unit,
        "labels": metric.labels,
        "timestamp": metric.timestamp,
        "kind": str(metric.kind),
    }


def _task_id(result: Result) -> str:
    if len(result.task_id) > TASK_ID_CHARS:
        raise ValueError(f"task id {result.task_id[:40]!r}... is longer than {TASK_ID_CHARS} characters")
    return _text(result.task_id, TASK_ID_CHARS) or ""


# -- the generic results table -------------------------------------------------------------

_RESULTS_DEFINITION = f"""\
  id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
  {_TASK_ID_COLUMN},
  task_type VARCHAR({_NAME_CHARS}) NOT NULL,
  task_key VARCHAR({_NAME_CHARS}) NULL,
  status VARCHAR(16) NOT NULL,
  attempt INT UNSIGNED NOT NULL,
  started_at DATETIME(6) NULL COMMENT 'UTC',
  duration DOUBLE NULL COMMENT 'seconds',
  error TEXT NULL,
  controller VARCHAR({_NAME_CHARS}) NULL,
  metrics JSON NOT NULL,
  payload JSON NULL,
  history JSON NULL,
  inserted_at DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6) COMMENT 'UTC',
  PRIMARY KEY (id),
  UNIQUE KEY task_id (task_id),
  KEY started_at (started_at)"""


def _results_row(result: Result) -> tuple[Any, ...]:
    history = [
        {
            "attempt": a.attempt,
            "status": str(a.status),
            "error": a.error,
            "controller": a.controller,
            "finished_at": a.finished_at,
        }
        for a in result.history
    ]
    return (
        _task_id(result),
        _text(result.task_type, _NAME_CHARS),
        _text(result.key, _NAME_CHARS),
        str(result.status),
        max(0, result.attempt),
        _utc(result.started_at),
        _finite(result.duration),
        _text(result.error, _TEXT_CHARS),
        _text(result.controller, _NAME_CHARS),
        _metrics_json(result.metrics),
        None if result.payload is None else _json(result.payload),
        _json(history) if history else None,
    )


RESULTS = Layout(
    name="results",
    columns=(
        "task_id",
        "task_type",
        "task_key",
        "status",
        "attempt",
        "started_at",
        "duration",
        "error",
        "controller",
        "metrics",
        "payload",
        "history",
    ),
    definition=_RESULTS_DEFINITION,
    to_row=_results_row,
)


# -- the Cyclone 2.x OST performance table -------------------------------------------------

# 2.x columns first, unchanged in name and meaning (throughput -1 and whole seconds); then
# what 2.x lacked: sub-second durations, file system, status and error, and the task id that
# makes re-delivery harmless.  Timestamps are DATETIME(6) in UTC with no zero defaults.
_OST_PERF_DEFINITION = f"""\
  id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
  read_timestamp DATETIME(6) NULL COMMENT 'UTC',
  write_timestamp DATETIME(6) NULL COMMENT 'UTC',
  ost VARCHAR(16) NULL,
  size BIGINT UNSIGNED NOT NULL DEFAULT 0 COMMENT 'bytes',
  read_throughput BIGINT NOT NULL DEFAULT -1 COMMENT 'bytes/s, -1: not measured',
  write_throughput BIGINT NOT NULL DEFAULT -1 COMMENT 'bytes/s, -1: not measured',
  read_duration INT NOT NULL DEFAULT -1 COMMENT 'whole seconds, -1: not measured',
  write_duration INT NOT NULL DEFAULT -1 COMMENT 'whole seconds, -1: not measured',
  read_seconds DOUBLE NULL,
  write_seconds DOUBLE NULL,
  fs VARCHAR(64) NULL,
  status VARCHAR(16) NOT NULL DEFAULT 'ok',
  error TEXT NULL,
  {_TASK_ID_COLUMN},
  PRIMARY KEY (id),
  UNIQUE KEY task_id (task_id),
  KEY ost_write_timestamp (ost, write_timestamp)"""


def _ost_name(value: object) -> str | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return f"OST{value:04x}"  # Lustre names OSTs by hex index: 10 is OST000a
    if isinstance(value, str) and value:
        return _text(value, 16)
    return None


@functools.lru_cache(maxsize=4096)
def _ost_in(text: str) -> str | None:
    """The ``OST…`` name in ``text`` (``"<fs>-OST000a"``), if any; the names of a run repeat."""
    match = _OST_NAME.search(text)
    return match.group() if match else None


def _ost_of(fields: Mapping[str, Any]) -> str | None:
    """The OST named by labels or a payload: the ``OST…`` part of ``target`` (``"<fs>-OST000a"``,
    as the probe and the Lustre exporters label it), else ``ost`` (a name, or an index)."""
    target = fields.get("target")
    if isinstance(target, str) and (ost := _ost_in(target)):
        return ost
    return _ost_name(fields.get("ost"))


def _ost_perf_row(result: Result) -> tuple[Any, ...] | None:
    found = {m.name: m for m in result.metrics if m.name in OST_METRICS}
    if not found and result.task_type != OST_IO_TASK:
        return None  # another task type's result: not an OST probe
    # Where the OST comes from: the metrics' labels; for a probe that measured nothing (an
    # inactive OST) the payload's "target"/"ost"/"fs", else an OST name in the task key.
    labels: Mapping[str, Any] = next(iter(found.values())).labels if found else (result.payload or {})
    ost = _ost_of(labels)
    if ost is None and result.key:
        ost = _ost_in(result.key)
    fs = labels.get("fs")
    # Each timestamp is the rate's, else the duration's, else the end of the task.
    read_at = write_at = result.started_at + result.duration if result.started_at else None
    read_rate, read_time = found.get(_READ_RATE), found.get(_READ_SECONDS)
    write_rate, write_time = found.get(_WRITE_RATE), found.get(_WRITE_SECONDS)
    size = found.get(_PROBE_BYTES)
    read_seconds = write_seconds = None
    if read_time is not None:
        read_seconds = read_time.value
        read_at = read_at if read_time.timestamp is None else read_time.timestamp
    if write_time is not None:
        write_seconds = write_time.value
        write_at = write_at if write_time.timestamp is None else write_time.timestamp
    if read_rate is not None and read_rate.timestamp is not None:
        read_at = read_rate.timestamp
    if write_rate is not None and write_rate.timestamp is not None:
        write_at = write_rate.timestamp
    return (
        _utc(read_at),
        _utc(write_at),
        ost,
        0 if size is None else _clamp(size.value, 0, _BIGINT_MAX, 0),
        -1 if read_rate is None else _clamp(read_rate.value, -1, _BIGINT_MAX, -1),
        -1 if write_rate is None else _clamp(write_rate.value, -1, _BIGINT_MAX, -1),
        _clamp(read_seconds, -1, _INT_MAX, -1),
        _clamp(write_seconds, -1, _INT_MAX, -1),
        _finite(read_seconds),
        _finite(write_seconds),
        _text(fs, 64) if isinstance(fs, str) else None,
        str(result.status),
        _text(result.error, _TEXT_CHARS),
        _task_id(result),
    )


OST_PERF = Layout(
    name="ost_perf",
    columns=(
        "read_timestamp",
        "write_timestamp",
        "ost",
        "size",
        "read_throughput",
        "write_throughput",
        "read_duration",
        "write_duration",
        "read_seconds",
        "write_seconds",
        "fs",
        "status",
        "error",
        "task_id",
    ),
    definition=_OST_PERF_DEFINITION,
    to_row=_ost_perf_row,
)

#: Layouts by name.
LAYOUTS: dict[str, Layout] = {layout.name: layout for layout in (RESULTS, OST_PERF)}
