"""The wire protocol between master, controllers and status clients.

Transport: ZeroMQ.  The master binds a ROUTER socket; controllers and ``cyclone status``
connect DEALER sockets with a unique routing id.  Every message is one frame holding a msgpack
map ``{"v": PROTOCOL_VERSION, "t": <tag>, ...fields}``: plain data only, no pickle, no module
paths.  Task types travel as registered names and their fields as plain data.

This module is sans-I/O: :func:`encode` and :func:`decode` turn messages into bytes and back,
and every malformed, oversized, foreign or other-version frame becomes a :class:`ProtocolError`
with one line saying what is wrong.

Conversation (C = controller, M = master)::

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

Rules both sides keep:

- The master sends a Dispatch only within the credit the controller granted (Hello's
  ``credit`` to start with, then each Results' ``credit``); a draining controller (Heartbeat
  ``draining=True``) gets no more tasks, nor does anyone once the master sent Shutdown.  A
  Handback gives no credit back.
- A Hello with a known controller id from the same host and pid is a reconnect: the master
  keeps its leases and takes the Hello's ``credit`` as the whole credit from then on.  From
  another process it is refused while the first one is alive, and replaces it once the first
  has been silent for the controller timeout.
- A Heartbeat's ``running`` lists every task the controller holds, queued or running.  A task
  leased to a controller but missing from two heartbeats in a row (more than one heartbeat
  interval apart) is taken back and re-queued.
- A controller sends each terminal result until it is acknowledged, also again after a
  reconnect; the master acknowledges duplicates and results it no longer knows, and only the
  first terminal result of a task counts.
- Results, Heartbeat or Handback from a peer the master does not know are answered with
  Rehello (at most once a second); the Results are still recorded and acknowledged.  A
  Goodbye from it is ignored.  Tasks a controller still holds when it says Goodbye count as
  lost.
- A result row that is malformed but names its task arrives as a ``failed`` result saying
  what is wrong, so one task returning odd data cannot make a whole batch unreadable.
- A Hello with a foreign protocol version, a controller id in use by another live process,
  or no task type the master knows is answered with Refuse; so is garbage, at most once in a
  while per peer.

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

from collections.abc import Iterable
from typing import Any, ClassVar, Protocol

import attrs
import cattrs
import msgpack

from cyclone_core.convert import converter, describe_error
from cyclone_core.model import Attempt, Metric, MetricKind, Result, Status

__all__ = (
    "MAX_FRAME_BYTES",
    "PROTOCOL_VERSION",
    "Ack",
    "Dispatch",
    "EnvelopeLike",
    "Goodbye",
    "Handback",
    "Heartbeat",
    "Hello",
    "Message",
    "Ping",
    "ProtocolError",
    "Refuse",
    "Rehello",
    "Results",
    "Shutdown",
    "StatusReply",
    "StatusRequest",
    "TaskEnvelope",
    "Welcome",
    "decode",
    "encode",
    "encode_dispatch",
    "encode_results",
    "envelope_from_row",
    "envelope_to_row",
    "metric_rows",
    "result_from_row",
    "result_to_row",
)

#: Raised whenever a message's meaning changes incompatibly.
PROTOCOL_VERSION = 1
#: Frames larger than this are refused before they are parsed.
MAX_FRAME_BYTES = 64 * 1024 * 1024


class ProtocolError(Exception):
    """A frame that is not a valid message of this protocol version."""


@attrs.frozen
class TaskEnvelope:
    """A task as dispatched: its id, registered type name, plain-data fields and limits."""

    id: str
    type: str
    args: dict[str, Any] = attrs.field(factory=dict)
    attempt: int = 1
    timeout: float | None = None
    key: str | None = None


@attrs.frozen
class Hello:
    """C→M: register (or re-register after a reconnect)."""

    tag: ClassVar[str] = "hello"
    controller_id: str
    host: str
    pid: int
    workers: int
    #: Slots the controller grants the master to start with.
    credit: int
    task_types: list[str] = attrs.field(factory=list)
    version: str = ""


@attrs.frozen
class Welcome:
    """M→C: registration accepted."""

    tag: ClassVar[str] = "welcome"
    master_id: str
    run_id: str
    heartbeat_interval: float
    controller_timeout: float


@attrs.frozen
class Refuse:
    """M→C or M→anyone: registration or message refused; the peer should stop and say why."""

    tag: ClassVar[str] = "refuse"
    reason: str


@attrs.frozen
class Dispatch:
    """M→C: run these tasks (never more than the controller's outstanding credit)."""

    tag: ClassVar[str] = "dispatch"
    tasks: list[TaskEnvelope]


@attrs.frozen
class Results:
    """C→M: terminal results of attempts, plus ``credit`` newly free slots."""

    tag: ClassVar[str] = "results"
    results: list[Result]
    credit: int = 0


@attrs.frozen
class Ack:
    """M→C: these results are recorded; stop re-sending them."""

    tag: ClassVar[str] = "ack"
    task_ids: list[str]


@attrs.frozen
class Heartbeat:
    """C→M: alive; ``running`` lists every task the controller holds (queued or running)."""

    tag: ClassVar[str] = "heartbeat"
    running: list[str] = attrs.field(factory=list)
    draining: bool = False


@attrs.frozen
class Ping:
    """M→C: the master is alive."""

    tag: ClassVar[str] = "ping"


@attrs.frozen
class Handback:
    """C→M: tasks returned unstarted (draining); ``credit`` slots are not to be refilled."""

    tag: ClassVar[str] = "handback"
    task_ids: list[str]
    reason: str = "draining"


@attrs.frozen
class Goodbye:
    """C→M: the controller leaves cleanly; it holds no tasks and no unacknowledged results."""

    tag: ClassVar[str] = "goodbye"
    reason: str = "shutdown"


@attrs.frozen
class Rehello:
    """M→C: the master does not know this controller (it restarted, or declared it lost)."""

    tag: ClassVar[str] = "rehello"
    reason: str = "unknown controller"


@attrs.frozen
class Shutdown:
    """M→C: finish or hand back what you hold, say goodbye, exit."""

    tag: ClassVar[str] = "shutdown"
    reason: str = "master is stopping"


@attrs.frozen
class StatusRequest:
    """Status client→M: send a snapshot."""

    tag: ClassVar[str] = "status?"


@attrs.frozen
class StatusReply:
    """M→status client: a snapshot as plain data (see the master's ``status()``)."""

    tag: ClassVar[str] = "status"
    snapshot: dict[str, Any]


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
)

_BY_TAG: dict[str, type[Any]] = {
    cls.tag: cls
    for cls in (
        Hello,
        Welcome,
        Refuse,
        Dispatch,
        Results,
        Ack,
        Heartbeat,
        Ping,
        Handback,
        Goodbye,
        Rehello,
        Shutdown,
        StatusRequest,
        StatusReply,
    )
}


# -- compact rows for the hot messages ---------------------------------------------------------

_STATUS = {status.value: status for status in Status}
_KIND = {kind.value: kind for kind in MetricKind}


def _bad(field: str, value: object, expected: str) -> ValueError:
    return ValueError(f"{field}: expected {expected}, got {value!r:.60}")


def _is_number(value: object) -> bool:
    return type(value) is float or type(value) is int


def envelope_to_row(task: TaskEnvelope) -> list[Any]:
    """The wire row of a dispatched task."""
    return [task.id, task.type, task.args, task.attempt, task.timeout, task.key]


def envelope_from_row(row: Any) -> TaskEnvelope:
    """The task in a wire row; ``ValueError`` naming the field if it is malformed."""
    if type(row) is not list or len(row) != 6:
        raise ValueError("a task must be a list of 6 fields")
    task_id, type_, args, attempt, timeout, key = row
    if type(task_id) is not str:
        raise _bad("id", task_id, "a string")
    if type(type_) is not str:
        raise _bad("type", type_, "a string")
    if type(args) is not dict:
        raise _bad("args", args, "a map")
    if type(attempt) is not int:
        raise _bad("attempt", attempt, "a whole number")
    if timeout is not None and not _is_number(timeout):
        raise _bad("timeout", timeout, "a number")
    if key is not None and type(key) is not str:
        raise _bad("key", key, "a string")
    return TaskEnvelope(task_id, type_, args, attempt, timeout, key)


def _metric_from_row(row: Any) -> Metric:
    if type(row) is not list or len(row) != 6:
        raise ValueError("metrics: a metric must be a list of 6 fields")
    name, value, unit, labels, timestamp, kind = row
    if type(name) is not str or not isinstance(value, int | float) or type(unit) is not str:
        raise ValueError(f"metrics: malformed metric {row!r:.60}")
    if type(labels) is not dict or not all(type(v) is str for v in labels.values()):
        raise _bad("metrics.labels", labels, "a map of strings")
    if timestamp is not None and not _is_number(timestamp):
        raise _bad("metrics.timestamp", timestamp, "a number")
    return Metric(name, value, unit, labels, timestamp, _KIND[kind])


def _attempt_from_row(row: Any) -> Attempt:
    if type(row) is not list or len(row) != 5:
        raise ValueError("history: an attempt must be a list of 5 fields")
    attempt, status, error, controller, finished_at = row
    if type(attempt) is not int or not _is_number(finished_at):
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


def result_from_row(row: Any) -> Result:  # noqa: PLR0912  (one check per field, kept flat for speed)
    """The result in a compact row; ``ValueError`` naming the field if it is malformed."""
    if type(row) is not list or len(row) != 12:
        raise ValueError("a result must be a list of 12 fields")
    task_id, task_type, status, key, attempt, started_at, duration, error, metrics, payload, controller, history = row
    if type(task_id) is not str:
        raise _bad("task_id", task_id, "a string")
    if type(task_type) is not str:
        raise _bad("task_type", task_type, "a string")
    if status not in _STATUS:
        raise _bad("status", status, "one of " + ", ".join(_STATUS))
    if key is not None and type(key) is not str:
        raise _bad("key", key, "a string")
    if type(attempt) is not int:
        raise _bad("attempt", attempt, "a whole number")
    if not _is_number(started_at):
        raise _bad("started_at", started_at, "a number")
    if not _is_number(duration):
        raise _bad("duration", duration, "a number")
    if error is not None and type(error) is not str:
        raise _bad("error", error, "a string")
    if type(metrics) is not list:
        raise _bad("metrics", metrics, "a list")
    if payload is not None and type(payload) is not dict:
        raise _bad("payload", payload, "a map")
    if controller is not None and type(controller) is not str:
        raise _bad("controller", controller, "a string")
    if type(history) is not list:
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


# -- frames -------------------------------------------------------------------------------------

_pack = msgpack.Packer().pack


def encode(message: Message) -> bytes:
    """One frame for ``message``."""
    if type(message) is Dispatch:
        data: dict[str, Any] = {"tasks": [envelope_to_row(task) for task in message.tasks]}
    elif type(message) is Results:
        return encode_results([result_to_row(result) for result in message.results], message.credit)
    elif type(message) is Ack:  # one per controller and turn of the master's loop
        data = {"task_ids": message.task_ids}
    else:
        data = converter.unstructure(message)
    data["v"] = PROTOCOL_VERSION
    data["t"] = message.tag
    return _pack(data)


def _malformed_result(row: Any, problem: str) -> Result | None:
    """A failed result for a malformed row that still names its task, else ``None``.

    One task returning an odd value must not make its controller's whole batch unreadable
    (the batch would be re-sent forever): the task fails, saying why.
    """
    if type(row) is not list or len(row) != 12 or type(row[0]) is not str or type(row[1]) is not str:
        return None
    attempt = row[4] if type(row[4]) is int else 1
    controller = row[10] if type(row[10]) is str else None
    error = f"malformed result: {problem}"
    return Result(row[0], row[1], Status.FAILED, attempt=attempt, controller=controller, error=error)


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
    rows = [[t.id, t.type, t.args, t.attempt, t.timeout, t.key] for t in tasks]
    return _pack({"tasks": rows, "v": PROTOCOL_VERSION, "t": Dispatch.tag})


def encode_results(rows: list[list[Any]], credit: int) -> bytes:
    """The frame of ``Results`` whose results are rows already (as :func:`result_to_row` makes
    them): a controller forwards its workers' rows as they are, and :func:`decode` on the
    master's side validates them like any other."""
    return _pack({"results": rows, "credit": credit, "v": PROTOCOL_VERSION, "t": Results.tag})


def _decode_rows(data: dict[str, Any], field: str, from_row: Any) -> list[Any]:
    rows = data.pop(field, None)
    if type(rows) is not list:
        raise ValueError(f"{field}: expected a list")
    items = []
    for index, row in enumerate(rows):
        try:
            items.append(from_row(row))
        except (ValueError, TypeError, KeyError) as exc:
            failed = _malformed_result(row, str(exc)) if from_row is result_from_row else None
            if failed is None:
                raise ValueError(f"{field}[{index}]: {exc}") from None
            items.append(failed)
    return items


def _decode_hot(tag: str, data: dict[str, Any]) -> Message:
    if tag == "dispatch":
        tasks = _decode_rows(data, "tasks", envelope_from_row)
        message: Message = Dispatch(tasks)
    else:
        results = _decode_rows(data, "results", result_from_row)
        credit = data.pop("credit", 0)
        if type(credit) is not int or credit < 0:
            raise _bad("credit", credit, "a whole number >= 0")
        message = Results(results, credit)
    if data:
        raise ValueError(f"unexpected field(s) {', '.join(map(str, data))}")
    return message


def decode(frame: bytes) -> Message:
    """The message in ``frame``; :class:`ProtocolError` (one line) for anything else."""
    if len(frame) > MAX_FRAME_BYTES:
        raise ProtocolError(f"frame of {len(frame)} bytes exceeds the {MAX_FRAME_BYTES} byte limit")
    try:
        data = msgpack.unpackb(frame, raw=False, strict_map_key=True)
    except Exception as exc:  # msgpack raises several unrelated types for garbage
        raise ProtocolError(f"not a msgpack message ({type(exc).__name__})") from None
    if not isinstance(data, dict):
        raise ProtocolError(f"expected a map, got {type(data).__name__}")
    version = data.pop("v", None)
    if version != PROTOCOL_VERSION:
        raise ProtocolError(f"protocol version {version!r} is not supported (this side speaks {PROTOCOL_VERSION})")
    tag = data.pop("t", None)
    cls = _BY_TAG.get(tag) if isinstance(tag, str) else None
    if cls is None:
        raise ProtocolError(f"unknown message type {tag!r:.40}")
    try:
        if cls is Dispatch or cls is Results:
            return _decode_hot(tag, data)
        return converter.structure(data, cls)
    except (cattrs.BaseValidationError, ValueError, TypeError) as exc:
        raise ProtocolError(f"invalid {tag} message: {describe_error(exc)}") from None
