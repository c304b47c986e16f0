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
    C: Handback([task_id...], credit=n)                a draining controller returns unstarted tasks
    C: Goodbye(reason)                                 clean exit: its leases end now
    M: Rehello(reason)                                 "I do not know you": send Hello again
    M: Shutdown(reason)                                drain and exit
    S: StatusRequest()                M: StatusReply(snapshot)
"""

from __future__ import annotations

from typing import Any, ClassVar

import attrs
import cattrs
import msgpack

from cyclone_core.convert import converter, describe_error
from cyclone_core.model import Result

__all__ = (
    "MAX_FRAME_BYTES",
    "PROTOCOL_VERSION",
    "Ack",
    "Dispatch",
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


def encode(message: Message) -> bytes:
    """One frame for ``message``."""
    data = converter.unstructure(message)
    data["v"] = PROTOCOL_VERSION
    data["t"] = message.tag
    return msgpack.packb(data)  # type: ignore[no-any-return]


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
        raise ProtocolError(f"unknown message type {tag!r}")
    try:
        return converter.structure(data, cls)  # type: ignore[no-any-return]
    except (cattrs.BaseValidationError, ValueError, TypeError) as exc:
        raise ProtocolError(f"invalid {tag} message: {describe_error(exc)}") from None
