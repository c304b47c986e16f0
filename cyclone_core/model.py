"""The data model every plugin and the engine share: tasks, results, metrics, generators, sinks.

Tasks, generators and sinks are ``attrs`` classes whose fields are their options; they are
built from plain data (TOML, the command line, the wire) by the one converter in
:mod:`cyclone_core.convert`, so a bad value is reported by field name.  Each class has a
``name`` class variable: the registered name users and the wire refer to it by.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, ClassVar

import attrs

__all__ = (
    "Attempt",
    "ByteSize",
    "Metric",
    "MetricKind",
    "Outcome",
    "Result",
    "ResultSink",
    "Status",
    "Task",
    "TaskContext",
    "TaskGenerator",
    "TaskSpec",
)


class Status(enum.StrEnum):
    """How a task ended.

    ``ok`` and ``failed`` are reported by the task itself (``failed``: it raised, or returned a
    failed :class:`Outcome`).  ``timeout`` and ``crashed`` are reported by the controller that
    killed or lost the worker process.  ``quarantined`` is decided by the master for a task that
    used up its retry budget, and carries the attempt history.
    """

    OK = "ok"
    FAILED = "failed"
    TIMEOUT = "timeout"
    CRASHED = "crashed"
    QUARANTINED = "quarantined"


class MetricKind(enum.StrEnum):
    """Prometheus-style type of a metric; sinks that care (Pushgateway) use it."""

    GAUGE = "gauge"
    COUNTER = "counter"


class ByteSize(int):
    """An option holding a number of bytes; accepts ``4096``, ``"64K"``, ``"1M"``, ``"2GiB"``.

    Suffixes are binary (K = 1024), as in ``lfs`` and ``dd``.
    """

    _UNITS: ClassVar[dict[str, int]] = {"": 1, "B": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}

    @classmethod
    def parse(cls, value: object) -> ByteSize:
        """Parse an int or a string with an optional K/M/G/T suffix (``KiB``/``KB`` alike)."""
        if isinstance(value, bool):
            raise ValueError(f"expected a size such as 4096 or '1M', got {value!r}")
        number: float
        if isinstance(value, int):
            number, unit = value, ""
        elif isinstance(value, str):
            text = value.strip().upper().removesuffix("IB").removesuffix("B")
            unit = text[-1:] if text[-1:].isalpha() else ""
            try:
                number = float(text[: len(text) - len(unit)])
            except ValueError:
                raise ValueError(f"expected a size such as 4096 or '1M', got {value!r}") from None
            if unit not in cls._UNITS:
                raise ValueError(f"unknown size unit in {value!r} (use K, M, G or T)")
        else:
            raise ValueError(f"expected a size such as 4096 or '1M', got {value!r}")
        size = int(number * cls._UNITS[unit])
        if size < 0:
            raise ValueError(f"size must not be negative, got {value!r}")
        return cls(size)


@attrs.frozen
class Metric:
    """One measured value.

    :param name: metric name, Prometheus style (``cyclone_lustre_ost_write_bytes_per_second``).
    :param value: the value.
    :param unit: unit of ``value`` (``bytes/s``, ``s``, ``1``); informative.
    :param labels: what the value is about (``{"fs": "testfs", "component": "ost", "target":
        "testfs-OST000a"}``).
    :param timestamp: when it was measured, epoch seconds; ``None`` means when the task ended.
    :param kind: ``gauge`` (default) or ``counter``.
    """

    name: str
    value: float
    unit: str = ""
    labels: dict[str, str] = attrs.field(factory=dict)
    timestamp: float | None = None
    kind: MetricKind = MetricKind.GAUGE


@attrs.define(kw_only=True)
class Outcome:
    """What :meth:`Task.execute` may return instead of ``None``.

    :param metrics: measured values.
    :param payload: any JSON-compatible structured data for sinks that store it.
    :param status: ``ok`` or ``failed``; a task that detects a problem without raising (a
        misplaced Lustre object, say) returns ``failed`` with ``error`` set.
    :param error: one line saying what went wrong.
    """

    metrics: list[Metric] = attrs.field(factory=list)
    payload: dict[str, Any] | None = None
    status: Status = Status.OK
    error: str | None = None

    def __attrs_post_init__(self) -> None:
        if self.status not in (Status.OK, Status.FAILED):
            raise ValueError(f"a task reports ok or failed, not {self.status}")


@attrs.frozen
class Attempt:
    """One earlier attempt of a task, kept in a quarantined result's history."""

    attempt: int
    status: Status
    error: str | None = None
    controller: str | None = None
    finished_at: float = 0.0


@attrs.frozen
class Result:
    """The terminal outcome of one task, as delivered to generators and sinks.

    ``task_id`` is unique across runs (it starts with the run id) and stable across re-delivery:
    it is the id sinks de-duplicate on.

    :param task_id: stable, globally unique id of the task (the result id).
    :param task_type: registered name of the task type.
    :param status: how it ended.
    :param key: the generator's own name for the task (``ost7``), if it gave one.
    :param attempt: which attempt this result comes from (1 = first).
    :param started_at: when the attempt started, epoch seconds.
    :param duration: how long the attempt ran, seconds.
    :param error: one line saying what went wrong, or ``None``.
    :param metrics: measured values.
    :param payload: structured data from the task, or ``None``.
    :param controller: id of the controller that ran the attempt.
    :param history: earlier attempts (filled in for retried and quarantined tasks).
    """

    task_id: str
    task_type: str
    status: Status
    key: str | None = None
    attempt: int = 1
    started_at: float = 0.0
    duration: float = 0.0
    error: str | None = None
    metrics: list[Metric] = attrs.field(factory=list)
    payload: dict[str, Any] | None = None
    controller: str | None = None
    history: list[Attempt] = attrs.field(factory=list)

    @property
    def ok(self) -> bool:
        """True when the task succeeded."""
        return self.status is Status.OK


@attrs.frozen
class TaskContext:
    """What a running task may know about itself.

    :param task_id: the task's id (unique; handy for naming scratch files).
    :param attempt: 1 for the first attempt, 2 for the first retry, ...
    :param timeout: seconds the task may run before it is killed, or ``None``.
    :param log: a logger for the task.
    :param local: the controller's own settings for this task type (see
        :attr:`Task.local_settings`): an instance of the task's ``local_settings`` class, or
        the plain table when it declares none (empty when the controller has none).  Annotate
        it where you read it: ``settings: MyLocal = ctx.local``.
    """

    task_id: str
    attempt: int = 1
    timeout: float | None = None
    log: logging.Logger = attrs.field(factory=lambda: logging.getLogger("cyclone.task"), eq=False)
    local: Any = attrs.field(factory=dict)


@attrs.define(kw_only=True)
class Task:
    """Base class of every task type.

    Subclass it as an ``attrs`` class whose typed fields are the task's arguments, set ``name``,
    and implement :meth:`execute`.  Instances travel between processes as plain data (the task
    type's name and its fields), never pickled.
    """

    name: ClassVar[str] = ""
    #: The table of the controller's configuration, ``[controller.local.<section>]``, that holds
    #: this task type's local settings: what only the controller decides (programs, sudo, path
    #: roots), never a task's field.  Empty: the type's ``name``.  Types may share a table.
    local_section: ClassVar[str] = ""
    #: An ``attrs`` class the table is built into, with its defaults and validators: checked
    #: once when the controller starts (a bad value is a configuration error then), built once
    #: per worker process, and handed to :meth:`execute` as ``ctx.local``.  ``None``: the task
    #: gets the table as a plain ``dict``.
    local_settings: ClassVar[type[Any] | None] = None
    #: The table ``cyclone run``'s embedded controllers use when the user's configuration has
    #: none for the section: they run as the user, on the user's machine, for the user alone
    #: (the ``command`` type allows every program there).  ``None``: no table.
    embedded_local: ClassVar[Mapping[str, Any] | None] = None

    @classmethod
    def local_table(cls) -> str:
        """The name of its ``[controller.local.<section>]`` table."""
        return cls.local_section or cls.name

    #: Whether only a controller with keys may run this type (``command``: whoever can reach a
    #: plaintext master could otherwise run programs through it).
    needs_keys: ClassVar[bool] = False

    @classmethod
    def off_because(cls, local: Any) -> str | None:
        """Why a controller with these local settings does not run this type at all (it then
        does not announce it), or ``None`` when it does.  A type that must be switched on by
        the controller's own configuration (``command``) says so here."""
        return None

    def execute(self, ctx: TaskContext) -> Outcome | None:
        """Run the task in a worker process.

        Return ``None`` (success, nothing measured) or an :class:`Outcome`.  Raising marks the
        task ``failed`` with the exception as its error.
        """
        raise NotImplementedError


@attrs.frozen
class TaskSpec:
    """A task as a generator hands it out, with how the engine should treat it.

    :param task: the task itself.
    :param key: the generator's name for it (``ost7``); shows up in results and logs.
    :param timeout: seconds the task may run; ``None`` uses the run's default.
    """

    task: Task
    key: str | None = None
    timeout: float | None = None


@attrs.define(kw_only=True)
class TaskGenerator:
    """Base class of task generators; the fields are the generator's options.

    The master pulls tasks lazily from :meth:`tasks`, only as fast as its bounded window of
    pending tasks drains, so a generator may be endless.  It must never block for long: a
    periodic generator yields ``None`` when it has nothing to hand out yet, and the master asks
    again a moment later.  Returning ends the generator; the run ends once every task it handed
    out has settled.
    """

    name: ClassVar[str] = ""
    #: A deterministic generator yields the same tasks in the same order every time it is
    #: started with the same options.  After a restart on a journal the master skips the tasks
    #: it already knows; a non-deterministic one (periodic monitoring) simply starts afresh.
    deterministic: ClassVar[bool] = True
    #: The Cyclone 2.x generator class this one replaces (``[task_generator] class = ...`` in a
    #: 2.x master INI file), or empty.
    legacy_class: ClassVar[str] = ""

    @classmethod
    def legacy_options(cls, sections: Mapping[str, Mapping[str, str]]) -> dict[str, Any]:
        """Translate the sections of a Cyclone 2.x generator config file into this generator's
        options; the default accepts none."""
        if any(sections.values()):
            raise ValueError(f"generator '{cls.name}' cannot read a Cyclone 2.x config file")
        return {}

    def tasks(self) -> Iterator[Task | TaskSpec | None]:
        """Yield tasks (or specs); yield ``None`` for "nothing right now"; return when done."""
        raise NotImplementedError

    def total(self) -> int | None:
        """How many tasks :meth:`tasks` will yield in all, if known before it starts (a progress
        bar and ``cyclone status`` show it); ``None`` (the default) for unknown or endless."""
        return None

    def on_result(self, result: Result) -> None:
        """Called in the master with every terminal result of a task this generator made."""

    def close(self) -> None:
        """Called once when the master stops."""


@attrs.define(kw_only=True)
class ResultSink:
    """Base class of result sinks; the fields are the sink's options.

    The master calls :meth:`write` from a delivery thread of the sink's own with batches of up
    to ``batch_size`` results, at least every ``flush_interval`` seconds while results wait.
    When ``write`` returns the batch must be stored durably; if it raises, the same results are
    offered again later (with backoff), so delivery is at least once and ``write`` must be
    idempotent on :attr:`Result.task_id`.
    """

    name: ClassVar[str] = ""

    batch_size: int = attrs.field(default=1000, validator=attrs.validators.gt(0))
    flush_interval: float = attrs.field(default=1.0, validator=attrs.validators.ge(0))

    def check(self) -> None:
        """Find out, before the run starts, whether the sink can work at all with its options.

        Called once in the master's process before any task is dispatched, before
        :meth:`open`.  Raise with a one-line message (a :class:`~cyclone_core.CycloneError`)
        when it cannot: credentials refused, unknown database, an address that does not
        resolve, a path that cannot be written.  The master then does not start: ``error:
        sink 'NAME': MESSAGE`` and exit code 2.  Return when it can, or may later (a server
        down or out of reach now): delivery retries that with backoff, as it does when the
        sink fails during the run.  Release whatever it opened.  The default checks nothing.
        """

    def open(self) -> None:
        """Connect or create storage; raising here counts as a failed delivery, retried later."""

    def write(self, results: Sequence[Result]) -> None:
        """Store ``results`` durably and idempotently (keyed by ``task_id``)."""
        raise NotImplementedError

    def close(self) -> None:
        """Release connections; called once when the master stops."""


def describe(obj: type[Any]) -> Mapping[str, str]:
    """Field name -> type name of an options class, for listings and docs."""
    return {f.name: getattr(f.type, "__name__", str(f.type)) for f in attrs.fields(obj)}
