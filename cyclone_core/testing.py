"""Pytest fixtures and helpers for Cyclone plugin authors.

Loaded automatically through the ``pytest11`` entry point, so a plugin's tests can use the
fixtures without importing anything::

    def test_my_probe(tmp_path):
        result = run_task(MyProbe(path=str(tmp_path)))  # from cyclone_core.testing import run_task
        assert result.status is Status.OK, result.error

    def test_with_an_extra_plugin(cyclone_register_plugin):
        cyclone_register_plugin(MyTestPlugin(), name="my-test-plugin")
        ...

    def test_a_whole_run(cyclone_cluster):
        run = cyclone_cluster("my-generator", {"count": 3})
        assert run.exit_code == 0 and len(run.results) == 3
"""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NoReturn, TypeVar, cast

import attrs
import pytest

from cyclone_core.convert import structure, unstructure
from cyclone_core.engine.protocol import Dispatch, Results, TaskEnvelope, decode, encode
from cyclone_core.engine.workers import execute_task
from cyclone_core.errors import ConfigError, one_line_error
from cyclone_core.model import Outcome, Result, Status, Task, TaskContext, TaskSpec
from cyclone_core.plugins import PluginInfo, Plugins, get_plugins

__all__ = (
    "ClusterRun",
    "cyclone_cluster",
    "cyclone_plugins",
    "cyclone_register_plugin",
    "free_port",
    "run_cluster",
    "run_task",
    "unavailable",
    "wait_until",
)


def wait_until(condition: Callable[[], Any], timeout: float = 30.0, what: str = "condition") -> Any:
    """Call ``condition`` until it returns something true, and return that; fail the test
    after ``timeout`` seconds naming ``what``.  Polls quickly at first, then every 0.1 s."""
    deadline = time.monotonic() + timeout
    delay = 0.005
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(delay)
        delay = min(delay * 2, 0.1)


def free_port() -> int:
    """A loopback TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def unavailable(reason: str) -> NoReturn:
    """A server or program a test needs is missing: skip the test, or fail it under CI
    (``CI=true``), where a missing server is a broken set-up rather than a choice."""
    if os.environ.get("CI", "").strip().lower() == "true":
        pytest.fail(f"{reason} (required when CI=true)")
    pytest.skip(reason)


@pytest.fixture
def cyclone_plugins() -> Iterator[Plugins]:
    """The process-wide plugin registry; plugins registered on it are removed afterwards."""
    plugins = get_plugins()
    before = {info.name for info in plugins.infos()}
    yield plugins
    for info in plugins.infos():
        if info.name not in before:
            plugins.unregister(info.name)


@pytest.fixture
def cyclone_register_plugin(cyclone_plugins: Plugins) -> Callable[..., PluginInfo]:
    """Register a plugin object (a module, class instance or namespace with ``@hookimpl``
    functions) for the duration of one test; returns its ``cyclone plugins list`` entry::

        info = cyclone_register_plugin(MyPlugin(), name="my-plugin")
        assert info.status == "ok", info.error
    """

    def register(plugin: object, name: str | None = None) -> PluginInfo:
        return cyclone_plugins.register(plugin, name=name)

    return register


def run_task(task: Task | TaskSpec, timeout: float | None = None) -> Result:
    """Run ``task`` in this process the way a worker runs it, and return its :class:`Result`.

    Like a dispatched task it travels as plain data: it is turned into a wire message and back
    and rebuilt as its *registered* task type, so a task whose plugin is not installed, or
    whose fields do not survive the wire, fails here as it would in a run.  ``execute`` gets a
    :class:`TaskContext`; the result has the status (``ok``, ``failed``, or ``timeout`` once
    ``timeout`` seconds have passed), the error line, metrics, payload and duration, and it too
    makes the round trip through the wire format.

    A task that outlives its timeout keeps running in a background thread (a worker process
    would be killed); a task that kills its own process kills the test process.

    :param task: the task, or a spec whose key and timeout are used.
    :param timeout: seconds the task may run; default: the spec's, else unlimited.
    """
    spec = task if isinstance(task, TaskSpec) else TaskSpec(task=task)
    timeout = spec.timeout if timeout is None else timeout
    type_name = type(spec.task).name
    try:
        cls = get_plugins().task_type(type_name)
    except ConfigError as exc:
        raise ConfigError(
            f"{exc}: install the plugin that provides it (pip install -e .) or register it with cyclone_register_plugin"
        ) from None
    task_id = f"test-{uuid.uuid4().hex[:12]}"
    envelope = TaskEnvelope(id=task_id, type=type_name, args=unstructure(spec.task), timeout=timeout, key=spec.key)
    (received,) = _round_trip(Dispatch(tasks=[envelope])).tasks
    ctx = TaskContext(task_id=task_id, attempt=1, timeout=timeout)

    started_at, start = time.time(), time.monotonic()
    status: Status
    error: str | None
    outcome: Outcome | None
    try:
        instance = structure(received.args, cls, where=f"arguments of task type '{type_name}'")
    except ConfigError as exc:  # fields that do not survive the wire: the worker fails the task
        status, error, outcome = Status.FAILED, str(exc), None
    else:
        status, error, outcome = _execute(instance, ctx, timeout)
    result = Result(
        task_id=task_id,
        task_type=type_name,
        status=status,
        key=spec.key,
        started_at=started_at,
        duration=time.monotonic() - start,
        error=error,
        metrics=list(outcome.metrics) if outcome else [],
        payload=outcome.payload if outcome else None,
        controller="in-process",
    )
    try:
        (sent,) = _round_trip(Results(results=[result])).results
    except (TypeError, ValueError) as exc:  # msgpack refuses what is not plain data
        problem = f"the task's result is not plain data: {exc}"
        return attrs.evolve(result, status=Status.FAILED, error=problem, metrics=[], payload=None)
    return sent


_Message = TypeVar("_Message", Dispatch, Results)


def _round_trip(message: _Message) -> _Message:
    """``message`` as the other end of the wire decodes it."""
    return cast(_Message, decode(encode(message)))


def _execute(task: Task, ctx: TaskContext, timeout: float | None) -> tuple[Status, str | None, Outcome | None]:
    """Run the task as a worker does, in a thread so that a timeout can end the wait."""
    done: dict[str, Any] = {}

    def target() -> None:
        try:
            done["value"] = execute_task(task, ctx)
        except BaseException as exc:  # SystemExit and the like end a worker: a crash
            done["value"] = Status.CRASHED, one_line_error(exc), None

    thread = threading.Thread(target=target, name=f"cyclone-task-{ctx.task_id}", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        return Status.TIMEOUT, f"timed out after {timeout:g} s", None
    return cast(tuple[Status, str | None, Outcome | None], done["value"])


# -- a real cluster for one test ------------------------------------------------------------


@attrs.frozen
class ClusterRun:
    """What :func:`run_cluster` saw: the exit code ``cyclone run`` would give, the run's
    summary, and every result as stored by a ``jsonl`` sink (plain dicts, one per task)."""

    exit_code: int
    summary: dict[str, Any]
    results: list[dict[str, Any]]


def run_cluster(
    generator: str,
    options: dict[str, Any] | None = None,
    *,
    directory: str | Path,
    controllers: int = 1,
    workers: int = 2,
    master: dict[str, Any] | None = None,
) -> ClusterRun:
    """Run ``generator`` to completion on a real master with ``controllers`` local controllers
    (separate processes, ZeroMQ over loopback, ``workers`` worker processes each), the way
    ``cyclone run`` does, and return what happened.

    The controllers and workers load plugins from their entry points, so the plugin under test
    must be installed (``pip install -e .``); plugins registered in-process are not seen there.

    :param generator: a registered generator name.
    :param options: its options.
    :param directory: where the results file and the journal go (a ``tmp_path``).
    :param master: ``[master]`` settings to override (``{"max_crash_retries": 0}``).
    """
    import json  # noqa: PLC0415  (kept out of pytest start-up, like the engine)

    from cyclone_core.config import Config, GeneratorSettings, MasterSettings  # noqa: PLC0415
    from cyclone_core.engine.local import run_local  # noqa: PLC0415

    results_file = Path(directory) / "results.jsonl"
    config = Config(
        master=structure(master or {}, MasterSettings, where="run_cluster(master=...)"),
        generator=GeneratorSettings(name=generator, options=dict(options or {})),
        sinks={"jsonl": {"path": str(results_file), "flush_interval": 0.05}},
    )
    config.master.journal = str(Path(directory) / "journal.sqlite")
    code, summary = run_local(config, controllers=controllers, workers=workers)
    lines = results_file.read_text().splitlines() if results_file.exists() else []
    return ClusterRun(code, summary, [json.loads(line) for line in lines])


@pytest.fixture
def cyclone_cluster(tmp_path: Path) -> Callable[..., ClusterRun]:
    """Run a generator end to end on a real, local cluster; see :func:`run_cluster`::

    def test_probe_round(cyclone_cluster):
        run = cyclone_cluster("my-probe", {"path": "/tmp", "rounds": 1})
        assert run.exit_code == 0
        assert {r["status"] for r in run.results} == {"ok"}
    """

    def run(generator: str, options: dict[str, Any] | None = None, **kwargs: Any) -> ClusterRun:
        return run_cluster(generator, options, directory=tmp_path, **kwargs)

    return run
