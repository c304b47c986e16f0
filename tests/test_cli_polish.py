"""Rough edges of the ``cyclone`` command line, checked on real ``cyclone`` processes."""

from __future__ import annotations

import contextlib
import os
import pty
import re
import select
import shutil
import signal
import socket
import sqlite3
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from cyclone_core.config import Config, apply_overrides, check_endpoint, load_config
from cyclone_core.errors import ConfigError, UsageError
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


def _help(run_cyclone: Any, *command: str, env: dict[str, str] = ONLY_BUILTINS) -> str:
    done = run_cyclone(*command, "--help", env=env)
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


def test_help_of_plugin_commands_shows_bracketed_text(run_cyclone: Any) -> None:
    assert "Where to create the project directory [default: here]." in _help(run_cyclone, "plugin", "new")
    mysql_help = _help(run_cyclone, "mysql", "create-table", env={})  # a plugin's command
    assert "its [sinks.mysql] table holds the options" in mysql_help
    assert "<bool>" not in mysql_help


# -- shell completion ---------------------------------------------------------------------------


def _complete(run_cyclone: Any, words: str) -> list[str]:
    cword = str(len(words.split()) - (0 if words.endswith(" ") else 1))
    env = {**ONLY_BUILTINS, "_CYCLONE_COMPLETE": "complete_bash", "COMP_WORDS": words, "COMP_CWORD": cword}
    done = run_cyclone(env=env)
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


def test_completion_offers_options(run_cyclone: Any) -> None:
    assert _complete(run_cyclone, "cyclone run --wor") == ["--workers"]  # commands: in bash, below


def test_installed_bash_completion_completes_in_bash(run_cyclone: Any, tmp_path: Path) -> None:
    shown = run_cyclone("--show-completion", "bash", env=ONLY_BUILTINS)
    assert shown.returncode == 0, shown.stderr
    assert "complete -o default -F _cyclone_completion cyclone" in shown.stdout
    installed = run_cyclone("--install-completion", "bash", env={**ONLY_BUILTINS, "HOME": str(tmp_path)})
    assert installed.returncode == 0, installed.stderr
    script = tmp_path / ".bash_completions" / "cyclone.sh"
    assert f"source '{script}'" in (tmp_path / ".bashrc").read_text()
    # The installed script, sourced by a real bash, asks the real cyclone for completions.
    cyclone = shutil.which("cyclone")
    assert cyclone is not None
    snippet = f'source "{script}"; COMP_WORDS=(cyclone ma); COMP_CWORD=1; _cyclone_completion {cyclone}; '
    snippet += 'printf "%s\\n" "${COMPREPLY[@]}"'
    env = {**os.environ, **ONLY_BUILTINS}
    done = subprocess.run(["bash", "-c", snippet], capture_output=True, text=True, timeout=60, env=env, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["master"]


# -- misspelled generator and sink options ------------------------------------------------------


def test_a_misspelled_option_in_a_file_names_the_file_and_the_known_options(run_cyclone: Any, tmp_path: Path) -> None:
    config = tmp_path / "job.toml"
    config.write_text('[generator]\nname = "benchmark"\noptions = { cont = 3 }\n')
    done = run_cyclone("run", "--config", str(config), env=ONLY_BUILTINS, cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr == (
        f"error: {config}: generator.options.cont: unknown option of generator 'benchmark' "
        "(known: count, task, args, timeout)\n"
    )
    config.write_text('[sinks.sqlite]\npaht = "x.sqlite"\n')
    with pytest.raises(ConfigError) as caught:
        load_config(config)
    assert str(caught.value) == (
        f"{config}: sinks.sqlite.paht: unknown option of sink 'sqlite' (known: batch_size, flush_interval, path)"
    )


def test_a_misspelled_option_on_the_command_line_names_it_and_the_known_options(
    run_cyclone: Any, tmp_path: Path
) -> None:
    done = run_cyclone("run", "-g", "cont=3", env=ONLY_BUILTINS, cwd=tmp_path)
    assert done.returncode == 2
    assert (
        done.stderr
        == "error: -g 'cont=3': unknown option of generator 'benchmark' (known: count, task, args, timeout)\n"
    )
    with pytest.raises(ConfigError) as caught:
        apply_overrides(Config(), sink_options=["jsonl.paht=x.jsonl"])
    assert str(caught.value) == (
        "-s 'jsonl.paht=x.jsonl': unknown option of sink 'jsonl' (known: batch_size, flush_interval, path)"
    )
    # Only the first part of a dotted key is the generator's: the rest is the table option's own.
    apply_overrides(Config(), ["task=sleep", "args.seconds=0.01"])


# -- a controller whose master is not there -----------------------------------------------------


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_a_controller_says_at_once_and_at_each_step_that_it_cannot_reach_its_master(tmp_path: Path) -> None:
    endpoint = f"tcp://127.0.0.1:{_free_port()}"  # nobody listens there
    config = tmp_path / "controller.toml"
    # A long master_timeout: the lines cannot come from the silence that ends in a new connection.
    config.write_text(f'[controller]\nmaster = "{endpoint}"\ninsecure = true\nworkers = 1\nmaster_timeout = 3600.0\n')
    env = {key: value for key, value in os.environ.items() if not key.startswith("CYCLONE_")}
    env.update(ONLY_BUILTINS)
    cyclone = shutil.which("cyclone")
    assert cyclone is not None
    process = subprocess.Popen(
        [cyclone, "controller", "--config", str(config)], stderr=subprocess.PIPE, text=True, env=env
    )
    lines: list[str] = []
    try:
        assert process.stderr is not None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not any("next report in 2.0 s" in line for line in lines):
            ready, _, _ = select.select([process.stderr], [], [], max(deadline - time.monotonic(), 0))
            if not ready:
                break
            line = process.stderr.readline()
            if not line:
                break
            lines.append(line)
    finally:
        process.terminate()
        process.wait(30)
    reports = [line.split(": ", 1)[1].strip() for line in lines if "connect to master" in line]
    assert len(reports) >= 3, "".join(lines)
    assert reports[0] == (
        f"cannot connect to master {endpoint} (is it running and listening there?); retrying, next report in 0.5 s"
    )
    for report, delay in zip(reports[1:3], ("1.0", "2.0"), strict=True):
        assert report.startswith(f"still cannot connect to master {endpoint} after ")
        assert report.endswith(f"; retrying, next report in {delay} s")


def test_workers_0_is_one_per_cpu(run_cyclone: Any, tmp_path: Path) -> None:
    cpus = len(os.sched_getaffinity(0))
    config = tmp_path / "run.toml"
    config.write_text(f"[controller]\nworkers = {cpus + 1}\n")  # the command line's 0 wins over it
    done = run_cyclone(
        "run", "--debug", "--config", str(config), "--workers", "0", "-g", "count=1", env=ONLY_BUILTINS, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    assert f" started: {plural(cpus, 'worker')}, task types " in done.stderr


# -- a resumed run's summary --------------------------------------------------------------------


def _descendants(pid: int) -> list[int]:
    """The processes under ``pid`` (children, their children, ...), from /proc."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue  # exited meanwhile
            parents.setdefault(int(stat.rpartition(")")[2].split()[1]), []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        children = parents.get(todo.pop(), [])
        found += children
        todo += children
    return found


def _journaled(journal: Path) -> tuple[int, int]:
    """Results in the journal, and how many of them the sqlite sink has (0, 0 before it exists)."""
    try:
        with contextlib.closing(sqlite3.connect(f"file:{journal}?mode=ro", uri=True)) as db:
            results = db.execute("SELECT coalesce(max(first + count - 1), 0) FROM results").fetchone()[0]
            marks = dict(db.execute("SELECT sink, last FROM delivered").fetchall())
    except sqlite3.Error:
        return 0, 0
    return int(results), int(marks.get("sqlite", 0))


def test_a_resumed_run_says_what_it_delivered_of_the_killed_runs_backlog(run_cyclone: Any, tmp_path: Path) -> None:
    journal = tmp_path / "journal.sqlite"
    job = ["run", "--journal", str(journal), "-g", "count=12", "-g", "task=sleep", "-g", "args.seconds=0.1"]
    # The sink gets nothing during the first run: its results stay journaled, not delivered.
    held = ["-s", "sqlite.flush_interval=3600", "-s", "sqlite.batch_size=100000"]
    env = {key: value for key, value in os.environ.items() if not key.startswith("CYCLONE_")}
    cyclone = shutil.which("cyclone")
    assert cyclone is not None
    first = subprocess.Popen(
        [cyclone, *job, "--workers", "2", *held],
        cwd=tmp_path,
        env={**env, **ONLY_BUILTINS},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while _journaled(journal)[0] < 3 and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert first.poll() is None, "the first run ended before it was killed"
        assert _journaled(journal)[0] >= 3, "no results journaled in time"
        under = _descendants(first.pid)
        first.kill()  # the master dies with its results journaled and undelivered
        for pid in under:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    finally:
        first.kill()
        first.wait(30)
    journaled, delivered = _journaled(journal)
    assert delivered == 0
    done = run_cyclone(*job, "--workers", "2", env=ONLY_BUILTINS, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert f"  resumed: {journaled} results journaled before the restart delivered now (sqlite)\n" in done.stdout
    with contextlib.closing(sqlite3.connect(tmp_path / "cyclone-results.sqlite")) as db:
        assert db.execute("SELECT count(*) FROM results").fetchone()[0] == 12


# -- log lines and the progress line ------------------------------------------------------------


def _rendered(line: str) -> str:
    """What a terminal shows of one line of output: carriage returns go back to the first
    column, ESC [ K erases to the end of the line, other characters overwrite."""
    shown: list[str] = []
    column = 0
    index = 0
    while index < len(line):
        if line.startswith("\x1b[K", index):
            del shown[column:]
            index += 3
            continue
        char = line[index]
        if char == "\r":
            column = 0
        else:
            shown[column : column + 1] = [char]
            column += 1
        index += 1
    return "".join(shown).rstrip()


def test_log_lines_never_land_on_the_progress_line(tmp_path: Path) -> None:
    cyclone = shutil.which("cyclone")
    assert cyclone is not None
    env = {key: value for key, value in os.environ.items() if not key.startswith("CYCLONE_")}
    env.update(ONLY_BUILTINS, COLUMNS="120", LINES="40")
    primary, secondary = pty.openpty()
    # Crashing tasks: warnings from the controller's process (the crashes) and from this one
    # (the quarantines), while the progress line is drawn.
    command = [cyclone, "run", "-g", "task=crash", "-g", "count=2", "--workers", "1"]
    process = subprocess.Popen(command, stdin=secondary, stdout=secondary, stderr=secondary, cwd=tmp_path, env=env)
    os.close(secondary)
    output = b""
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            ready, _, _ = select.select([primary], [], [], 1.0)
            if not ready:
                if process.poll() is not None:
                    break
                continue
            try:
                chunk = os.read(primary, 65536)
            except OSError:  # EIO: every writer closed the terminal
                break
            if not chunk:
                break
            output += chunk
    finally:
        process.kill()
        process.wait(30)
        os.close(primary)
    text = output.decode("utf-8", "replace")
    lines = text.split("\n")
    records = [_rendered(line) for line in lines if " WARNING cyclone." in line]
    assert any("crashed its worker" in record for record in records), text
    assert any("quarantined" in record for record in records), text
    first_bar = text.find("tasks/s")
    assert 0 <= first_bar < text.rfind(" WARNING cyclone."), "no warning after the progress line was drawn"
    for record in records:
        assert re.match(r"\d{4}-\d\d-\d\d [\d:,]+ WARNING cyclone\.\w+: ", record), record
        assert "tasks/s" not in record, record
