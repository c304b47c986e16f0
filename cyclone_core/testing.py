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
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, NoReturn, cast

import attrs
import msgpack
import pytest

from cyclone_core.convert import structure, unstructure
from cyclone_core.engine.execution import TaskRunner, ended_row, local_settings, timed_out
from cyclone_core.engine.protocol import (
    Dispatch,
    Results,
    TaskEnvelope,
    decode,
    encode,
    encode_results,
    envelope_to_row,
)
from cyclone_core.errors import ConfigError, one_line_error
from cyclone_core.model import Result, Status, Task, TaskSpec
from cyclone_core.plugins import PluginInfo, Plugins, get_plugins

__all__ = (
    "ClusterRun",
    "cyclone_cluster",
    "cyclone_plugins",
    "cyclone_register_plugin",
    "free_port",
    "run_cluster",
    "run_dispatched",
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


def run_task(
    task: Task | TaskSpec,
    timeout: float | None = None,
    *,
    local: Mapping[str, Mapping[str, Any]] | None = None,
) -> Result:
    """Run ``task`` in this process the way a worker runs it, and return its :class:`Result`.

    The task takes the path of a dispatched task: it is turned into a wire message and back,
    rebuilt as its *registered* task type and run by the same code as in a worker process
    (:class:`~cyclone_core.engine.execution.TaskRunner`), so a task whose plugin is not
    installed, or whose fields do not survive the wire, fails here as it would in a run.
    ``execute`` gets a :class:`TaskContext`.  The result goes through the same checks as in a
    run too: one that is not plain data or exceeds the size limit makes the task ``failed``,
    saying why; the result you get is the one the master would decode.  Its status is ``ok``,
    ``failed``, ``timeout`` once ``timeout`` seconds have passed, or ``crashed`` for a task
    that raised ``SystemExit`` (which ends a worker).

    ``local`` plays the controller's ``[controller.local.<section>]`` tables, written as in a
    configuration file (``{"lustre": {"lfs": "/usr/bin/lfs"}}``): the task gets its table as
    ``ctx.local``, built into its ``local_settings`` class as a controller builds it; a bad
    table raises :class:`ConfigError` as a controller refuses to start with it.

    A task that outlives its timeout keeps running in a background thread (a worker process
    would be killed); a task that kills its own process kills the test process.

    :param task: the task, or a spec whose key and timeout are used.
    :param timeout: seconds the task may run; default: the spec's, else unlimited.
    :param local: the controller's local settings tables; default: none.
    """
    spec = task if isinstance(task, TaskSpec) else TaskSpec(task=task)
    timeout = spec.timeout if timeout is None else timeout
    return run_dispatched(
        type(spec.task).name, unstructure(spec.task), key=spec.key, timeout=timeout, local=local, where="run_task"
    )


def run_dispatched(
    task_type: str,
    args: Any,
    *,
    key: str | None = None,
    timeout: float | None = None,
    local: Mapping[str, Mapping[str, Any]] | None = None,
    where: str = "run_dispatched",
) -> Result:
    """Run a task as a master may dispatch it, its registered type name and its fields as
    plain data, in this process the way a worker runs it; return its :class:`Result`.

    :func:`run_task` does this with a task's own fields.  This is for what no generator of
    yours would send but a peer could: an unknown field (``{"path": "/x", "lfs_bin":
    "/tmp/evil"}``) or a bad value, which must fail the task, saying why, before ``execute``
    runs.  Arguments as :func:`run_task`'s.
    """
    plugins = get_plugins()
    try:
        registered = plugins.task_type(task_type)
    except ConfigError as exc:
        raise ConfigError(
            f"{exc}: install the plugin that provides it (pip install -e .) or register it with cyclone_register_plugin"
        ) from None
    tables = dict(local or {})
    local_settings(registered, tables, where=f"{where}(local=...)")
    envelope = TaskEnvelope(id=f"test-{uuid.uuid4().hex[:12]}", type=task_type, args=args, timeout=timeout, key=key)
    (received,) = cast(Dispatch, decode(encode(Dispatch(tasks=[envelope])))).tasks
    row = _run(TaskRunner("in-process", plugins, local=tables), received)
    (result,) = cast(Results, decode(encode_results([row], credit=0))).results
    return result


def _run(runner: TaskRunner, envelope: TaskEnvelope) -> list[Any]:
    """The result row of ``envelope`` run by ``runner``, in a thread so that its timeout can
    end the wait."""
    done: list[list[Any]] = []
    start = time.monotonic()

    def ended(status: Status, error: str) -> list[Any]:
        duration = time.monotonic() - start
        return ended_row(
            envelope.id,
            envelope.type,
            envelope.key,
            envelope.attempt,
            status=status,
            error=error,
            duration=duration,
            controller=runner.controller_id,
        )

    def target() -> None:
        try:
            done.append(msgpack.unpackb(runner.run(envelope_to_row(envelope))))
        except BaseException as exc:  # SystemExit and the like end a worker: a crash
            done.append(ended(Status.CRASHED, one_line_error(exc)))

    thread = threading.Thread(target=target, name=f"cyclone-task-{envelope.id}", daemon=True)
    thread.start()
    thread.join(envelope.timeout)
    if thread.is_alive():
        return ended(Status.TIMEOUT, timed_out(envelope.timeout))
    return done[0]


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
    sinks: dict[str, dict[str, Any]] | None = None,
    local: dict[str, dict[str, Any]] | None = None,
    progress: Callable[[dict[str, Any]], None] | None = None,
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
    :param sinks: more sinks, name to options (a ``[sinks]`` table), beside the ``jsonl`` sink
        whose file :attr:`ClusterRun.results` reads: to test a sink plugin in a whole run.
    :param local: the controllers' ``[controller.local.<section>]`` tables (``{"lustre":
        {"lfs": ...}}``), as in :func:`run_task`.
    :param progress: called with the master's status snapshot (what ``cyclone status``
        shows: counters, controllers, each sink's backlog and last error) about once a second.
    """
    import json  # noqa: PLC0415  (kept out of pytest start-up, like the engine)

    from cyclone_core.config import (  # noqa: PLC0415
        Config,
        ControllerSettings,
        GeneratorSettings,
        MasterSettings,
        controller_task_types,
    )
    from cyclone_core.engine.local import run_local  # noqa: PLC0415

    results_file = Path(directory) / "results.jsonl"
    config = Config(
        master=structure(master or {}, MasterSettings, where="run_cluster(master=...)"),
        controller=structure({"local": local or {}}, ControllerSettings, where="run_cluster(local=...)"),
        generator=GeneratorSettings(name=generator, options=dict(options or {})),
        sinks={**(sinks or {}), "jsonl": {"path": str(results_file), "flush_interval": 0.05}},
    )
    config.master.journal = str(Path(directory) / "journal.sqlite")
    controller_task_types(config.controller, where="run_cluster")  # a bad table: one line here, not a dead controller
    code, summary = run_local(config, controllers=controllers, workers=workers, progress=progress)
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
