"""Options of the ``file-create`` generator and task, as config files and ``-g KEY=VALUE`` give them."""

from __future__ import annotations

import os

import pytest
from cyclone_core import ConfigError, get_plugins
from cyclone_core.convert import parse_scalar, structure, unstructure
from cyclone_lustre_ost.discovery import parse_rangeset

from cyclone_file_create import FileCreateGenerator, FileCreateTask

WHERE = "generator 'file-create'"


def from_command_line(*pairs: str) -> FileCreateGenerator:
    """What ``-g KEY=VALUE ...`` turns into."""
    options = {key: parse_scalar(value) for key, _, value in (pair.partition("=") for pair in pairs)}
    return structure(options, FileCreateGenerator, where=WHERE)


def test_command_line_values_are_typed() -> None:
    generator = from_command_line(
        "path=/lustre/fs1/monitor",
        "osts=0-11,20",
        "mdts=3",
        "interval=30",
        "rounds=1",
        "timeout_ms=2500",
        "sudo=yes",
        "create_dirs=false",
        "mode=lustre",
        "mdt_dir_prefix=mdt_",
        "lfs_bin=/usr/bin/lfs",
    )
    assert generator.path == "/lustre/fs1/monitor"
    assert parse_rangeset(generator.osts) == [*range(12), 20]
    assert generator.mdts == "3"  # "-g mdts=3" arrives as a number
    assert (generator.interval, generator.rounds, generator.timeout_ms) == (30.0, 1, 2500)
    assert generator.sudo is True
    assert generator.create_dirs is False
    assert (generator.mode, generator.mdt_dir_prefix, generator.lfs_bin) == ("lustre", "mdt_", "/usr/bin/lfs")


def test_defaults() -> None:
    generator = from_command_line("path=/scratch")
    assert (generator.osts, generator.mdts) == ("", "")  # all
    assert (generator.interval, generator.rounds, generator.timeout_ms) == (60.0, 0, 10_000)
    assert (generator.mode, generator.create_dirs, generator.mdt_dir_prefix, generator.sudo) == (
        "auto",
        True,
        "mdt",
        False,
    )


def test_relative_path_becomes_absolute(tmp_path, monkeypatch) -> None:
    # Tasks run elsewhere, with another working directory.
    monkeypatch.chdir(tmp_path)
    assert from_command_line("path=sub/dir").path == os.path.join(str(tmp_path), "sub", "dir")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({}, "path: required but missing"),
        ({"path": ""}, "path: must not be empty"),
        ({"path": "/x", "osts": "1-x"}, "osts: '1-x' is not a RangeSet of OST indexes such as '0-11,20'"),
        ({"path": "/x", "mdts": "3-1"}, "mdts: '3-1' is not a RangeSet"),
        ({"path": "/x", "interval": -5}, "interval: must be at least 0, got -5.0"),
        ({"path": "/x", "interval": "soon"}, "interval: expected a number, got 'soon'"),
        ({"path": "/x", "rounds": -1}, "rounds: must be at least 0, got -1"),
        ({"path": "/x", "timeout_ms": 0}, "timeout_ms: must be at least 1, got 0"),
        ({"path": "/x", "timeout_ms": 2.5}, "timeout_ms: expected a whole number, got 2.5"),
        ({"path": "/x", "mode": "fast"}, "mode: must be one of auto, lustre, plain, got 'fast'"),
        ({"path": "/x", "create_dirs": "maybe"}, "create_dirs: expected true or false, got 'maybe'"),
        ({"path": "/x", "mdt_dir_prefix": "a/b"}, "mdt_dir_prefix: must be a non-empty directory name prefix"),
        ({"path": "/x", "count": 0}, "count: must be at least 1, got 0"),
        ({"path": "/x", "ost": "1"}, "extra fields found (ost)"),
    ],
)
def test_bad_option_gives_one_line(options, message) -> None:
    with pytest.raises(ConfigError) as caught:
        structure(options, FileCreateGenerator, where=WHERE)
    text = str(caught.value)
    assert text.startswith(f"{WHERE}: ")
    assert message in text
    assert "\n" not in text


def test_task_round_trips_as_plain_data() -> None:
    task = FileCreateTask(path="/lfs/mon", mode="lustre", fsname="fs1", mdt_index=1, ost_index=10, ost_active=False)
    data = unstructure(task)
    assert data["ost_index"] == 10
    assert structure(data, FileCreateTask, where="task 'file-create'") == task


def test_task_rejects_auto_mode() -> None:
    # "auto" is resolved by the generator; a task is told what it checks.
    with pytest.raises(ConfigError, match="mode: must be one of lustre, plain, got 'auto'"):
        structure({"path": "/x", "mode": "auto"}, FileCreateTask, where="task 'file-create'")


def test_registered_through_the_entry_point() -> None:
    plugins = get_plugins()
    assert plugins.task_type("file-create") is FileCreateTask
    assert plugins.generator("file-create") is FileCreateGenerator
    assert FileCreateGenerator.deterministic is False
