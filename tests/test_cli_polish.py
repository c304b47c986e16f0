"""Rough edges of the ``cyclone`` command line, checked on real ``cyclone`` processes."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from cyclone_core.config import check_endpoint
from cyclone_core.errors import UsageError
from cyclone_core.plural import plural

ONLY_BUILTINS = {"CYCLONE_LOAD_PLUGINS": "builtins"}


def test_a_run_that_ends_before_its_controller_registered_stops_it(run_cyclone: Any, tmp_path: Path) -> None:
    started = time.monotonic()
    done = run_cyclone("run", "-g", "count=0", env=ONLY_BUILTINS, cwd=tmp_path)
    print(f"cyclone run -g count=0 took {time.monotonic() - started:.2f} s")
    assert done.returncode == 0, done.stderr
    assert "0 succeeded" in done.stdout
    # The controller that never registered is stopped at once, not waited out and then terminated.
    assert "did not exit" not in done.stderr


def test_debug_after_the_sub_command_shows_the_traceback(run_cyclone: Any, tmp_path: Path) -> None:
    done = run_cyclone("plugin", "new", "Bad_Name", "--dir", str(tmp_path), "--debug", env=ONLY_BUILTINS)
    assert done.returncode == 2
    assert "Traceback (most recent call last)" in done.stderr
    assert "cyclone_core.errors.UsageError: plugin name 'Bad_Name'" in done.stderr


def _help(run_cyclone: Any, *command: str) -> str:
    done = run_cyclone(*command, "--help", env=ONLY_BUILTINS)
    assert done.returncode == 0, done.stderr
    return " ".join(done.stdout.split())  # wrapped lines joined


def test_help_shows_bracketed_text_literally_and_flags_without_a_value(run_cyclone: Any) -> None:
    run_help = _help(run_cyclone, "run")
    assert "Local controllers to start. [default: 1; x>=1]" in run_help
    assert "--json Print the summary as one JSON object." in run_help
    master_help = _help(run_cyclone, "master")
    assert "--insecure Plaintext without keys" in master_help
    assert "<bool>" not in run_help + master_help
    allow_help = _help(run_cyclone, "keys", "allow")
    assert "Name of the grant [default: from --ids, else from the key]." in allow_help


def test_counts_of_one_are_singular(run_cyclone: Any, tmp_path: Path) -> None:
    done = run_cyclone("run", "-g", "count=1", "--workers", "1", env=ONLY_BUILTINS, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert ": 1 task in " in done.stdout
    done = run_cyclone("results", env=ONLY_BUILTINS, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stderr == "1 result\n"


def test_plural() -> None:
    assert [plural(count, "controller") for count in (0, 1, 2, 1000)] == [
        "0 controllers",
        "1 controller",
        "2 controllers",
        "1,000 controllers",
    ]


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["status", "--master", "head01:5678"], "--master 'head01:5678': expected TRANSPORT://ADDRESS"),
        (["status", "--master", "tcp://127.0.0.1:65536"], "the port must be a number from 1 to 65535"),
        (
            ["controller", "--master", "tcp://no-such-host.invalid:5678"],
            "cannot resolve the host 'no-such-host.invalid'",
        ),
        (["master", "--bind", "tcp://*:70000", "--insecure"], "--bind 'tcp://*:70000': the port must be a number"),
        (["master", "--bind", "127.0.0.1:5678", "--insecure"], "--bind '127.0.0.1:5678': expected TRANSPORT://"),
    ],
)
def test_a_bad_endpoint_is_one_line_and_exit_2(run_cyclone: Any, tmp_path: Path, args: list[str], error: str) -> None:
    done = run_cyclone(*args, env=ONLY_BUILTINS, cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.startswith("error: ")
    assert error in done.stderr
    assert done.stderr.count("\n") == 1


@pytest.mark.parametrize(
    ("endpoint", "bind"),
    [
        ("tcp://127.0.0.1:5678", False),
        ("tcp://localhost:1", False),
        ("tcp://[::1]:5678", False),
        ("tcp://*:5678", True),
        ("tcp://127.0.0.1:*", True),
        ("tcp://127.0.0.1:0", True),
        ("tcp://lo:5678", True),
        ("ipc:///tmp/cyclone/master", False),
    ],
)
def test_good_endpoints_pass(endpoint: str, bind: bool) -> None:
    check_endpoint(endpoint, "--master", bind=bind)


def test_a_connect_endpoint_needs_a_host_and_a_port() -> None:
    with pytest.raises(UsageError, match="the port must be a number from 1 to 65535"):
        check_endpoint("tcp://127.0.0.1:*", "--master")
