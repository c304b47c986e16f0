"""Sweeps: RangeSet ranges, grids and rows expanded lazily into tasks, by the ``sweep`` and
``tasks-file`` generators."""

from __future__ import annotations

import itertools
import textwrap
import tracemalloc
from pathlib import Path

import pytest

from cyclone_core import ConfigError, TaskGenerator, TaskSpec
from cyclone_core.builtins.command import CommandTask
from cyclone_core.builtins.sweep import Sweep, expand, parse_range
from cyclone_core.builtins.tasks import SleepTask
from cyclone_core.config import Config, GeneratorSettings, build_generator


def build(name: str, **options: object) -> TaskGenerator:
    return build_generator(Config(generator=GeneratorSettings(name=name, options=options)))


def build_error(name: str, **options: object) -> str:
    with pytest.raises(ConfigError) as caught:
        build(name, **options)
    assert "\n" not in str(caught.value)
    return str(caught.value)


def test_ranges_in_rangeset_notation() -> None:
    assert list(parse_range("1-3,7,10-20/5")) == [1, 2, 3, 7, 10, 15, 20]
    assert list(parse_range("08-11")) == ["08", "09", "10", "11"]
    assert len(parse_range("1-10000000")) == 10_000_000
    assert parse_range("1-10000000")[-1] == 10_000_000
    for bad in ["", "1-", "a-b", "5-1", "1-10/0", "1,,2"]:
        with pytest.raises(ValueError, match="range"):
            parse_range(bad)


def test_a_sweep_is_rows_times_grid_in_order() -> None:
    sweep = Sweep({"seed": "1-2", "mode": ["fast", "slow"]}, rows=[{"alpha": 0.1}, {"alpha": 0.2}])
    assert sweep.names == ["alpha", "seed", "mode"]
    assert len(sweep) == 8
    points = list(sweep)
    assert points[:3] == [
        {"alpha": 0.1, "seed": 1, "mode": "fast"},
        {"alpha": 0.1, "seed": 1, "mode": "slow"},
        {"alpha": 0.1, "seed": 2, "mode": "fast"},
    ]
    assert points[-1] == {"alpha": 0.2, "seed": 2, "mode": "slow"}


def test_templates_keep_a_lone_value_and_format_the_rest() -> None:
    point = {"alpha": 0.5, "seed": 7}
    template = {"argv": ["sim", "{alpha}", "out-{seed:03d}.txt", "{{literal}}"], "n": "{seed}", "x": 1}
    assert expand(template, point) == {"argv": ["sim", 0.5, "out-007.txt", "{literal}"], "n": 7, "x": 1}


def test_the_sweep_generator_runs_a_command_per_point_with_its_parameters() -> None:
    generator = build(
        "sweep",
        argv=["./simulate", "--alpha", "{alpha}", "--seed", "{seed}"],
        grid={"alpha": [0.1, 0.2], "seed": "1-100"},
        timeout=60,
    )
    assert generator.total() == 200
    specs = list(generator.tasks())
    assert len(specs) == 200
    assert specs[0] == TaskSpec(
        task=CommandTask(argv=["./simulate", "--alpha", "0.1", "--seed", "1"], params={"alpha": 0.1, "seed": 1}),
        key="alpha=0.1,seed=1",
        timeout=60.0,
    )
    assert specs[-1].key == "alpha=0.2,seed=100"
    assert len({spec.key for spec in specs}) == 200


def test_any_task_type_sweeps_with_a_key_template() -> None:
    generator = build("sweep", task="sleep", args={"seconds": "{s}"}, grid={"s": "0-2"}, key="sleep-{s}")
    assert list(generator.tasks()) == [TaskSpec(task=SleepTask(seconds=float(n)), key=f"sleep-{n}") for n in range(3)]


def test_a_grid_of_ten_million_points_is_walked_not_stored() -> None:
    tracemalloc.start()
    try:
        generator = build("sweep", argv=["./sim", "{a}", "{b}"], grid={"a": "1-1000", "b": "1-10000"})
        assert generator.total() == 10_000_000
        tasks = generator.tasks()
        for _ in itertools.islice(tasks, 10_000):
            pass
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 5_000_000


def test_rows_from_a_csv_file(tmp_path: Path) -> None:
    rows = tmp_path / "rows.csv"
    rows.write_text("input,alpha\na.dat,0.1\nb.dat,0.2\n")
    generator = build("sweep", argv=["./sim", "{input}", "{alpha}"], rows_file=str(rows), grid={"seed": [1, 2]})
    assert generator.total() == 4
    tasks = [spec.task for spec in generator.tasks()]
    assert isinstance(tasks[3], CommandTask)
    assert tasks[3].argv == ["./sim", "b.dat", "0.2"]
    assert tasks[3].params == {"input": "b.dat", "alpha": "0.2", "seed": 2}


@pytest.mark.parametrize(
    ("options", "problem"),
    [
        (
            {"argv": ["x", "{alph}"], "grid": {"alpha": [1]}},
            "args.argv[1]: {alph} is not a parameter (parameters: alpha)",
        ),
        ({"argv": ["x"], "grid": {"a": "1-x"}}, "grid.a: '1-x' is not a range"),
        ({"argv": ["x"]}, "give the parameters: grid, rows or rows_file"),
        ({"argv": ["x", "{a"], "grid": {"a": [1]}}, "args.argv[1]: '{a': expected '}' before end of string"),
        ({"argv": ["x"], "grid": {"a": []}}, "grid.a: an empty list gives no points"),
        ({"argv": ["x"], "grid": {"a": [1]}, "rows": [{"a": 2}]}, "parameter a is in the rows and in the grid"),
        (
            {"task": "sleep", "args": {"seconds": "{s}"}, "grid": {"s": ["x"]}},
            "point s=x: args: seconds: expected a number",
        ),
        ({"argv": ["x"], "grid": {"a": [1]}, "rows_file": "/no/such.csv"}, "/no/such.csv: cannot read"),
    ],
)
def test_sweep_errors_are_one_line_naming_the_option(options: dict[str, object], problem: str) -> None:
    message = build_error("sweep", **options)
    assert message.startswith("generator 'sweep': ")
    assert problem in message


def test_a_tasks_file_entry_with_a_grid_is_a_sweep(tmp_path: Path) -> None:
    path = tmp_path / "sweep.toml"
    path.write_text(
        textwrap.dedent(
            """
            [templates.sim]
            type = "command"
            args = { argv = ["./simulate", "--alpha", "{alpha}", "--seed", "{seed}"] }
            timeout = 30

            [[tasks]]
            template = "sim"
            grid = { alpha = [0.1, 0.2], seed = "1-3" }

            [[tasks]]
            type = "noop"
            key = "{not-a-template}"
            """
        )
    )
    generator = build("tasks-file", path=str(path))
    assert generator.total() == 7
    specs = list(generator.tasks())
    assert [spec.key for spec in specs[:2]] == ["alpha=0.1,seed=1", "alpha=0.1,seed=2"]
    assert specs[0].timeout == 30.0
    assert specs[5].task == CommandTask(
        argv=["./simulate", "--alpha", "0.2", "--seed", "3"], params={"alpha": 0.2, "seed": 3}
    )
    assert specs[6].key == "{not-a-template}"  # no sweep, no templating


def test_a_tasks_file_sweep_error_names_the_task(tmp_path: Path) -> None:
    path = tmp_path / "sweep.toml"
    path.write_text('[[tasks]]\ntype = "command"\nargs = { argv = ["x", "{b}"] }\ngrid = { a = "1-3" }\n')
    message = build_error("tasks-file", path=str(path))
    assert message == (
        f"generator 'tasks-file': {path}: tasks[0]: args.argv[1]: {{b}} is not a parameter (parameters: a)"
    )


@pytest.mark.parametrize("text", ["1-3,7,10-20/5", "0-90/10", "08-11", "1-5,8,13", "5", "001-120/7"])
def test_ranges_read_as_clustershell_reads_them(text: str) -> None:
    rangeset = pytest.importorskip("ClusterShell.RangeSet")
    assert sorted(str(value) for value in parse_range(text)) == sorted(rangeset.RangeSet(text))
