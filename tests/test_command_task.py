"""The ``command`` task type: real programs, the controller's allowlist, output and metrics."""

from __future__ import annotations

import os
import re
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest

from cyclone_core import Metric, Status
from cyclone_core.builtins.command import CommandTask, parse_metric
from cyclone_core.errors import ConfigError
from cyclone_core.testing import run_dispatched, run_task


def local(tmp_path: Path, **table: Any) -> dict[str, dict[str, Any]]:
    return {"command": {"executables": ["*"], "cwd_roots": [str(tmp_path)], **table}}


def script(tmp_path: Path, text: str, name: str = "job.sh") -> Path:
    path = tmp_path / name
    path.write_text("#!/bin/sh\n" + text)
    path.chmod(0o755)
    return path


def test_exit_zero_is_ok_with_output_tails_and_metrics(tmp_path: Path) -> None:
    job = script(
        tmp_path,
        'echo "start $1"\n'
        "echo cyclone-metric sim_energy_joules 12.5 alpha=$1 phase=final\n"
        "echo cyclone-metric sim_steps 300\n"
        "echo warning >&2\n",
    )
    result = run_task(CommandTask(argv=[str(job), "0.1"], params={"alpha": 0.1}), local=local(tmp_path))
    assert result.status is Status.OK, result.error
    assert result.metrics == [
        Metric("sim_energy_joules", 12.5, labels={"alpha": "0.1", "phase": "final"}),
        Metric("sim_steps", 300.0),
    ]
    assert result.payload == {
        "argv": [str(job), "0.1"],
        "exit_code": 0,
        "stdout": (
            "start 0.1\ncyclone-metric sim_energy_joules 12.5 alpha=0.1 phase=final\ncyclone-metric sim_steps 300\n"
        ),
        "stderr": "warning\n",
        "params": {"alpha": 0.1},
    }


def test_a_nonzero_exit_fails_with_the_end_of_stderr(tmp_path: Path) -> None:
    job = script(tmp_path, "echo one >&2\necho 'ValueError: alpha   too big' >&2\nexit 3\n")
    result = run_task(CommandTask(argv=[str(job)]), local=local(tmp_path))
    assert (result.status, result.error) == (Status.FAILED, "exit code 3: ValueError: alpha too big")
    assert result.payload is not None
    assert result.payload["exit_code"] == 3


def test_a_command_killed_by_a_signal_says_which(tmp_path: Path) -> None:
    result = run_task(CommandTask(argv=["sh", "-c", "kill -SEGV $$"]), local=local(tmp_path))
    assert (result.status, result.error) == (Status.FAILED, "killed by SIGSEGV")


def test_only_the_tail_of_the_output_is_kept(tmp_path: Path) -> None:
    code = "import sys; sys.stdout.write('x' * 100000 + 'END'); sys.stderr.write('e' * 5000)"
    result = run_task(CommandTask(argv=[sys.executable, "-c", code], tail="1K"), local=local(tmp_path))
    assert result.status is Status.OK, result.error
    assert result.payload is not None
    assert result.payload["stdout"] == "x" * 1021 + "END"
    assert result.payload["stderr"] == "e" * 1024


def test_stdin_cwd_and_a_clean_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CYCLONE_TEST_SECRET", "do not pass")
    (tmp_path / "sub").mkdir()
    job = 'read line; echo "$line"; pwd; env | sort'
    task = CommandTask(argv=["sh", "-c", job], stdin="hello\n", cwd=str(tmp_path / "sub"), env={"OMP_NUM_THREADS": "4"})
    result = run_task(task, local=local(tmp_path))
    assert result.status is Status.OK, result.error
    assert result.payload is not None
    lines = result.payload["stdout"].splitlines()
    assert lines[:2] == ["hello", str(tmp_path / "sub")]
    env = dict(line.split("=", 1) for line in lines[2:] if "=" in line)
    assert env["OMP_NUM_THREADS"] == "4"
    assert env["PATH"] == os.environ["PATH"]
    assert env["CYCLONE_TASK_ID"].startswith("test-")
    assert "CYCLONE_TEST_SECRET" not in env
    assert set(env) <= {"PATH", "HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR", "PWD",
                        "OMP_NUM_THREADS", "CYCLONE_TASK_ID", "CYCLONE_ATTEMPT", "SHLVL", "_"}  # fmt: skip


def test_a_shell_command_line_takes_its_parameters_as_positional_arguments(tmp_path: Path) -> None:
    task = CommandTask(argv=['printf "%s|" "$1" "$2"', "a b", "$(touch x)"], shell=True, cwd=str(tmp_path))
    result = run_task(task, local=local(tmp_path))
    assert result.status is Status.OK, result.error
    assert result.payload is not None
    assert result.payload["stdout"] == "a b|$(touch x)|"
    assert not (tmp_path / "x").exists()


def test_command_is_off_unless_the_controller_allows_programs(tmp_path: Path) -> None:
    result = run_task(CommandTask(argv=["true"]))
    assert result.status is Status.FAILED
    assert result.error == (
        "task type 'command' is off on this controller: allow programs in [controller.local.command] executables"
    )


def test_argv0_outside_the_allowlist_is_refused_in_one_line(tmp_path: Path) -> None:
    true = shutil.which("true")
    assert true is not None
    allowed = {"command": {"executables": [os.path.realpath(true)]}}
    assert run_task(CommandTask(argv=["true"]), local=allowed).status is Status.OK
    refused = run_task(CommandTask(argv=["rm", "-rf", str(tmp_path)]), local=allowed)
    assert refused.status is Status.FAILED
    rm = os.path.realpath(shutil.which("rm") or "")
    assert refused.error == (
        f"argv[0] 'rm' ({rm}) is not an allowed executable on this controller (controller.local.command.executables)"
    )
    assert tmp_path.exists()
    # A link to a refused program is judged by what it points to, and the shell must be allowed.
    (tmp_path / "true").symlink_to(rm)
    assert "is not an allowed executable" in (
        run_task(CommandTask(argv=[str(tmp_path / "true")]), local=allowed).error or ""
    )
    shell = run_task(CommandTask(argv=["true"], shell=True), local=allowed)
    assert shell.error is not None
    assert shell.error.startswith("the shell (")


def test_patterns_in_the_allowlist(tmp_path: Path) -> None:
    job = script(tmp_path, "exit 0\n")
    allowed = {"command": {"executables": [f"{tmp_path}/*"]}}
    assert run_task(CommandTask(argv=[str(job)]), local=allowed).status is Status.OK
    assert run_task(CommandTask(argv=["true"]), local=allowed).status is Status.FAILED


def test_cwd_must_be_under_a_root_and_refused_variables_stay_out(tmp_path: Path) -> None:
    outside = run_task(CommandTask(argv=["true"], cwd="/"), local=local(tmp_path))
    assert outside.error == (f"cwd '/' is outside the allowed roots {tmp_path} (controller.local.command.cwd_roots)")
    escape = run_task(CommandTask(argv=["true"], cwd=str(tmp_path / "..")), local=local(tmp_path))
    assert escape.status is Status.FAILED
    none = run_task(CommandTask(argv=["true"], cwd=str(tmp_path)), local={"command": {"executables": ["*"]}})
    assert none.error is not None
    assert "no cwd_roots allowed" in none.error
    for name in ("LD_PRELOAD", "PATH"):
        refused = run_task(CommandTask(argv=["true"], env={name: "/tmp/x"}), local=local(tmp_path))
        assert refused.error == f"env: {name} may not be set by a task here (controller.local.command.refuse_env)"
    allowed = run_task(CommandTask(argv=["true"], env={"PATH": "/bin"}), local=local(tmp_path, refuse_env=[]))
    assert allowed.status is Status.OK


def test_a_missing_program_and_a_bad_metric_line_are_one_line_errors(tmp_path: Path) -> None:
    missing = run_task(CommandTask(argv=["no-such-program-here"]), local=local(tmp_path))
    assert missing.error is not None
    assert missing.error.startswith("argv[0] 'no-such-program-here': not found in PATH")
    bad = run_task(CommandTask(argv=["sh", "-c", "echo ok; echo cyclone-metric x_seconds fast"]), local=local(tmp_path))
    assert (bad.status, bad.error) == (Status.FAILED, "stdout line 2: cyclone-metric x_seconds: 'fast' is not a number")


def test_metric_lines() -> None:
    assert parse_metric("cyclone-metric a:b_c 1e3 x=1 y=") == Metric("a:b_c", 1000.0, labels={"x": "1", "y": ""})
    for line, problem in [
        ("cyclone-metric x", re.escape("expected 'cyclone-metric NAME VALUE [label=value ...]'")),
        ("cyclone-metric 9x 1", "is not a metric name"),
        ("cyclone-metric x nan", "is not a finite number"),
        ("cyclone-metric x 1 label", "is not a label=value pair"),
    ]:
        with pytest.raises(ValueError, match=problem):
            parse_metric(line)


def test_fields_and_settings_are_checked_strictly(tmp_path: Path) -> None:
    empty = run_dispatched("command", {"argv": []}, local=local(tmp_path))
    assert empty.status is Status.FAILED
    assert empty.error is not None
    assert "argv" in empty.error
    smuggled = run_dispatched("command", {"argv": ["true"], "executables": ["*"]}, local=local(tmp_path))
    assert smuggled.status is Status.FAILED
    assert smuggled.error is not None
    assert "executables" in smuggled.error
    with pytest.raises(ConfigError, match=r"command\.cwd_roots: must be absolute paths"):
        run_task(CommandTask(argv=["true"]), local={"command": {"executables": ["*"], "cwd_roots": ["relative"]}})
