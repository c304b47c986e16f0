"""The wire protocol between master, controllers and status clients.

Transport: ZeroMQ.  The master binds a ROUTER socket; controllers and ``cyclone status``
connect DEALER sockets with a unique routing id.  Every message is one frame holding a msgpack
map ``{"v": PROTOCOL_VERSION, "t": <tag>, ...fields}``: plain data only, no pickle, no module
paths.  Task types travel as registered names and their fields as plain data.

This module is sans-I/O: :func:`encode` and :func:`decode` turn messages into bytes and back,
and every malformed, oversized, foreign or other-version frame becomes a :class:`ProtocolError`
with one line saying what is wrong.

**One registry.**  Each message is declared once, with :func:`message`: its tag, who sends it
(:class:`Sender`), whether it is hot (sent per batch of tasks, encoded as positional rows) and
its fields, each made by a wire-field constructor (:func:`text`, :func:`whole`, :func:`number`,
:func:`flag`, :func:`names`, :func:`rows`, :func:`plain_map`) that says its exact type and its
limits.  From that one declaration come the union, the tag table, the strict decoder and, with
:func:`handler_table`, each side's handlers: a side that leaves a message it receives without a
handler fails when its module is imported.

**Strict.**  The wire never coerces: ``pid="42"`` is an error, so are ``True`` for a number, a
NaN or infinite number, a negative credit, an id with a newline or over its length, a list longer
than its bound.  Config files keep their lenient structuring in :mod:`cyclone_core.convert`.

Conversation (C = controller, M = master, S = status client)::

    C: Hello(id, host, workers, credit, task_types)    M: Welcome(run_id, ...) | Refuse(reason)
    M: Dispatch([TaskEnvelope...])                     at most the credit the controller granted
    C: Results([Result...], credit=n)                  results kept until acknowledged; n slots freed
    M: Ack([task_id...])                               journaled: the controller may forget them
    C: Heartbeat(running=[task_id...])   M: Ping()     both ways, every heartbeat interval
    C: Handback([task_id...], reason)                  a draining controller returns unstarted tasks
    C: Goodbye(reason)                                 clean exit: its leases end now
    M: Rehello(reason)                                 "I do not know you": send Hello again
    M: Shutdown(reason)                                drain and exit
    S: StatusRequest()                M: StatusReply(snapshot)
    C: Enroll(secret)                 M: Enrolled(name, ids) | Refuse(reason)   a new key, once
    S: Submit([task...], done)        M: Submitted(count) | Refuse(reason)      an attached client
    S: Fetch(after, limit)            M: Fetched([Result...], last, finished, missed)

Rules both sides keep:

- The master sends a Dispatch only within the credit the controller granted (Hello's
  ``credit`` to start with, then each Results' ``credit``); a draining controller (Heartbeat
  ``draining=True``) gets no more tasks, nor does anyone once the master sent Shutdown.  A
  Handback gives no credit back.
- A Hello with a known controller id from the same host and pid is a reconnect: the master
  keeps its leases and takes the Hello's ``credit`` as the whole credit from then on.  From
  another process it is refused while the first one is alive, and replaces it once the first
  has been silent for the controller timeout.  One connection speaks for one controller id:
  a Hello for another id on a connection already registered is refused.
- A Heartbeat's ``running`` lists every task the controller holds, queued or running.  A task
  leased to a controller but missing from two heartbeats in a row (more than one heartbeat
  interval apart) is taken back and re-queued.
- A controller sends each terminal result until it is acknowledged, also again after a
  reconnect; the master acknowledges duplicates and results it no longer knows, and only the
  first terminal result of a task counts.  A controller reports ``ok``, ``failed``,
  ``timeout`` or ``crashed``; ``quarantined`` and attempt histories are the master's.
- Results, Heartbeat or Handback from a peer the master does not know are answered with
  Rehello (at most once a second); the Results are still recorded and acknowledged.  A
  Goodbye from it is ignored.  Tasks a controller still holds when it says Goodbye count as
  lost.
- A result row that is malformed but names its task arrives as a ``failed`` result saying
  what is wrong, so one task returning odd data cannot make a whole batch unreadable.
- Status, Submit and Fetch need an admin key.  A Submit is taken whole or refused whole.  A
  Fetch is answered from the master's memory of its latest results, numbered as the journal
  numbers them: those after ``after``, at most ``limit``; ``last`` is the number of the last
  one sent (the next Fetch's ``after``), ``missed`` how many after ``after`` are forgotten
  already, ``finished`` that no result comes after ``last`` any more.
- A Hello with a foreign protocol version, a controller id in use by another live process,
  or no task type the master knows is answered with Refuse; so is garbage, at most once in a
  while per peer.  For an id in use, Refuse's ``retry_after`` says when its holder will have
  been silent for the controller timeout: the new process tries again then (a controller
  restarted at once after a kill), and gives up after a few such refusals in a row.

Encoding: the hot messages carry their items as positional rows rather than maps, to keep the
per-task cost small: a Dispatch task is ``[id, type, args, attempt, timeout, key]`` and a
result is ``[task_id, task_type, status, key, attempt, started_at, duration, error, metrics,
payload, controller, history]`` with each metric ``[name, value, unit, labels, timestamp,
kind]`` and each history entry ``[attempt, status, error, controller, finished_at]``.
:func:`result_to_row` and :func:`result_from_row` are the same encoding for the journal, and
:func:`encode_dispatch` builds a Dispatch frame straight from the master's task records, and
:func:`encode_results` a Results frame from result rows.
"""

from __future__ import annotations

import enum
import math
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any, ClassVar, Protocol, TypeVar

import attrs
import msgpack

from cyclone_core.model import Attempt, Metric, MetricKind, Result, Status

__all__ = (
    "MAX_FRAME_BYTES",
    "MAX_ITEMS",
    "PROTOCOL_VERSION",
    "Ack",
    "Dispatch",
    "Enroll",
    "Enrolled",
    "EnvelopeLike",
    "Fetch",
    "Fetched",
    "Goodbye",
    "Handback",
    "Heartbeat",
    "Hello",
    "Message",
    "MessageSpec",
    "Ping",
    "ProtocolError",
    "Refuse",
    "Rehello",
    "Results",
    "Sender",
    "Shutdown",
    "StatusReply",
    "StatusRequest",
    "Submit",
    "Submitted",
    "TaskEnvelope",
    "Welcome",
    "decode",
    "encode",
    "encode_dispatch",
    "encode_results",
    "envelope_from_row",
    "envelope_to_row",
    "handler_table",
    "metric_rows",
    "received_by",
    "result_from_row",
    "result_to_row",
    "specs",
)

#: Raised whenever a message's meaning changes incompatibly.
PROTOCOL_VERSION = 1
#: Frames larger than this are refused before they are parsed.
MAX_FRAME_BYTES = 64 * 1024 * 1024
#: Items in one list of a message (tasks, results, task ids) at most.
MAX_ITEMS = 1 << 20
#: Largest whole number the wire carries where no smaller bound applies (what SQLite stores).
MAX_INT = (1 << 63) - 1
#: Nesting of task arguments and result payloads at most.
MAX_DEPTH = 32

#: Controller ids, host names: what a routing id, a log line and a file name can all carry.
ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@+-]*")
#: Registered names of task types.
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
#: Task ids: ``<run id>-<sequence>``.
TASK_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]*")


class ProtocolError(Exception):
    """A frame that is not a valid message of this protocol version."""


class Sender(enum.Enum):
    """Who sends a message (and so, who must handle it)."""

    CONTROLLER = "controller"
    MASTER = "master"
    CLIENT = "status client"


def _bad(field: str, value: object, expected: str) -> ValueError:
    return ValueError(f"{field}: expected {expected}, got {value!r:.60}")


# -- wire fields ---------------------------------------------------------------------------------
# Each constructor returns an attrs field whose metadata holds its check: a function from the
# received value to the value to keep, raising ValueError("expected ..., got ...") otherwise.

Check = Callable[[Any], Any]
_CHECK = "wire_check"
_ENCODE = "wire_encode"


def _field(check: Check, default: Any = attrs.NOTHING, *, encode: Callable[[Any], Any] | None = None) -> Any:
    metadata: dict[str, Any] = {_CHECK: check}
    if encode is not None:
        metadata[_ENCODE] = encode
    if callable(default) and default in (list, dict):
        return attrs.field(factory=default, metadata=metadata)
    return attrs.field(default=default, metadata=metadata)


def _text_check(max_len: int, pattern: re.Pattern[str] | None, what: str) -> Check:
    def check(value: Any) -> str:
        if type(value) is not str:
            raise ValueError(f"expected {what}, got {value!r:.60}")
        if len(value) > max_len:
            raise ValueError(f"expected {what} of at most {max_len} characters, got {len(value)}")
        if pattern is not None:
            if not pattern.fullmatch(value):
                raise ValueError(f"expected {what} matching {pattern.pattern}, got {value!r:.60}")
        elif not value.isprintable():
            raise ValueError(f"expected printable {what}, got {value!r:.60}")
        return value

    return check


def text(
    *, max_len: int = 1024, pattern: re.Pattern[str] | None = None, default: Any = attrs.NOTHING, what: str = "a string"
) -> Any:
    """A string of at most ``max_len`` characters, printable (no newline: it may be logged), or
    matching ``pattern`` in full."""
    return _field(_text_check(max_len, pattern, what), default)


def whole(*, low: int = 0, high: int = MAX_INT, default: Any = attrs.NOTHING) -> Any:
    """A whole number (not a boolean) from ``low`` to ``high``."""

    def check(value: Any) -> int:
        if type(value) is not int or not low <= value <= high:
            raise ValueError(f"expected a whole number from {low} to {high}, got {value!r:.60}")
        return value

    return _field(check, default)


def _finite(value: Any, low: float, high: float) -> bool:
    return (type(value) is float or type(value) is int) and low <= value <= high


def number(*, low: float, high: float, default: Any = attrs.NOTHING) -> Any:
    """A finite number (int or float, not a boolean) from ``low`` to ``high``."""

    def check(value: Any) -> float:
        if not _finite(value, low, high):  # NaN fails every comparison
            raise ValueError(f"expected a number from {low:g} to {high:g}, got {value!r:.60}")
        return value

    return _field(check, default)


def flag(*, default: Any = attrs.NOTHING) -> Any:
    """A boolean."""

    def check(value: Any) -> bool:
        if type(value) is not bool:
            raise ValueError(f"expected true or false, got {value!r:.60}")
        return value

    return _field(check, default)


def _list_check(item: Check, max_items: int, what: str) -> Check:
    def check(value: Any) -> list[Any]:
        if type(value) is not list:
            raise ValueError(f"expected a list of {what}, got {value!r:.60}")
        if len(value) > max_items:
            raise ValueError(f"expected at most {max_items} {what}, got {len(value)}")
        for index, element in enumerate(value):
            try:
                item(element)
            except ValueError as exc:
                raise ValueError(f"[{index}]: {exc}") from None
        return value

    return check


def names(*, pattern: re.Pattern[str], max_len: int = 128, max_items: int = MAX_ITEMS, what: str = "names") -> Any:
    """A list of at most ``max_items`` strings, each matching ``pattern`` within ``max_len``."""
    return _field(_list_check(_text_check(max_len, pattern, "a name"), max_items, what), list)


def rows(read: Callable[[Any], Any], write: Callable[[Any], Any], *, max_items: int = MAX_ITEMS) -> Any:
    """A hot list: each item travels as a positional row, read back (and checked) by ``read``."""

    def check(value: Any) -> list[Any]:
        if type(value) is not list:
            raise ValueError(f"expected a list, got {value!r:.60}")
        if len(value) > max_items:
            raise ValueError(f"expected at most {max_items} items, got {len(value)}")
        items = []
        for index, row in enumerate(value):
            try:
                items.append(read(row))
            except (ValueError, TypeError, KeyError) as exc:
                raise ValueError(f"[{index}]: {exc}") from None
        return items

    return _field(check, encode=lambda items: [write(item) for item in items])


def plain_map(*, default: Any = attrs.NOTHING) -> Any:
    """A map of plain data (bounded by the frame size and :data:`MAX_DEPTH`)."""

    def check(value: Any) -> dict[str, Any]:
        if type(value) is not dict:
            raise ValueError(f"expected a map, got {value!r:.60}")
        check_plain(value)
        return value

    return _field(check, default)


def check_plain(value: Any, depth: int = 0, *, finite: bool = True) -> None:
    """Plain data a sink can store: maps with string keys, lists, strings, booleans, None,
    numbers (finite ones only, unless ``finite`` is false), whole numbers within 64 bits,
    nested at most :data:`MAX_DEPTH` deep."""
    kind = type(value)
    if kind is str or kind is bool or value is None:
        return
    if kind is int:
        if not -MAX_INT - 1 <= value <= MAX_INT:
            raise ValueError(f"expected a whole number within 64 bits, got {value!r:.60}")
        return
    if kind is float:
        if finite and not math.isfinite(value):
            raise ValueError(f"expected a finite number, got {value!r}")
        return
    if depth >= MAX_DEPTH:
        raise ValueError(f"expected data nested at most {MAX_DEPTH} deep")
    if kind is dict:
        for key, item in value.items():
            if type(key) is not str:
                raise ValueError(f"expected string keys, got {key!r:.60}")
            check_plain(item, depth + 1, finite=finite)
    elif kind is list:
        for item in value:
            check_plain(item, depth + 1, finite=finite)
    else:
        raise ValueError(f"expected plain data, got {kind.__name__}")


# -- the registry --------------------------------------------------------------------------------


@attrs.frozen
class MessageSpec:
    """One declared message: what :func:`decode`, :func:`encode` and the handler tables use."""

    cls: type[Any]
    tag: str
    sender: Sender
    hot: bool
    #: (field name, check, default or NOTHING, encoder or None), in declaration order.
    fields: tuple[tuple[str, Check, Any, Callable[[Any], Any] | None], ...]


_SPECS: dict[str, MessageSpec] = {}
_SPEC_OF: dict[type[Any], MessageSpec] = {}

M = TypeVar("M")


def message(tag: str, *, sender: Sender, hot: bool = False) -> Callable[[type[M]], type[M]]:
    """Declare a frozen attrs class as the message ``tag`` sent by ``sender``."""

    def register(cls: type[M]) -> type[M]:
        if tag in _SPECS:
            raise TypeError(f"message tag {tag!r} is declared twice")
        fields = []
        for field in attrs.fields(cls):  # type: ignore[arg-type]  # an attrs class, by contract
            check = field.metadata.get(_CHECK)
            if check is None:
                raise TypeError(f"{cls.__name__}.{field.name} is not declared with a wire field")
            default = field.default
            if isinstance(default, attrs.Factory):  # type: ignore[arg-type]
                default = default.factory()  # lists and maps only
            fields.append((field.name, check, default, field.metadata.get(_ENCODE)))
        cls.tag = tag  # type: ignore[attr-defined]
        spec = MessageSpec(cls, tag, sender, hot, tuple(fields))
        _SPECS[tag] = spec
        _SPEC_OF[cls] = spec
        return cls

    return register


def specs() -> list[MessageSpec]:
    """Every declared message, in declaration order."""
    return list(_SPECS.values())


def received_by(*senders: Sender) -> frozenset[type[Any]]:
    """The message classes a side receives: those sent by any of ``senders``."""
    return frozenset(spec.cls for spec in _SPECS.values() if spec.sender in senders)


H = TypeVar("H")


def handler_table(side: str, senders: Iterable[Sender], handlers: Mapping[type[Any], H]) -> dict[type[Any], H]:
    """``handlers`` checked against the registry: exactly one for every message that
    ``senders`` send.  Called at import by each side, so an unhandled message type (or a
    handler for one the side never receives) fails at once, not in production."""
    expected = received_by(*senders)
    missing = sorted(cls.__name__ for cls in expected - handlers.keys())
    extra = sorted(cls.__name__ for cls in handlers.keys() - expected)
    if missing or extra:
        raise TypeError(f"{side}'s message handlers: missing {missing or 'none'}, unexpected {extra or 'none'}")
    return dict(handlers)


# -- compact rows for the hot messages ---------------------------------------------------------

_STATUS = {status.value: status for status in Status}
#: What a controller may report; ``quarantined`` is the master's verdict.
_WIRE_STATUS = frozenset(s.value for s in (Status.OK, Status.FAILED, Status.TIMEOUT, Status.CRASHED))
_KIND = {kind.value: kind for kind in MetricKind}
#: Attempts of one task at most.
MAX_ATTEMPT = (1 << 31) - 1
#: Seconds a timeout or a duration may be at most (about 30 years: "no limit" is ``None``).
MAX_SECONDS = 1e9
#: Characters of a result's error text at most.
MAX_ERROR = 1 << 20
#: Metrics per result, labels per metric at most.
MAX_METRICS = 10_000
MAX_LABELS = 64
_MAX_SHORT = 1024  # keys, units, label names and values
_fullmatch_task_id = TASK_ID_PATTERN.fullmatch
_fullmatch_name = NAME_PATTERN.fullmatch
_NUMBER = (int, float)
_MAX_EPOCH = MAX_SECONDS * 10
#: Task type names that passed their check (a run has a handful): checked once, not per task.
_names_seen: set[str] = set()


def _remember_name(name: str) -> None:
    if len(_names_seen) >= 4096:
        _names_seen.clear()  # a peer inventing names: the memory stays bounded
    _names_seen.add(name)


@attrs.frozen
class TaskEnvelope:
    """A task as dispatched: its id, registered type name, plain-data fields and limits."""

    id: str
    type: str
    args: dict[str, Any] = attrs.field(factory=dict)
    attempt: int = 1
    timeout: float | None = None
    key: str | None = None


def _is_number(value: object) -> bool:
    return type(value) is float or type(value) is int


def _task_id(value: Any, field: str = "task_id") -> str:
    if type(value) is not str or len(value) > 128 or not _fullmatch_task_id(value):
        raise _bad(field, value, "a task id")
    return value


def _type_name(value: Any, field: str) -> str:
    if type(value) is not str or len(value) > 64 or not _fullmatch_name(value):
        raise _bad(field, value, "a task type name")
    return value


def _short(value: Any, field: str) -> None:
    if value is not None and (type(value) is not str or len(value) > _MAX_SHORT):
        raise _bad(field, value, f"a string of at most {_MAX_SHORT} characters")


def envelope_to_row(task: TaskEnvelope) -> list[Any]:
    """The wire row of a dispatched task."""
    return [task.id, task.type, task.args, task.attempt, task.timeout, task.key]


def envelope_from_row(row: Any) -> TaskEnvelope:
    """The task in a wire row; ``ValueError`` naming the field if it is malformed."""
    if type(row) is not list or len(row) != 6:
        raise ValueError("a task must be a list of 6 fields")
    task_id, type_, args, attempt, timeout, key = row
    _task_id(task_id, "id")
    if type_ not in _names_seen:
        _remember_name(_type_name(type_, "type"))
    if type(args) is not dict:
        raise _bad("args", args, "a map")
    try:
        check_plain(args, finite=False)  # an argument may say "no limit" with infinity
    except ValueError as exc:
        raise ValueError(f"args: {exc}") from None
    if type(attempt) is not int or not 1 <= attempt <= MAX_ATTEMPT:
        raise _bad("attempt", attempt, f"a whole number from 1 to {MAX_ATTEMPT}")
    if timeout is not None and not (_is_number(timeout) and 0 < timeout <= MAX_SECONDS):
        raise _bad("timeout", timeout, f"a number of seconds above 0 and at most {MAX_SECONDS:g}")
    _short(key, "key")
    return TaskEnvelope(task_id, type_, args, attempt, timeout, key)


def _metric_from_row(row: Any) -> Metric:
    if type(row) is not list or len(row) != 6:
        raise ValueError("metrics: a metric must be a list of 6 fields")
    name, value, unit, labels, timestamp, kind = row
    if type(name) is not str or len(name) > _MAX_SHORT or type(unit) is not str or len(unit) > _MAX_SHORT:
        raise ValueError(f"metrics: malformed metric {row!r:.60}")
    if not _finite(value, -math.inf, math.inf) or (type(value) is int and not -MAX_INT - 1 <= value <= MAX_INT):
        raise _bad("metrics.value", value, "a finite number within 64 bits")
    if type(labels) is not dict or len(labels) > MAX_LABELS:
        raise _bad("metrics.labels", labels, f"a map of at most {MAX_LABELS} strings")
    for label, text_ in labels.items():
        if type(text_) is not str or len(label) > _MAX_SHORT or len(text_) > _MAX_SHORT:
            raise _bad("metrics.labels", labels, "a map of strings")
    if timestamp is not None and not _finite(timestamp, -_MAX_EPOCH, _MAX_EPOCH):
        raise _bad("metrics.timestamp", timestamp, "a time in seconds since the epoch")
    if kind not in _KIND:
        raise _bad("metrics.kind", kind, "one of " + ", ".join(_KIND))
    return Metric(name, value, unit, labels, timestamp, _KIND[kind])


def _attempt_from_row(row: Any) -> Attempt:
    if type(row) is not list or len(row) != 5:
        raise ValueError("history: an attempt must be a list of 5 fields")
    attempt, status, error, controller, finished_at = row
    if type(attempt) is not int or not _is_number(finished_at) or status not in _STATUS:
        raise ValueError(f"history: malformed attempt {row!r:.60}")
    if (error is not None and type(error) is not str) or (controller is not None and type(controller) is not str):
        raise ValueError(f"history: malformed attempt {row!r:.60}")
    return Attempt(attempt, _STATUS[status], error, controller, finished_at)


def metric_rows(metrics: Iterable[Metric]) -> list[list[Any]]:
    """The compact rows of ``metrics``, as a result row holds them."""
    return [[m.name, m.value, m.unit, m.labels, m.timestamp, m.kind.value] for m in metrics]


_new_result = object.__new__
# The slot setters of Result's fields, in row order (a new field breaks this unpacking at import).
(
    _set_task_id,
    _set_task_type,
    _set_status,
    _set_key,
    _set_attempt,
    _set_started_at,
    _set_duration,
    _set_error,
    _set_metrics,
    _set_payload,
    _set_controller,
    _set_history,
) = (Result.__dict__[field.name].__set__ for field in attrs.fields(Result))


def result_to_row(result: Result) -> list[Any]:
    """The compact row of a result (wire and journal)."""
    metrics = result.metrics
    history = result.history
    return [
        result.task_id,
        result.task_type,
        result.status.value,
        result.key,
        result.attempt,
        result.started_at,
        result.duration,
        result.error,
        metric_rows(metrics) if metrics else [],
        result.payload,
        result.controller,
        [[a.attempt, a.status.value, a.error, a.controller, a.finished_at] for a in history] if history else [],
    ]


def result_from_row(row: Any) -> Result:  # noqa: PLR0912 (one check per field, written out for speed)
    """The result in a compact row; ``ValueError`` naming the field if it is malformed.

    Every field is checked against what a sink can store: whole numbers within their range,
    finite numbers, bounded text, plain payloads nested at most :data:`MAX_DEPTH` deep.
    """
    if type(row) is not list or len(row) != 12:
        raise ValueError("a result must be a list of 12 fields")
    task_id, task_type, status, key, attempt, started_at, duration, error, metrics, payload, controller, history = row
    # The checks are written out (not calls to helpers): this runs for every result received.
    if type(task_id) is not str or len(task_id) > 128 or not _fullmatch_task_id(task_id):
        raise _bad("task_id", task_id, "a task id")
    if task_type not in _names_seen:
        _remember_name(_type_name(task_type, "task_type"))
    if status not in _STATUS:
        raise _bad("status", status, "one of " + ", ".join(_STATUS))
    if key is not None and (type(key) is not str or len(key) > _MAX_SHORT):
        raise _bad("key", key, f"a string of at most {_MAX_SHORT} characters")
    if type(attempt) is not int or not 0 <= attempt <= MAX_ATTEMPT:
        raise _bad("attempt", attempt, f"a whole number from 0 to {MAX_ATTEMPT}")
    if type(started_at) not in _NUMBER or not -_MAX_EPOCH <= started_at <= _MAX_EPOCH:
        raise _bad("started_at", started_at, "a time in seconds since the epoch")
    if type(duration) not in _NUMBER or not 0.0 <= duration <= MAX_SECONDS:
        raise _bad("duration", duration, f"a number of seconds from 0 to {MAX_SECONDS:g}")
    if error is not None and (type(error) is not str or len(error) > MAX_ERROR):
        raise _bad("error", error, f"a string of at most {MAX_ERROR} characters")
    if type(metrics) is not list or len(metrics) > MAX_METRICS:
        raise _bad("metrics", metrics, f"a list of at most {MAX_METRICS} metrics")
    if payload is not None:
        if type(payload) is not dict:
            raise _bad("payload", payload, "a map")
        try:
            check_plain(payload)
        except ValueError as exc:
            raise ValueError(f"payload: {exc}") from None
    if controller is not None and (type(controller) is not str or len(controller) > _MAX_SHORT):
        raise _bad("controller", controller, f"a string of at most {_MAX_SHORT} characters")
    if type(history) is not list or len(history) > MAX_ITEMS:
        raise _bad("history", history, "a list")
    # The fields are checked: fill the frozen Result's slots directly rather than through its
    # __init__, which sets each one by name (a third of the cost of decoding a result).
    result = _new_result(Result)
    _set_task_id(result, task_id)
    _set_task_type(result, task_type)
    _set_status(result, _STATUS[status])
    _set_key(result, key)
    _set_attempt(result, attempt)
    _set_started_at(result, started_at)
    _set_duration(result, duration)
    _set_error(result, error)
    _set_metrics(result, [_metric_from_row(m) for m in metrics] if metrics else [])
    _set_payload(result, payload)
    _set_controller(result, controller)
    _set_history(result, [_attempt_from_row(a) for a in history] if history else [])
    return result


def _result_from_wire(row: Any) -> Result:
    """A controller's result row: a :func:`result_from_row` that reports only how one attempt
    went (no verdict of the master's, no attempt history, an attempt number of at least 1).

    A malformed row that still names its task becomes a ``failed`` result saying what is
    wrong: one task returning an odd value must not make its controller's whole batch
    unreadable (the batch would be re-sent forever)."""
    try:
        if type(row) is list and len(row) == 12:
            if row[2] not in _WIRE_STATUS:
                raise _bad("status", row[2], "one of " + ", ".join(sorted(_WIRE_STATUS)))
            if row[11] != []:
                raise _bad("history", row[11], "an empty list (attempt histories are the master's)")
            if row[4] == 0:
                raise _bad("attempt", 0, f"a whole number from 1 to {MAX_ATTEMPT}")
        return result_from_row(row)
    except (ValueError, TypeError, KeyError) as exc:
        if type(row) is not list or len(row) != 12:
            raise
        task_id = _task_id(row[0])  # a row that cannot name its task is the batch's problem
        attempt = row[4] if type(row[4]) is int and 1 <= row[4] <= MAX_ATTEMPT else 1
        controller = row[10] if type(row[10]) is str and len(row[10]) <= _MAX_SHORT else None
        task_type = row[1] if type(row[1]) is str and len(row[1]) <= 64 and _fullmatch_name(row[1]) else "unknown"
        return Result(
            task_id, task_type, Status.FAILED, attempt=attempt, controller=controller, error=f"malformed result: {exc}"
        )


# -- the messages ----------------------------------------------------------------------------------

_C, _M, _S = Sender.CONTROLLER, Sender.MASTER, Sender.CLIENT
#: Worker processes of one controller, credit of one message at most.
MAX_WORKERS = 1 << 16
#: Seconds a master may ask for as a heartbeat interval or controller timeout at most.
MAX_INTERVAL = 86400.0


def _reason(default: str) -> Any:
    return text(max_len=_MAX_SHORT, default=default, what="a reason")


def _task_ids() -> Any:
    return names(pattern=TASK_ID_PATTERN, what="task ids")


@message("hello", sender=_C)
@attrs.frozen
class Hello:
    """C→M: register (or re-register after a reconnect)."""

    tag: ClassVar[str]
    controller_id: str = text(max_len=128, pattern=ID_PATTERN, what="a controller id")
    host: str = text(max_len=253, pattern=ID_PATTERN, what="a host name")
    pid: int = whole(low=1, high=1 << 22)
    workers: int = whole(low=1, high=MAX_WORKERS)
    #: Slots the controller grants the master to start with.
    credit: int = whole(low=0, high=MAX_ITEMS)
    task_types: list[str] = names(pattern=NAME_PATTERN, max_len=64, max_items=1024, what="task type names")
    version: str = text(max_len=64, default="", what="a version")


@message("welcome", sender=_M)
@attrs.frozen
class Welcome:
    """M→C: registration accepted."""

    tag: ClassVar[str]
    master_id: str = text(max_len=128, pattern=ID_PATTERN, what="a master id")
    run_id: str = text(max_len=64, pattern=TASK_ID_PATTERN, what="a run id")
    heartbeat_interval: float = number(low=0.0, high=MAX_INTERVAL)
    controller_timeout: float = number(low=0.0, high=MAX_INTERVAL)


@message("refuse", sender=_M)
@attrs.frozen
class Refuse:
    """M→C or M→anyone: registration or message refused; the peer should stop and say why.
    ``retry_after`` > 0: the refusal may pass by then (a controller id still held by a process
    that is not timed out yet), and a controller says Hello again after that many seconds."""

    tag: ClassVar[str]
    reason: str = text(max_len=_MAX_SHORT, what="a reason")
    retry_after: float = number(low=0.0, high=MAX_INTERVAL, default=0.0)


@message("dispatch", sender=_M, hot=True)
@attrs.frozen
class Dispatch:
    """M→C: run these tasks (never more than the controller's outstanding credit)."""

    tag: ClassVar[str]
    tasks: list[TaskEnvelope] = rows(envelope_from_row, envelope_to_row)


@message("results", sender=_C, hot=True)
@attrs.frozen
class Results:
    """C→M: terminal results of attempts, plus ``credit`` newly free slots."""

    tag: ClassVar[str]
    results: list[Result] = rows(_result_from_wire, result_to_row)
    credit: int = whole(low=0, high=MAX_ITEMS, default=0)


@message("ack", sender=_M, hot=True)
@attrs.frozen
class Ack:
    """M→C: these results are recorded; stop re-sending them."""

    tag: ClassVar[str]
    task_ids: list[str] = _task_ids()


@message("heartbeat", sender=_C)
@attrs.frozen
class Heartbeat:
    """C→M: alive; ``running`` lists every task the controller holds (queued or running)."""

    tag: ClassVar[str]
    running: list[str] = _task_ids()
    draining: bool = flag(default=False)


@message("ping", sender=_M)
@attrs.frozen
class Ping:
    """M→C: the master is alive."""

    tag: ClassVar[str]


@message("handback", sender=_C)
@attrs.frozen
class Handback:
    """C→M: tasks returned unstarted (draining); ``credit`` slots are not to be refilled."""

    tag: ClassVar[str]
    task_ids: list[str] = _task_ids()
    reason: str = _reason("draining")


@message("goodbye", sender=_C)
@attrs.frozen
class Goodbye:
    """C→M: the controller leaves cleanly; it holds no tasks and no unacknowledged results."""

    tag: ClassVar[str]
    reason: str = _reason("shutdown")


@message("rehello", sender=_M)
@attrs.frozen
class Rehello:
    """M→C: the master does not know this controller (it restarted, or declared it lost)."""

    tag: ClassVar[str]
    reason: str = _reason("unknown controller")


@message("shutdown", sender=_M)
@attrs.frozen
class Shutdown:
    """M→C: finish or hand back what you hold, say goodbye, exit."""

    tag: ClassVar[str]
    reason: str = _reason("master is stopping")


@message("status?", sender=_S)
@attrs.frozen
class StatusRequest:
    """Status client→M: send a snapshot."""

    tag: ClassVar[str]


@message("status", sender=_M)
@attrs.frozen
class StatusReply:
    """M→status client: a snapshot as plain data (see the master's ``status()``)."""

    tag: ClassVar[str]
    snapshot: dict[str, Any] = plain_map()


@message("enroll", sender=_C)
@attrs.frozen
class Enroll:
    """C→M, from a key the master does not know yet: admit this key, with a join token's
    one-time secret (the only message such a connection may send)."""

    tag: ClassVar[str]
    secret: str = text(max_len=64, pattern=re.compile(r"[A-Za-z0-9_-]+"), what="a token secret")


@message("enrolled", sender=_M)
@attrs.frozen
class Enrolled:
    """M→C: the key is admitted under ``name`` for the controller ids ``ids``; connect again."""

    tag: ClassVar[str]
    name: str = text(max_len=128, what="a grant name")
    ids: str = text(max_len=128, what="an id pattern")


#: Tasks in one Submit, results in one Fetched at most.
MAX_SUBMIT = 10_000
MAX_FETCH = 10_000


def submit_row(row: Any) -> list[Any]:
    """A submitted task's row ``[type, args, key, timeout]``, checked; ``ValueError`` naming
    the field otherwise."""
    if type(row) is not list or len(row) != 4:
        raise ValueError("a task must be a list of 4 fields: type, args, key, timeout")
    type_, args, key, timeout = row
    _type_name(type_, "type")
    if type(args) is not dict:
        raise _bad("args", args, "a map")
    try:
        check_plain(args, finite=False)  # as in a Dispatch: "no limit" may be infinity
    except ValueError as exc:
        raise ValueError(f"args: {exc}") from None
    _short(key, "key")
    if timeout is not None and not (_is_number(timeout) and 0 < timeout <= MAX_SECONDS):
        raise _bad("timeout", timeout, f"a number of seconds above 0 and at most {MAX_SECONDS:g}")
    return row


@message("submit", sender=_S)
@attrs.frozen
class Submit:
    """Client→M: queue these tasks, each ``[type, args, key, timeout]``; ``done``: the last ones."""

    tag: ClassVar[str]
    tasks: list[list[Any]] = rows(submit_row, list, max_items=MAX_SUBMIT)
    done: bool = flag(default=False)


@message("submitted", sender=_M)
@attrs.frozen
class Submitted:
    """M→client: ``count`` tasks were queued."""

    tag: ClassVar[str]
    count: int = whole(high=MAX_SUBMIT)


@message("fetch", sender=_S)
@attrs.frozen
class Fetch:
    """Client→M: send the terminal results numbered after ``after``, at most ``limit``."""

    tag: ClassVar[str]
    after: int = whole()
    limit: int = whole(low=1, high=MAX_FETCH)


@message("fetched", sender=_M)
@attrs.frozen
class Fetched:
    """M→client: results numbered ``last - len(results) + 1`` to ``last``; ``missed``: results
    after the Fetch's ``after`` the master no longer holds; ``finished``: none come after ``last``."""

    tag: ClassVar[str]
    results: list[Result] = rows(result_from_row, result_to_row, max_items=MAX_FETCH)
    last: int = whole()
    finished: bool = flag()
    missed: int = whole(default=0)


Message = (
    Hello
    | Welcome
    | Refuse
    | Dispatch
    | Results
    | Ack
    | Heartbeat
    | Ping
    | Handback
    | Goodbye
    | Rehello
    | Shutdown
    | StatusRequest
    | StatusReply
    | Enroll
    | Enrolled
    | Submit
    | Submitted
    | Fetch
    | Fetched
)
# The union above is for type checkers; the registry is the truth, and they must agree.
assert set(Message.__args__) == set(_SPEC_OF), "Message must name every declared message"


# -- frames -------------------------------------------------------------------------------------

_pack = msgpack.Packer().pack


def encode(message: Message) -> bytes:
    """One frame for ``message``."""
    spec = _SPEC_OF[type(message)]
    data: dict[str, Any] = {}
    for name, _, _, write in spec.fields:
        value = getattr(message, name)
        data[name] = write(value) if write is not None else value
    data["v"] = PROTOCOL_VERSION
    data["t"] = spec.tag
    return _pack(data)


class EnvelopeLike(Protocol):
    """Anything with a task envelope's attributes (the master's own task records)."""

    id: str
    type: str
    args: dict[str, Any]
    attempt: int
    timeout: float | None
    key: str | None


def encode_dispatch(tasks: Iterable[EnvelopeLike]) -> bytes:
    """The frame of ``Dispatch(tasks)``, built straight from objects with the attributes of a
    :class:`TaskEnvelope` (the master dispatches its task records without copying them)."""
    task_rows = [[t.id, t.type, t.args, t.attempt, t.timeout, t.key] for t in tasks]
    return _pack({"tasks": task_rows, "v": PROTOCOL_VERSION, "t": Dispatch.tag})


def encode_results(result_rows: list[list[Any]], credit: int) -> bytes:
    """The frame of ``Results`` whose results are rows already (as :func:`result_to_row` makes
    them): a controller forwards its workers' rows as they are, and :func:`decode` on the
    master's side validates them like any other."""
    return _pack({"results": result_rows, "credit": credit, "v": PROTOCOL_VERSION, "t": Results.tag})


def decode(frame: bytes) -> Message:
    """The message in ``frame``; :class:`ProtocolError` (one line) for anything else."""
    if len(frame) > MAX_FRAME_BYTES:
        raise ProtocolError(f"frame of {len(frame)} bytes exceeds the {MAX_FRAME_BYTES} byte limit")
    try:
        data = msgpack.unpackb(frame, raw=False, strict_map_key=True)
    except Exception as exc:  # msgpack raises several unrelated types for garbage
        raise ProtocolError(f"not a msgpack message ({type(exc).__name__})") from None
    if type(data) is not dict:
        raise ProtocolError(f"expected a map, got {type(data).__name__}")
    version = data.pop("v", None)
    if type(version) is not int or version != PROTOCOL_VERSION:
        raise ProtocolError(f"protocol version {version!r:.20} is not supported (this side speaks {PROTOCOL_VERSION})")
    tag = data.pop("t", None)
    spec = _SPECS.get(tag) if type(tag) is str else None
    if spec is None:
        raise ProtocolError(f"unknown message type {tag!r:.40}")
    values: dict[str, Any] = {}
    for name, check, default, _ in spec.fields:
        value = data.pop(name, attrs.NOTHING)
        if value is attrs.NOTHING:
            if default is attrs.NOTHING:
                raise ProtocolError(f"invalid {tag} message: {name}: missing")
            value = [] if type(default) is list else default
        else:
            try:
                value = check(value)
            except ValueError as exc:
                problem = str(exc)
                where = f"{name}{problem}" if problem.startswith("[") else f"{name}: {problem}"
                raise ProtocolError(f"invalid {tag} message: {where}") from None
        values[name] = value
    if data:
        raise ProtocolError(f"invalid {tag} message: unexpected field(s) {', '.join(repr(k)[:40] for k in data)}")
    return spec.cls(**values)
