"""Built-in task generators: ``benchmark`` (one task, many times), ``tasks-file`` (tasks
listed in a TOML or JSON file), ``sweep`` (one task template over a parameter grid or rows)
and ``queue`` (tasks submitted by clients attached to the master, :mod:`cyclone_core.api`).

Each checks its tasks when it is built, so a bad task type or argument fails before the run
with one line naming the task, and each hands tasks out lazily: a sweep of ten million points
is expanded one point at a time (:mod:`cyclone_core.builtins.sweep`).
"""

from __future__ import annotations

import json
import tomllib
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import attrs

from cyclone_core.builtins.sweep import Sweep, expand, placeholders
from cyclone_core.convert import structure
from cyclone_core.errors import CycloneError
from cyclone_core.model import Task, TaskGenerator, TaskSpec
from cyclone_core.plugins import get_plugins

__all__ = ("BenchmarkGenerator", "QueueGenerator", "SweepGenerator", "TasksFileGenerator")

T = TypeVar("T")

_positive_or_none = attrs.validators.optional(attrs.validators.gt(0))


def _build(data: Any, cls: type[T], where: str) -> T:
    # Raised as ValueError so that building the generator through the converter reports it
    # prefixed with the generator's name, like any other bad option.
    try:
        return structure(data, cls, where=where)
    except CycloneError as exc:
        raise ValueError(str(exc)) from None


def _task_class(type_name: str, where: str) -> type[Task]:
    try:
        return get_plugins().task_type(type_name)
    except CycloneError as exc:
        raise ValueError(f"{where}: {exc}") from None


@attrs.define(kw_only=True)
class BenchmarkGenerator(TaskGenerator):
    """``count`` copies of one task, keyed ``0`` to ``count - 1``.

    With the default ``noop`` task it measures the engine's own overhead; with any other
    registered task type it runs that task many times.  Every spec shares one task object
    (tasks are plain data and never changed), so an endless-looking ``count`` costs no memory.

    :param count: how many tasks.
    :param task: registered name of the task type.
    :param args: the task's fields, as a table (``{seconds = 0.1}``).
    :param timeout: seconds each task may run; unset uses the run's default.
    """

    name: ClassVar[str] = "benchmark"
    legacy_class: ClassVar[str] = "BenchmarkTaskGenerator"

    count: int = attrs.field(default=1000, validator=attrs.validators.ge(0))
    task: str = "noop"
    args: dict[str, Any] = attrs.field(factory=dict)
    timeout: float | None = attrs.field(default=None, validator=_positive_or_none)
    _template: Task = attrs.field(init=False, repr=False, eq=False)

    def __attrs_post_init__(self) -> None:
        self._template = _build(self.args, _task_class(self.task, "task"), "args")

    @classmethod
    def legacy_options(cls, sections: Mapping[str, Mapping[str, str]]) -> dict[str, Any]:
        """A 2.x benchmark file: ``[control] num_tasks`` is ``count``; ``poll_time_ms`` is
        accepted and ignored (results reach the generator without polling)."""
        options: dict[str, Any] = {}
        for section, values in sections.items():
            if section != "control":
                raise ValueError(f"[{section}]: not a section of a benchmark generator file (known: control)")
            for key, raw in values.items():
                if key == "num_tasks":
                    if not raw.strip().isdigit():
                        raise ValueError(f"control.num_tasks: expected a whole number, got {raw!r}")
                    options["count"] = int(raw)
                elif key != "poll_time_ms":
                    raise ValueError(f"control.{key}: unknown key (known: num_tasks, poll_time_ms)")
        return options

    def tasks(self) -> Iterator[TaskSpec]:
        """Yield the specs one at a time."""
        for index in range(self.count):
            yield TaskSpec(task=self._template, key=str(index), timeout=self.timeout)

    def total(self) -> int:
        """``count``."""
        return self.count


# -- tasks-file ------------------------------------------------------------------------------


@attrs.define(kw_only=True)
class _Template:
    type: str
    args: dict[str, Any] = attrs.field(factory=dict)
    timeout: float | None = attrs.field(default=None, validator=_positive_or_none)


@attrs.define(kw_only=True)
class _Entry:
    template: str | None = None
    type: str | None = None
    args: dict[str, Any] = attrs.field(factory=dict)
    key: str | None = None
    timeout: float | None = attrs.field(default=None, validator=_positive_or_none)
    grid: dict[str, Any] | None = None
    rows: list[dict[str, Any]] | None = None
    rows_file: str | None = None


@attrs.define(kw_only=True)
class _TasksFile:
    templates: dict[str, _Template] = attrs.field(factory=dict)
    tasks: list[_Entry] = attrs.field(factory=list)


@attrs.define(kw_only=True)
class TasksFileGenerator(TaskGenerator):
    """The tasks listed in a TOML or JSON file (the modern form of Cyclone 2.x's XML task file).

    A file has named ``templates`` (a task type, its arguments and a timeout) and a list of
    ``tasks``; each task names a ``template`` or a ``type`` and may override ``args`` (merged
    over the template's, key by key), ``timeout`` and give a ``key``::

        [templates.probe]
        type = "sleep"
        args = { seconds = 1 }

        [[tasks]]
        template = "probe"
        args = { seconds = 2 }
        key = "t1"
        timeout = 5

        [[tasks]]
        type = "noop"

    A task with a ``grid``, ``rows`` or ``rows_file`` is a sweep: it stands for one task per
    point, its ``args`` and ``key`` templates filled in with the point's parameters (see
    :class:`SweepGenerator`).  A JSON file holds the same object, or just the list of tasks.
    Keys must be unique.

    :param path: the file; ``.json`` is read as JSON, anything else as TOML.
    """

    name: ClassVar[str] = "tasks-file"

    path: str
    _entries: list[_Expansion] = attrs.field(init=False, repr=False, eq=False)

    def __attrs_post_init__(self) -> None:
        self._entries = _read_tasks_file(Path(self.path))

    def tasks(self) -> Iterator[TaskSpec]:
        """Yield the file's tasks in file order, a sweep's one point at a time."""
        for entry in self._entries:
            yield from entry.specs()

    def total(self) -> int:
        """The number of tasks in the file, a sweep's points counted."""
        return sum(len(entry) for entry in self._entries)


def _read_tasks_file(path: Path) -> list[_Expansion]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: cannot read: {getattr(exc, 'strerror', None) or exc}") from None
    try:
        data: Any = json.loads(text) if path.suffix.lower() == ".json" else tomllib.loads(text)
    except ValueError as exc:  # both decode errors are ValueErrors
        raise ValueError(f"{path}: invalid {'JSON' if path.suffix.lower() == '.json' else 'TOML'}: {exc}") from None
    if isinstance(data, list):
        data = {"tasks": data}
    parsed = _build(data, _TasksFile, str(path))
    for name, template in parsed.templates.items():
        _task_class(template.type, f"{path}: templates.{name}")
    entries: list[_Expansion] = []
    seen: dict[str, int] = {}
    for index, entry in enumerate(parsed.tasks):
        where = f"{path}: tasks[{index}]" + (f" (key {entry.key!r})" if entry.key is not None else "")
        if entry.key is not None:
            if entry.key in seen:
                raise ValueError(f"{where}: key {entry.key!r} is also used by tasks[{seen[entry.key]}]")
            seen[entry.key] = index
        entries.append(_resolve(entry, parsed.templates, where))
    return entries


def _resolve(entry: _Entry, templates: Mapping[str, _Template], where: str) -> _Expansion:
    if entry.template is None:
        if entry.type is None:
            raise ValueError(f"{where}: set type (a registered task type) or template")
        type_name, args, timeout = entry.type, entry.args, entry.timeout
    else:
        if entry.type is not None:
            raise ValueError(f"{where}: set template or type, not both")
        template = templates.get(entry.template)
        if template is None:
            known = ", ".join(sorted(templates)) or "none"
            raise ValueError(f"{where}: unknown template {entry.template!r} (known: {known})")
        type_name = template.type
        args = {**template.args, **entry.args}
        timeout = template.timeout if entry.timeout is None else entry.timeout
    cls = _task_class(type_name, where)
    if entry.grid is None and entry.rows is None and entry.rows_file is None:
        return _Expansion(cls, args, entry.key, timeout, sweep=None, where=where)
    try:
        sweep = Sweep(entry.grid, entry.rows, entry.rows_file)
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None
    return _Expansion(cls, args, entry.key, timeout, sweep=sweep, where=where)


# -- sweeps ------------------------------------------------------------------------------------


class _Expansion:
    """One task, or one task per point of a sweep: its type, its ``args`` and ``key`` as
    templates, checked when made; the tasks are built as they are handed out."""

    def __init__(
        self,
        cls: type[Task],
        args: dict[str, Any],
        key: str | None,
        timeout: float | None,
        *,
        sweep: Sweep | None,
        where: str,
    ) -> None:
        self.cls, self.args, self.key, self.timeout, self.sweep, self.where = cls, args, key, timeout, sweep, where
        if sweep is None:
            self.task = _build(args, cls, f"{where}: args")
            return
        known = set(sweep.names)
        try:
            named = [*placeholders(args, "args"), *placeholders(key or "", "key")]
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from None
        for path, name in named:
            if name not in known:
                raise ValueError(
                    f"{where}: {path}: {{{name}}} is not a parameter (parameters: {', '.join(sweep.names)})"
                )
        # The command task keeps its point's parameters in its result, to be queried.
        self.with_params = "params" in attrs.fields_dict(cls) and "params" not in args
        self._task(next(iter(sweep)))  # a bad template fails now, not in the middle of the run

    def __len__(self) -> int:
        return 1 if self.sweep is None else len(self.sweep)

    def specs(self) -> Iterator[TaskSpec]:
        """The specs, one per point."""
        if self.sweep is None:
            yield TaskSpec(task=self.task, key=self.key, timeout=self.timeout)
            return
        for point in self.sweep:
            yield TaskSpec(task=self._task(point), key=self._key(point), timeout=self.timeout)

    def _task(self, point: dict[str, Any]) -> Task:
        where = f"{self.where}: point {self._key(point)}"
        try:
            args = expand(self.args, point)
        except (ValueError, KeyError, IndexError, AttributeError) as exc:
            raise ValueError(f"{where}: args: {exc}") from None
        if self.with_params:
            args["params"] = point
        return _build(args, self.cls, f"{where}: args")

    def _key(self, point: dict[str, Any]) -> str:
        if self.key is None:
            return ",".join(f"{name}={value}" for name, value in point.items())
        try:
            return str(expand(self.key, point))
        except (ValueError, KeyError, IndexError, AttributeError) as exc:
            raise ValueError(f"{self.where}: key: {exc}") from None


@attrs.define(kw_only=True)
class SweepGenerator(TaskGenerator):
    """One task template expanded over every point of a parameter sweep.

    ``cyclone run --generator sweep -g 'argv=["./simulate", "--alpha", "{alpha}"]' -g
    'grid={"alpha": [0.1, 0.2], "seed": "1-100"}'`` runs ``./simulate`` 200 times.  The points
    are every row (``rows`` or ``rows_file``) combined with every point of ``grid``; a grid
    list is taken literally, a string is a range of whole numbers in ClusterShell's RangeSet
    notation.  Strings of ``args`` (and ``argv``, and ``key``) name parameters as ``{alpha}``:
    alone, the value itself; in a longer string, formatted (``"out-{seed:03d}.txt"``).  A
    ``command`` task keeps its point in its result (``payload.params``).

    :param task: registered name of the task type.
    :param args: the task's fields, as a template.
    :param argv: the ``command`` task's ``argv`` (the same as ``args.argv``).
    :param grid: parameter name to its values: a list, or a range such as ``"1-100"``.
    :param rows: a list of tables of parameters.
    :param rows_file: a CSV file whose first line names the parameters, one row per line.
    :param key: the tasks' key, as a template; default: ``alpha=0.1,seed=3``.
    :param timeout: seconds each task may run; unset uses the run's default.
    """

    name: ClassVar[str] = "sweep"

    task: str = "command"
    args: dict[str, Any] = attrs.field(factory=dict)
    argv: list[str] | None = None
    grid: dict[str, Any] = attrs.field(factory=dict)
    rows: list[dict[str, Any]] | None = None
    rows_file: str | None = None
    key: str | None = None
    timeout: float | None = attrs.field(default=None, validator=_positive_or_none)
    _expansion: _Expansion = attrs.field(init=False, repr=False, eq=False)

    def __attrs_post_init__(self) -> None:
        args = dict(self.args)
        if self.argv is not None:
            if "argv" in args:
                raise ValueError("give argv or args.argv, not both")
            args["argv"] = self.argv
        if not self.grid and self.rows is None and self.rows_file is None:
            raise ValueError("give the parameters: grid, rows or rows_file")
        sweep = Sweep(self.grid, self.rows, self.rows_file)
        task = _task_class(self.task, "task")
        self._expansion = _Expansion(task, args, self.key, self.timeout, sweep=sweep, where="sweep")

    def tasks(self) -> Iterator[TaskSpec]:
        """Yield one spec per point, made as it is taken."""
        return self._expansion.specs()

    def total(self) -> int:
        """The number of points."""
        return len(self._expansion)


# -- queue -------------------------------------------------------------------------------------


@attrs.define(kw_only=True)
class QueueGenerator(TaskGenerator):
    """The tasks that clients submit to the master (``Client.submit`` of :mod:`cyclone_core.api`).

    It yields what was submitted, in order, and ``None`` while nothing waits (the master asks
    again a bit later); it is done once a client submitted with ``done=True`` and everything
    submitted was handed out.  Not deterministic: a master resumed from its journal runs again
    the tasks the journal still holds, but what waited here is gone.

    :param max_waiting: tasks waiting to be handed out at most; a submission beyond is refused
        whole (nothing of it is taken).
    """

    name: ClassVar[str] = "queue"
    deterministic: ClassVar[bool] = False

    max_waiting: int = attrs.field(default=100_000, validator=attrs.validators.ge(1))
    _waiting: deque[TaskSpec] = attrs.field(init=False, factory=deque, repr=False, eq=False)
    _done: bool = attrs.field(init=False, default=False, repr=False, eq=False)

    def accept(self, specs: Sequence[TaskSpec], done: bool) -> None:
        """Queue ``specs``; ``done``: no more tasks come after these.

        :raises ValueError: the queue is closed (a client said ``done``), or ``specs`` do not
            fit in it; nothing of ``specs`` is queued then.
        """
        if self._done:
            raise ValueError("this master's queue is closed: a client submitted its last tasks (done=True)")
        if len(self._waiting) + len(specs) > self.max_waiting:
            raise ValueError(
                f"the queue is full: {len(self._waiting)} tasks wait, at most {self.max_waiting}; submit again later"
            )
        self._waiting.extend(specs)
        self._done = done

    def tasks(self) -> Iterator[TaskSpec | None]:
        """What was submitted, ``None`` while nothing waits; ends once ``done`` and empty."""
        waiting = self._waiting
        while True:
            if waiting:
                yield waiting.popleft()
            elif self._done:
                return
            else:
                yield None

    def total(self) -> int | None:
        """Unknown: clients may submit more."""
        return None
