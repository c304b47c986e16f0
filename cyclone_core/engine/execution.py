"""Running one task: from its dispatched fields to a size-checked result row.

This is the one execution path of Cyclone.  The worker processes
(:mod:`~cyclone_core.engine.workers`) and :func:`cyclone_core.testing.run_task` both run tasks
with a :class:`TaskRunner`, so a task behaves in a plugin's tests as it does in a run: its type
is looked up by its registered name, its arguments are converted the same way, its outcome
gets the same status and error, and its result must pass the same checks (plain data, at most
:data:`MAX_RESULT_BYTES` bytes) or the task fails saying why.

A task's local settings (:attr:`~cyclone_core.model.Task.local_settings`, from the
controller's ``[controller.local.<section>]`` tables) are built by :func:`local_settings`, once
per task type and runner, never per task.

No sockets, processes or ZeroMQ here: what runs the task (a worker process, a test's thread)
decides how a task that hangs or kills its process ends, and says so with :func:`ended_row`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Collection, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import attrs
import cattrs
import msgpack

from cyclone_core.convert import converter, describe_error, structure
from cyclone_core.engine.protocol import MAX_FRAME_BYTES, metric_rows, result_to_row
from cyclone_core.errors import ConfigError, CycloneError, one_line_error
from cyclone_core.model import Outcome, Result, Status, Task, TaskContext

if TYPE_CHECKING:
    from cyclone_core.plugins import Plugins

__all__ = (
    "MAX_RESULT_BYTES",
    "TaskRunner",
    "embedded_tables",
    "ended_row",
    "execute_task",
    "local_settings",
    "timed_out",
)

#: Bytes a packed result row may take at most (metrics and payload included): several fit in
#: one message to the master.
MAX_RESULT_BYTES = MAX_FRAME_BYTES // 4

_pack = msgpack.Packer().pack


class TaskRunner:
    """Builds tasks from their dispatched fields and runs them.

    :param controller_id: written into every result.
    :param plugins: where task types are looked up by name.
    :param task_types: the only task types it runs (a task of another type fails saying so);
        ``None``: every installed one.
    :param local: the controller's ``[controller.local.<section>]`` tables; each task type's
        is built once, when its first task arrives (see :func:`local_settings`).
    """

    def __init__(
        self,
        controller_id: str,
        plugins: Plugins,
        *,
        task_types: Collection[str] | None = None,
        local: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> None:
        self.controller_id = controller_id
        self.plugins = plugins
        self.task_types = None if task_types is None else frozenset(task_types)
        self.local = dict(local or {})
        # type name -> its class, its logger and its local settings
        self._types: dict[str, tuple[type[Task], logging.Logger, Any]] = {}

    def run(self, task: Sequence[Any]) -> bytes:
        """Run the task in a dispatched row ``[id, type, args, attempt, timeout, key]`` (see
        :func:`~cyclone_core.engine.protocol.envelope_to_row`); returns its result row (see
        :func:`~cyclone_core.engine.protocol.result_to_row`) packed with msgpack.

        A result that is not plain data or takes more than :data:`MAX_RESULT_BYTES` bytes is
        replaced by a ``failed`` result saying so.  ``SystemExit`` and the like are not caught
        (see :func:`execute_task`).
        """
        task_id, type_name, args, attempt, timeout, key = task
        started_at, start = time.time(), time.perf_counter()
        status, error, outcome = self._execute(task_id, type_name, args, attempt, timeout)
        duration = time.perf_counter() - start
        metrics = metric_rows(outcome.metrics) if outcome is not None and outcome.metrics else []
        payload = outcome.payload if outcome is not None else None
        # The result row itself (see result_to_row): no Result object per task.
        row = [
            task_id,
            type_name,
            status.value,
            key,
            attempt,
            started_at,
            duration,
            error,
            metrics,
            payload,
            self.controller_id,
            [],
        ]
        try:
            packed: bytes = _pack(row)
        except (TypeError, ValueError) as exc:  # msgpack refuses what is not plain data
            error = f"the task's result is not plain data: {exc}"
        else:
            if len(packed) <= MAX_RESULT_BYTES:
                return packed
            error = f"the task's result takes {len(packed)} bytes; at most {MAX_RESULT_BYTES} are allowed"
        row[2], row[7], row[8], row[9] = Status.FAILED.value, error, [], None
        return _pack(row)

    def _execute(
        self, task_id: str, type_name: str, args: Any, attempt: int, timeout: float | None
    ) -> tuple[Status, str | None, Outcome | None]:
        try:
            cls, task_log, local = self._types.get(type_name) or self._load(type_name)
            task = structure(args, cls, where=f"arguments of task type '{type_name}'")
        except CycloneError as exc:
            return Status.FAILED, str(exc), None
        return execute_task(task, TaskContext(task_id, attempt, timeout, task_log, local))

    def _load(self, type_name: str) -> tuple[type[Task], logging.Logger, Any]:
        if self.task_types is not None and type_name not in self.task_types:
            runs = ", ".join(sorted(self.task_types)) or "none"
            raise ConfigError(f"task type '{type_name}' is not run by this controller (controller.task_types: {runs})")
        cls = self.plugins.task_type(type_name)
        found = cls, logging.getLogger(f"cyclone.task.{type_name}"), local_settings(cls, self.local)
        self._types[type_name] = found
        return found


def local_settings(
    task_type: type[Task], tables: Mapping[str, Mapping[str, Any]], *, where: str = "controller.local"
) -> Any:
    """What tasks of ``task_type`` get as ``ctx.local``: the ``[controller.local.<section>]``
    table it reads (:meth:`~cyclone_core.model.Task.local_table`; none: empty) built into its
    :attr:`~cyclone_core.model.Task.local_settings` class, or as a plain ``dict`` when it
    declares none.  A bad value raises :class:`ConfigError` naming ``where``, the table and
    the key (``controller.local.lustre.sudo: expected true or false, got 'maybe'``)."""
    section = task_type.local_table()
    table = dict(tables.get(section) or {})
    cls = task_type.local_settings
    if cls is None:
        return table
    known = attrs.fields_dict(cls)
    for key in table:
        if key not in known:
            raise ConfigError(f"{where}.{section}.{key}: unknown key (known: {', '.join(known)})")
    try:
        return converter.structure(table, cls)
    except (cattrs.BaseValidationError, ValueError, TypeError) as exc:
        raise ConfigError("; ".join(f"{where}.{section}.{line}" for line in describe_error(exc).split("; "))) from exc


def embedded_tables(tables: Mapping[str, Mapping[str, Any]], plugins: Plugins) -> dict[str, dict[str, Any]]:
    """The ``[controller.local.<section>]`` tables of an embedded run's controllers: the user's
    own, and for every section they leave out, the :attr:`~cyclone_core.model.Task.embedded_local`
    table of the installed task type that reads it."""
    found = {section: dict(table) for section, table in tables.items()}
    for cls in plugins.task_types().values():
        if cls.embedded_local is not None:
            found.setdefault(cls.local_table(), dict(cls.embedded_local))
    return found


def execute_task(task: Task, ctx: TaskContext) -> tuple[Status, str | None, Outcome | None]:
    """Run ``task.execute(ctx)`` and say how it ended: ``ok`` for ``None``, the outcome's own
    status for an :class:`Outcome`, ``failed`` with the exception as one line for a task that
    raised or returned something else.  ``SystemExit`` and the like are not caught: they end
    the worker, which the controller reports as a crash."""
    try:
        outcome = task.execute(ctx)
    except Exception as exc:
        ctx.log.debug("task %s failed", ctx.task_id, exc_info=True)
        return Status.FAILED, one_line_error(exc), None
    if outcome is None:
        return Status.OK, None, None
    if not isinstance(outcome, Outcome):
        return Status.FAILED, f"execute() returned {type(outcome).__name__}, expected an Outcome or None", None
    return outcome.status, outcome.error, outcome


def ended_row(
    task_id: str,
    type_name: str,
    key: str | None,
    attempt: int,
    *,
    status: Status,
    error: str,
    duration: float,
    controller: str,
) -> list[Any]:
    """The result row of a task that ended without a result of its own: killed at its timeout,
    or gone with the process that ran it.  It started ``duration`` seconds ago."""
    return result_to_row(
        Result(
            task_id=task_id,
            task_type=type_name,
            status=status,
            key=key,
            attempt=attempt,
            started_at=time.time() - duration,
            duration=duration,
            error=error,
            controller=controller,
        )
    )


def timed_out(timeout: float | None) -> str:
    """The error of a task killed at its timeout."""
    return f"timed out after {float(timeout or 0)} s"
