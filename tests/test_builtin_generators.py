"""The built-in generators: ``benchmark`` and ``tasks-file``."""

from __future__ import annotations

import inspect
import itertools
import json
import textwrap
import tracemalloc
from pathlib import Path

import pytest

from cyclone_core import ConfigError, TaskGenerator, TaskSpec
from cyclone_core.builtins.generators import BenchmarkGenerator, QueueGenerator, TasksFileGenerator
from cyclone_core.builtins.tasks import FailTask, NoopTask, SleepTask
from cyclone_core.config import Config, GeneratorSettings, build_generator


def build(name: str, **options: object) -> TaskGenerator:
    return build_generator(Config(generator=GeneratorSettings(name=name, options=options)))


def build_error(name: str, **options: object) -> str:
    with pytest.raises(ConfigError) as caught:
        build(name, **options)
    message = str(caught.value)
    assert "\n" not in message
    return message


# -- benchmark -----------------------------------------------------------------------------


def test_benchmark_defaults_to_a_thousand_noop_tasks() -> None:
    generator = build("benchmark")
    assert isinstance(generator, BenchmarkGenerator)
    specs = list(generator.tasks())
    assert len(specs) == 1000
    assert specs[0] == TaskSpec(task=NoopTask(), key="0", timeout=None)
    assert specs[-1].key == "999"


def test_benchmark_runs_any_task_type_with_its_arguments() -> None:
    generator = build("benchmark", count=2, task="sleep", args={"seconds": "0.25"}, timeout=5)
    assert list(generator.tasks()) == [
        TaskSpec(task=SleepTask(seconds=0.25), key="0", timeout=5.0),
        TaskSpec(task=SleepTask(seconds=0.25), key="1", timeout=5.0),
    ]


def test_benchmark_hands_out_tasks_lazily() -> None:
    tracemalloc.start()
    try:
        generator = BenchmarkGenerator(count=10**8)
        tasks = generator.tasks()
        assert inspect.isgenerator(tasks)
        first = list(itertools.islice(tasks, 1000))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert [spec.key for spec in first[:3]] == ["0", "1", "2"]
    assert peak < 5_000_000  # a list of 10**8 specs would need gigabytes


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"task": "nope"}, "generator 'benchmark': task: unknown task type 'nope' (known: "),
        (
            {"task": "sleep", "args": {"seconds": "x"}},
            "generator 'benchmark': args: seconds: expected a number, got 'x'",
        ),
        ({"task": "sleep", "args": {"seconds": -1}}, "generator 'benchmark': args: seconds: must be >= 0, got -1.0"),
        ({"task": "sleep", "args": {"secs": 1}}, "generator 'benchmark': args: extra fields found (secs)"),
        ({"count": -1}, "generator 'benchmark': count: must be >= 0, got -1"),
        ({"timeout": 0}, "generator 'benchmark': timeout: must be > 0, got 0.0"),
    ],
)
def test_benchmark_validates_the_task_when_built(options: dict[str, object], message: str) -> None:
    assert build_error("benchmark", **options).startswith(message)


def test_benchmark_reads_a_2x_generator_file() -> None:
    sections = {"control": {"num_tasks": "1000", "poll_time_ms": "500"}}
    assert BenchmarkGenerator.legacy_options(sections) == {"count": 1000}
    assert BenchmarkGenerator.legacy_options({}) == {}
    with pytest.raises(ValueError, match=r"^\[lustre\]: not a section of a benchmark generator file"):
        BenchmarkGenerator.legacy_options({"lustre": {}})


# -- tasks-file ----------------------------------------------------------------------------

TASKS_TOML = """
    [templates.probe]
    type = "sleep"
    args = { seconds = 1 }
    timeout = 10

    [[tasks]]
    template = "probe"
    args = { seconds = 2 }
    key = "t1"
    timeout = 5

    [[tasks]]
    template = "probe"
    key = "t2"

    [[tasks]]
    type = "fail"
    args = { message = "expected" }
"""


def tasks_file(tmp_path: Path, text: str, name: str = "tasks.toml") -> str:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return str(path)


def test_tasks_file_applies_templates_and_overrides(tmp_path: Path) -> None:
    generator = build("tasks-file", path=tasks_file(tmp_path, TASKS_TOML))
    assert isinstance(generator, TasksFileGenerator)
    tasks = generator.tasks()
    assert inspect.isgenerator(tasks)
    assert list(tasks) == [
        TaskSpec(task=SleepTask(seconds=2.0), key="t1", timeout=5.0),
        TaskSpec(task=SleepTask(seconds=1.0), key="t2", timeout=10.0),
        TaskSpec(task=FailTask(message="expected"), key=None, timeout=None),
    ]


def test_tasks_file_reads_json_objects_and_lists(tmp_path: Path) -> None:
    document = {"templates": {"nap": {"type": "sleep"}}, "tasks": [{"template": "nap", "args": {"seconds": 3}}]}
    generator = build("tasks-file", path=tasks_file(tmp_path, json.dumps(document), "tasks.json"))
    assert list(generator.tasks()) == [TaskSpec(task=SleepTask(seconds=3.0))]
    listing = [{"type": "noop", "key": "a"}, {"type": "noop", "key": "b"}]
    generator = build("tasks-file", path=tasks_file(tmp_path, json.dumps(listing), "list.json"))
    assert [spec.key for spec in generator.tasks()] == ["a", "b"]


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (
            '[[tasks]]\ntype = "sleep"\nkey = "t1"\nargs = { seconds = -2 }\n',
            "tasks[0] (key 't1'): args: seconds: must be >= 0, got -2.0",
        ),
        ('[[tasks]]\ntype = "noop"\n[[tasks]]\ntype = "nope"\n', "tasks[1]: unknown task type 'nope' (known: "),
        ('[[tasks]]\ntemplate = "nope"\n', "tasks[0]: unknown template 'nope' (known: none)"),
        (
            '[templates.a]\ntype = "noop"\n[[tasks]]\ntemplate = "a"\ntype = "noop"\n',
            "tasks[0]: set template or type, not both",
        ),
        ("[[tasks]]\nkey = 'x'\n", "tasks[0] (key 'x'): set type (a registered task type) or template"),
        (
            '[[tasks]]\ntype = "noop"\nkey = "a"\n[[tasks]]\ntype = "noop"\nkey = "a"\n',
            "tasks[1] (key 'a'): key 'a' is also used by tasks[0]",
        ),
        ('[templates.a]\ntype = "nope"\n', "templates.a: unknown task type 'nope'"),
        ('[[tasks]]\ntype = "noop"\ntimeot = 3\n', "tasks[0]: extra fields found (timeot)"),
        ('[[tasks]]\ntype = "noop"\ntimeout = "soon"\n', "tasks[0].timeout: expected a number, got 'soon'"),
        ("[[tasks]\n", "invalid TOML: "),
    ],
)
def test_tasks_file_errors_name_the_file_and_the_task(tmp_path: Path, text: str, problem: str) -> None:
    path = tasks_file(tmp_path, text)
    assert build_error("tasks-file", path=path).startswith(f"generator 'tasks-file': {path}: {problem}")


def test_tasks_file_reports_a_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "missing.toml"
    message = build_error("tasks-file", path=str(path))
    assert message == f"generator 'tasks-file': {path}: cannot read: No such file or directory"
    assert build_error("tasks-file") == "generator 'tasks-file': path: required but missing"


def test_the_queue_hands_out_what_clients_submit_until_they_say_done() -> None:
    queue = QueueGenerator(max_waiting=3)
    tasks = queue.tasks()
    assert next(tasks) is None  # nothing waits: the master asks again later
    specs = [TaskSpec(task=NoopTask(), key=str(i)) for i in range(3)]
    queue.accept(specs[:2], done=False)
    with pytest.raises(ValueError, match="the queue is full: 2 tasks wait, at most 3"):
        queue.accept(specs, done=False)  # refused whole
    assert [next(tasks), next(tasks), next(tasks)] == [specs[0], specs[1], None]
    queue.accept(specs[2:], done=True)
    with pytest.raises(ValueError, match="queue is closed"):
        queue.accept(specs, done=False)
    assert list(tasks) == [specs[2]]
    assert not QueueGenerator.deterministic
