"""Built-in task generators: ``benchmark`` (one task, many times) and ``tasks-file`` (tasks
listed in a TOML or JSON file).

Both build and validate every task when the generator is built, so a bad task type or argument
fails before the run with one line naming the task, and both hand tasks out lazily.
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import attrs

from cyclone_core.convert import structure
from cyclone_core.errors import CycloneError
from cyclone_core.model import Task, TaskGenerator, TaskSpec
from cyclone_core.plugins import get_plugins

__all__ = ("BenchmarkGenerator", "TasksFileGenerator")

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

    A JSON file holds the same object, or just the list of tasks.  Keys must be unique.

    :param path: the file; ``.json`` is read as JSON, anything else as TOML.
    """

    name: ClassVar[str] = "tasks-file"

    path: str
    _specs: list[TaskSpec] = attrs.field(init=False, repr=False, eq=False)

    def __attrs_post_init__(self) -> None:
        self._specs = _read_tasks_file(Path(self.path))

    def tasks(self) -> Iterator[TaskSpec]:
        """Yield the file's tasks in file order."""
        yield from self._specs

    def total(self) -> int:
        """The number of tasks in the file."""
        return len(self._specs)


def _read_tasks_file(path: Path) -> list[TaskSpec]:
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
    specs: list[TaskSpec] = []
    seen: dict[str, int] = {}
    for index, entry in enumerate(parsed.tasks):
        where = f"{path}: tasks[{index}]" + (f" (key {entry.key!r})" if entry.key is not None else "")
        if entry.key is not None:
            if entry.key in seen:
                raise ValueError(f"{where}: key {entry.key!r} is also used by tasks[{seen[entry.key]}]")
            seen[entry.key] = index
        specs.append(_resolve(entry, parsed.templates, where))
    return specs


def _resolve(entry: _Entry, templates: Mapping[str, _Template], where: str) -> TaskSpec:
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
    task = _build(args, _task_class(type_name, where), f"{where}: args")
    return TaskSpec(task=task, key=entry.key, timeout=timeout)
