"""The fixtures and helpers plugin authors test with (cyclone_core.testing)."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import attrs
import pytest

from cyclone_core import ConfigError, Metric, Outcome, Status, Task, TaskContext, TaskSpec, hookimpl
from cyclone_core.builtins.tasks import FailTask, NoopTask, SleepTask
from cyclone_core.engine.execution import MAX_RESULT_BYTES
from cyclone_core.plugins import PluginInfo
from cyclone_core.testing import run_dispatched, run_task


@attrs.define(kw_only=True)
class MeasureTask(Task):
    name: ClassVar[str] = "test-measure"
    value: float = 1.0
    report: str = "outcome"

    def execute(self, ctx: TaskContext) -> Any:
        if self.report == "failed":
            return Outcome(status=Status.FAILED, error="misplaced object")
        if self.report == "wrong":
            return 42
        if self.report == "unsendable":
            return Outcome(payload={"values": {1, 2}})
        if self.report == "exit":
            raise SystemExit(3)
        if self.report == "local":
            return Outcome(payload={"local": ctx.local})
        if self.report == "huge":  # 16 MiB: within a message to the master, over a result's limit
            return Outcome(payload={"blob": "x" * (16 * 1024 * 1024)})
        return Outcome(
            metrics=[Metric("test_value", self.value, labels={"task": ctx.task_id})],
            payload={"attempt": ctx.attempt, "timeout": ctx.timeout},
        )


@attrs.frozen(kw_only=True)
class Tools:
    """A task type's local settings: what only the controller decides."""

    program: str = "/bin/true"
    repeat: int = attrs.field(default=1, validator=attrs.validators.ge(1))


@attrs.define(kw_only=True)
class ToolTask(Task):
    """Reports the program its controller configured."""

    name: ClassVar[str] = "test-tool"
    local_section: ClassVar[str] = "tools"
    local_settings: ClassVar[type[Any] | None] = Tools

    def execute(self, ctx: TaskContext) -> Outcome:
        tools: Tools = ctx.local
        return Outcome(payload={"program": tools.program, "repeat": tools.repeat})


class MeasurePlugin:
    @hookimpl
    def cyclone_task_types(self) -> Sequence[type[Task]]:
        return [MeasureTask, ToolTask]


@pytest.fixture
def measure_plugin(cyclone_register_plugin: Callable[..., PluginInfo]) -> None:
    info = cyclone_register_plugin(MeasurePlugin(), name="test-measure-plugin")
    assert info.status == "ok", info.error


def test_a_task_that_succeeds() -> None:
    result = run_task(NoopTask())
    assert result.status is Status.OK
    assert result.task_type == "noop"
    assert result.task_id.startswith("test-")
    assert result.error is None
    assert result.attempt == 1
    assert result.started_at > 0
    assert result.duration >= 0


def test_a_task_that_raises_fails_with_the_exception_as_error() -> None:
    result = run_task(FailTask(message="boom"))
    assert result.status is Status.FAILED
    assert result.error == "RuntimeError: boom"


def test_a_task_past_its_timeout_times_out() -> None:
    result = run_task(SleepTask(seconds=2), timeout=0.1)
    assert result.status is Status.TIMEOUT
    assert result.error == "timed out after 0.1 s"
    assert 0.1 <= result.duration < 2


def test_a_spec_gives_key_and_timeout() -> None:
    result = run_task(TaskSpec(task=SleepTask(seconds=2), key="slow", timeout=0.1))
    assert result.key == "slow"
    assert result.status is Status.TIMEOUT


@pytest.mark.usefixtures("measure_plugin")
def test_metrics_and_payload_reach_the_result() -> None:
    result = run_task(MeasureTask(value=2.5), timeout=30)
    assert result.status is Status.OK, result.error
    assert result.metrics == [Metric("test_value", 2.5, labels={"task": result.task_id})]
    assert result.payload == {"attempt": 1, "timeout": 30}


@pytest.mark.usefixtures("measure_plugin")
@pytest.mark.parametrize(
    ("report", "status", "error"),
    [
        ("failed", Status.FAILED, "misplaced object"),
        ("wrong", Status.FAILED, "execute() returned int, expected an Outcome or None"),
        ("exit", Status.CRASHED, "SystemExit: 3"),
    ],
)
def test_what_a_task_reports_sets_status_and_error(report: str, status: Status, error: str) -> None:
    result = run_task(MeasureTask(report=report))
    assert (result.status, result.error) == (status, error)


@pytest.mark.usefixtures("measure_plugin")
def test_a_result_that_cannot_travel_fails_the_task() -> None:
    result = run_task(MeasureTask(report="unsendable"))
    assert result.status is Status.FAILED
    assert result.error is not None
    assert result.error.startswith("the task's result is not plain data: ")


@pytest.mark.usefixtures("measure_plugin")
def test_a_result_over_the_size_limit_fails_the_task_as_in_a_run() -> None:
    result = run_task(MeasureTask(report="huge"))
    assert (result.status, result.payload) == (Status.FAILED, None)
    assert result.error is not None
    assert re.fullmatch(rf"the task's result takes \d+ bytes; at most {MAX_RESULT_BYTES} are allowed", result.error)


def test_loading_the_pytest_plugin_does_not_import_zeromq() -> None:
    # pytest imports cyclone_core.testing in every test session of every project that has
    # cyclone-core installed (the pytest11 entry point).
    code = "import sys, cyclone_core.testing; print(sorted(m for m in sys.modules if m.split('.')[0] == 'zmq'))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert done.stdout == "[]\n"


@pytest.mark.usefixtures("measure_plugin")
def test_local_settings_reach_the_task_built_into_its_class() -> None:
    result = run_task(ToolTask(), local={"tools": {"program": "/usr/bin/env", "repeat": "3"}})
    assert (result.status, result.payload) == (Status.OK, {"program": "/usr/bin/env", "repeat": 3})
    assert run_task(ToolTask()).payload == {"program": "/bin/true", "repeat": 1}  # no table: the defaults


@pytest.mark.usefixtures("measure_plugin")
def test_a_task_type_without_a_settings_class_gets_its_table_as_a_dict() -> None:
    result = run_task(MeasureTask(report="local"), local={"test-measure": {"greeting": "hi"}})
    assert result.payload == {"local": {"greeting": "hi"}}


@pytest.mark.usefixtures("measure_plugin")
def test_bad_local_settings_are_one_line_naming_table_and_key() -> None:
    with pytest.raises(ConfigError) as caught:
        run_task(ToolTask(), local={"tools": {"repeat": 0}})
    assert str(caught.value) == "run_task(local=...).tools.repeat: must be >= 1, got 0"
    with pytest.raises(ConfigError) as caught:
        run_task(ToolTask(), local={"tools": {"programme": "/bin/sh"}})
    assert str(caught.value) == "run_task(local=...).tools.programme: unknown key (known: program, repeat)"


@pytest.mark.usefixtures("measure_plugin")
def test_a_dispatched_task_naming_a_program_is_refused_before_it_runs() -> None:
    result = run_dispatched("test-tool", {"program": "/tmp/evil"}, local={"tools": {"program": "/bin/true"}})
    assert result.status is Status.FAILED
    assert result.payload is None
    assert result.error is not None
    assert result.error.startswith("arguments of task type 'test-tool': ")
    assert "program" in result.error


def test_an_unregistered_task_type_is_explained() -> None:
    with pytest.raises(ConfigError, match=r"^unknown task type 'test-measure' .*: install the plugin that provides it"):
        run_task(MeasureTask())


def test_the_fixtures_are_loaded_for_plugin_tests_and_clean_up(tmp_path: Path) -> None:
    # A plugin's own test suite, run as its author runs it: the fixtures come from the pytest11
    # entry point, and a plugin registered in one test is gone in the next.
    (tmp_path / "test_plugin.py").write_text(
        textwrap.dedent(
            """
            from typing import ClassVar

            import attrs

            from cyclone_core import Status, Task, get_plugins, hookimpl
            from cyclone_core.testing import run_dispatched, run_task


            @attrs.define(kw_only=True)
            class Hello(Task):
                name: ClassVar[str] = "test-hello"

                def execute(self, ctx):
                    return None


            class Plugin:
                @hookimpl
                def cyclone_task_types(self):
                    return [Hello]


            def test_registered(cyclone_register_plugin):
                assert cyclone_register_plugin(Plugin(), name="hello").status == "ok"
                assert run_task(Hello()).status is Status.OK


            def test_gone_again():
                assert "test-hello" not in get_plugins().task_types()
            """
        )
    )
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 passed" in done.stdout


def test_cyclone_cluster_runs_a_generator_end_to_end(cyclone_cluster) -> None:
    run = cyclone_cluster("benchmark", {"count": 20, "task": "sleep", "args": {"seconds": 0.01}})
    assert run.exit_code == 0
    assert run.summary["succeeded"] == 20
    assert sorted(r["key"] for r in run.results) == sorted(str(i) for i in range(20))
    assert {r["status"] for r in run.results} == {"ok"}


def test_cyclone_cluster_reports_crashes_as_quarantined(cyclone_cluster) -> None:
    run = cyclone_cluster("benchmark", {"count": 2, "task": "crash"}, master={"max_crash_retries": 1})
    assert run.exit_code == 1
    assert [r["status"] for r in run.results] == ["quarantined", "quarantined"]
    assert all(len(r["history"]) == 2 for r in run.results)
