"""The ``cyclone`` command line: exit codes, one-line errors, ``plugins list``, ``plugin new``, the
progress line of ``cyclone run``.

Exit codes and error lines are checked on real ``cyclone`` processes; the rest goes through
typer's CliRunner, in process.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Sequence
from importlib.metadata import version
from pathlib import Path
from typing import Any, ClassVar

import attrs
import pytest
from typer.testing import CliRunner

from cyclone_core import ResultSink, Task, TaskGenerator, hookimpl
from cyclone_core.cli import app, load_commands
from cyclone_core.cli.engine_cmds import _ProgressLine
from cyclone_core.plugins import PluginInfo

ONLY_BUILTINS = {"CYCLONE_LOAD_PLUGINS": "builtins"}


@pytest.fixture(scope="module")
def runner() -> CliRunner:
    load_commands()
    return CliRunner()


# -- real processes ----------------------------------------------------------------------


def test_version(run_cyclone: Any) -> None:
    done = run_cyclone("--version", env=ONLY_BUILTINS)
    assert (done.returncode, done.stdout, done.stderr) == (0, f"cyclone {version('cyclone-core')}\n", "")


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (
            ["plugins", "list", "--jsn"],
            "error: No such option: --jsn (Possible options: --json) (see 'cyclone plugins list --help')",
        ),
        (["nope"], "error: No such command 'nope' (see 'cyclone --help')"),
        (["plugin", "new"], "error: Missing argument 'name' (see 'cyclone plugin new --help')"),
    ],
)
def test_usage_errors_are_one_line_and_exit_2(run_cyclone: Any, args: list[str], error: str) -> None:
    done = run_cyclone(*args, env=ONLY_BUILTINS)
    assert (done.returncode, done.stdout, done.stderr) == (2, "", error + "\n")


def test_no_arguments_shows_the_help_and_exits_2(run_cyclone: Any) -> None:
    done = run_cyclone(env=ONLY_BUILTINS)
    assert done.returncode == 2
    assert "plugins" in done.stdout
    assert done.stderr == ""


def test_user_errors_are_one_line_and_debug_shows_the_traceback(run_cyclone: Any, tmp_path: Path) -> None:
    done = run_cyclone("plugin", "new", "Bad_Name", "--dir", str(tmp_path), env=ONLY_BUILTINS)
    assert done.returncode == 2
    assert done.stderr == (
        "error: plugin name 'Bad_Name': use lower-case letters, digits and single hyphens, starting with a letter\n"
    )
    done = run_cyclone("--debug", "plugin", "new", "Bad_Name", "--dir", str(tmp_path), env=ONLY_BUILTINS)
    assert done.returncode == 2
    assert "Traceback (most recent call last)" in done.stderr
    assert "cyclone_core.errors.UsageError: plugin name 'Bad_Name'" in done.stderr


# -- plugins list ------------------------------------------------------------------------


@attrs.define(kw_only=True)
class _Task(Task):
    name: ClassVar[str] = "test-cli-task"


@attrs.define(kw_only=True)
class _Generator(TaskGenerator):
    name: ClassVar[str] = "test-cli-generator"


@attrs.define(kw_only=True)
class _Sink(ResultSink):
    name: ClassVar[str] = "test-cli-sink"


class _Plugin:
    @hookimpl
    def cyclone_task_types(self) -> Sequence[type[Task]]:
        return [_Task]

    @hookimpl
    def cyclone_generators(self) -> Sequence[type[TaskGenerator]]:
        return [_Generator]

    @hookimpl
    def cyclone_sinks(self) -> Sequence[type[ResultSink]]:
        return [_Sink]


class _BrokenPlugin:
    @hookimpl
    def cyclone_task_types(self) -> Sequence[type[Task]]:
        raise RuntimeError("no task types today")


def test_json_listing_shows_what_each_plugin_provides(
    runner: CliRunner, cyclone_register_plugin: Callable[..., PluginInfo]
) -> None:
    cyclone_register_plugin(_Plugin(), name="test-cli-plugin")
    cyclone_register_plugin(_BrokenPlugin(), name="test-cli-broken")
    done = runner.invoke(app, ["plugins", "list", "--json"])
    assert done.exit_code == 0, done.output
    rows = {row["plugin"]: row for row in json.loads(done.stdout)}
    assert rows["test-cli-plugin"] == {
        "plugin": "test-cli-plugin",
        "distribution": None,
        "version": None,
        "module": None,
        "task_types": ["test-cli-task"],
        "generators": ["test-cli-generator"],
        "sinks": ["test-cli-sink"],
        "commands": [],
        "hooks": ["cyclone_generators", "cyclone_sinks", "cyclone_task_types"],
        "status": "ok",
        "error": None,
    }
    assert rows["test-cli-broken"]["status"] == "broken"
    assert rows["test-cli-broken"]["error"] == "cyclone_task_types() failed: no task types today"
    builtins = rows["builtins"]
    assert builtins["distribution"] == "cyclone-core"
    # Sets: the registry lists repeat after an in-process re-registration (see Plugins._build).
    assert {"noop", "sleep", "fail", "crash", "hang", "command"} <= set(builtins["task_types"])
    assert set(builtins["generators"]) == {"benchmark", "tasks-file", "sweep", "queue"}
    assert set(builtins["sinks"]) == {"sqlite", "jsonl"}


def test_table_listing(runner: CliRunner, cyclone_register_plugin: Callable[..., PluginInfo]) -> None:
    cyclone_register_plugin(_BrokenPlugin(), name="test-cli-broken")
    done = runner.invoke(app, ["plugins", "list"], env={"COLUMNS": "250"})
    assert done.exit_code == 0, done.output
    (builtins,) = [line for line in done.stdout.splitlines() if "│ builtins " in line]
    assert "cyclone-core" in builtins
    assert "generators: benchmark, tasks-file" in done.stdout
    (broken,) = [line for line in done.stdout.splitlines() if "test-cli-broken" in line]
    assert "broken: cyclone_task_types() failed: no task types today" in broken


# -- plugin new --------------------------------------------------------------------------


@pytest.mark.parametrize("group", ["plugin", "plugins"])
def test_plugin_new_creates_the_project(runner: CliRunner, tmp_path: Path, group: str) -> None:
    done = runner.invoke(app, [group, "new", "cyclone-disk-probe", "--dir", str(tmp_path)])
    assert done.exit_code == 0, done.output
    project = tmp_path / "cyclone-disk-probe"
    assert done.stdout.splitlines()[0] == f"created {project}"
    assert sorted(str(p.relative_to(project)) for p in project.rglob("*") if p.is_file()) == [
        "README.md",
        "cyclone_disk_probe/__init__.py",
        "cyclone_disk_probe/generators.py",
        "cyclone_disk_probe/tasks.py",
        "pyproject.toml",
        "tests/test_cyclone_disk_probe.py",
    ]
    pyproject = (project / "pyproject.toml").read_text()
    assert '[project.entry-points.cyclone]\ndisk-probe = "cyclone_disk_probe"' in pyproject
    assert "class DiskProbeTask(Task):" in (project / "cyclone_disk_probe/tasks.py").read_text()


def test_plugin_new_defaults_to_the_current_directory(
    runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    done = runner.invoke(app, ["plugin", "new", "probe2"])
    assert done.exit_code == 0, done.output
    assert (tmp_path / "cyclone-probe2" / "cyclone_probe2" / "tasks.py").is_file()
    again = runner.invoke(app, ["plugin", "new", "probe2"])
    assert str(again.exception) == f"{Path('cyclone-probe2').absolute()} already exists: choose another name or --dir"


# -- the progress line of ``cyclone run`` ---------------------------------------------------


def _snapshot(done: int, submitted: int, *, total: int | None, exhausted: bool = False, rate: float = 0.0) -> Any:
    return {
        "succeeded": done,
        "failed": 0,
        "quarantined": 0,
        "submitted": submitted,
        "tasks_per_second": rate,
        "generator": {"exhausted": exhausted, "total": total},
    }


@pytest.mark.parametrize(
    ("snapshot", "shown"),
    [
        (_snapshot(0, 64, total=None), "0 done, 64 submitted  0 tasks/s"),
        (_snapshot(250, 400, total=1000, rate=50.0), f"[{'#' * 7}{'.' * 23}] 250/1,000  0m 15s left  50 tasks/s"),
        (_snapshot(1000, 1000, total=1000, rate=50.0), f"[{'#' * 30}] 1,000/1,000  50 tasks/s"),
        # Once the generator is exhausted, what it handed out is the total.
        (_snapshot(10, 20, total=None, exhausted=True), f"[{'#' * 15}{'.' * 15}] 10/20  0 tasks/s"),
        (_snapshot(0, 0, total=0), f"[{'#' * 30}] 0/0  0 tasks/s"),
    ],
)
def test_the_progress_line_shows_a_bar_when_the_total_is_known(snapshot: Any, shown: str) -> None:
    stream = io.StringIO()
    _ProgressLine(stream)(snapshot)
    assert stream.getvalue() == "\r" + shown
