"""Plugins installed with pip are found through their entry points; broken ones are listed with
their reason and never take the command line down (real pip, real ``cyclone`` processes)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

FIXTURES = Path(__file__).parent / "fixtures" / "plugins"
PACKAGES = ("cyclone-fixture-example", "cyclone-fixture-broken", "cyclone-fixture-unknown-hook")
# Only the core's built-ins and the fixtures: whatever else is installed cannot change the result.
LOADED = "builtins,fixture-example,fixture-broken,fixture-unknown-hook"


@pytest.fixture(scope="module")
def plugin_env(tmp_path_factory: pytest.TempPathFactory, pip_install: Any) -> Iterator[dict[str, str]]:
    target = tmp_path_factory.mktemp("fixture-plugins") / "site"
    try:
        env = pip_install([FIXTURES / name for name in PACKAGES], target)
        yield {**env, "CYCLONE_LOAD_PLUGINS": LOADED}
    finally:
        shutil.rmtree(target, ignore_errors=True)  # uninstall


def _listing(run_cyclone: Any, env: dict[str, str]) -> dict[str, dict[str, Any]]:
    done = run_cyclone("plugins", "list", "--json", env=env)
    assert done.returncode == 0, done.stderr
    return {row["plugin"]: row for row in json.loads(done.stdout)}


def test_the_good_plugin_is_listed_with_what_it_provides(run_cyclone: Any, plugin_env: dict[str, str]) -> None:
    row = _listing(run_cyclone, plugin_env)["fixture-example"]
    assert row == {
        "plugin": "fixture-example",
        "distribution": "cyclone-fixture-example",
        "version": "1.2.3",
        "module": "cyclone_fixture_example",
        "task_types": ["fixture-example-echo"],
        "generators": [],
        "sinks": [],
        "commands": ["fixture-example-hello"],
        "hooks": ["cyclone_commands", "cyclone_task_types"],
        "status": "ok",
        "error": None,
    }


def test_broken_plugins_are_listed_with_their_reason(run_cyclone: Any, plugin_env: dict[str, str]) -> None:
    rows = _listing(run_cyclone, plugin_env)
    broken, unknown = rows["fixture-broken"], rows["fixture-unknown-hook"]
    assert broken["status"] == "broken"
    assert broken["distribution"] == "cyclone-fixture-broken"
    assert broken["error"] == (
        "failed to import cyclone_fixture_broken: ImportError: cyclone-fixture-broken is broken on purpose"
    )
    assert unknown["status"] == "broken"
    assert unknown["error"] == "implements unknown hook(s) cyclone_no_such_hook"
    assert rows["builtins"]["status"] == "ok"


def test_the_table_shows_every_plugin_and_each_error(run_cyclone: Any, plugin_env: dict[str, str]) -> None:
    done = run_cyclone("plugins", "list", env=plugin_env)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    (example,) = [line for line in lines if "fixture-example " in line]
    assert "cyclone-fixture-example" in example
    assert "1.2.3" in example
    assert "task types: fixture-example-echo" in example
    assert "ok" in example
    (broken,) = [line for line in lines if "fixture-broken " in line]
    assert "broken: failed to import cyclone_fixture_broken: ImportError" in broken


def test_other_commands_keep_working_next_to_a_broken_plugin(run_cyclone: Any, plugin_env: dict[str, str]) -> None:
    done = run_cyclone("fixture-example-hello", env=plugin_env)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "hello from fixture-example\n"
    # The broken plugins are still reported, as warnings, not tracebacks.
    assert "plugin 'fixture-broken' is broken" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("command", [["--version"], ["plugins", "list", "--json"], ["fixture-example-hello"]])
def test_strict_mode_makes_every_command_fail_with_the_reason(
    run_cyclone: Any, plugin_env: dict[str, str], command: list[str]
) -> None:
    done = run_cyclone(*command, env={**plugin_env, "CYCLONE_STRICT_PLUGINS": "1"})
    assert done.returncode == 1
    assert done.stdout == ""
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert errors == [
        "error: plugin 'fixture-broken' is broken: failed to import cyclone_fixture_broken: "
        "ImportError: cyclone-fixture-broken is broken on purpose"
    ]
    assert "Traceback" not in done.stderr


def test_strict_mode_with_only_good_plugins_runs(run_cyclone: Any, plugin_env: dict[str, str]) -> None:
    env = {**plugin_env, "CYCLONE_STRICT_PLUGINS": "1", "CYCLONE_LOAD_PLUGINS": "builtins,fixture-example"}
    done = run_cyclone("fixture-example-hello", env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "hello from fixture-example\n"


def test_debug_shows_the_traceback_of_a_strict_failure(run_cyclone: Any, plugin_env: dict[str, str]) -> None:
    done = run_cyclone("--debug", "--version", env={**plugin_env, "CYCLONE_STRICT_PLUGINS": "1"})
    assert done.returncode == 1
    assert "Traceback" in done.stderr
    assert "PluginError: plugin 'fixture-broken' is broken" in done.stderr


def test_load_plugins_limits_what_is_loaded(run_cyclone: Any, plugin_env: dict[str, str]) -> None:
    only_example = _listing(run_cyclone, {**plugin_env, "CYCLONE_LOAD_PLUGINS": "fixture-example"})
    assert list(only_example) == ["fixture-example"]
    assert _listing(run_cyclone, {**plugin_env, "CYCLONE_LOAD_PLUGINS": ""}) == {}
    # Leaving the broken ones out makes strict mode pass.
    env = {**plugin_env, "CYCLONE_LOAD_PLUGINS": "builtins, fixture-example", "CYCLONE_STRICT_PLUGINS": "1"}
    assert set(_listing(run_cyclone, env)) == {"builtins", "fixture-example"}
