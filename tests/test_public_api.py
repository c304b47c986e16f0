"""Plugins use only the public API: ``cyclone_core`` itself, and ``cyclone_core.testing`` in
their tests.  Everything else in the core is internal and may change (docs/plugin-authoring.md)."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

import cyclone_core

PLUGINS = Path(__file__).parent.parent / "plugins"
PUBLIC = {"cyclone_core", "cyclone_core.testing"}


def core_imports(path: Path) -> Iterator[str]:
    """Every ``cyclone_core...`` module ``path`` imports."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        yield from (name for name in names if name.split(".")[0] == "cyclone_core")


def plugin_files(part: str) -> list[Path]:
    """The plugins' shipped modules (``package``) or their tests (``tests``)."""
    files = []
    for plugin in sorted(PLUGINS.iterdir()):
        for path in sorted(plugin.rglob("*.py")):
            in_tests = "tests" in path.relative_to(plugin).parts
            if in_tests == (part == "tests"):
                files.append(path)
    return files


def test_the_plugins_packages_import_only_cyclone_core() -> None:
    assert plugin_files("package")
    internal = {
        f"{path.relative_to(PLUGINS)}: {name}"
        for path in plugin_files("package")
        for name in core_imports(path)
        if name not in PUBLIC
    }
    assert not internal


@pytest.mark.parametrize("internal", ["cyclone_core.engine", "cyclone_core.config"])
def test_the_plugins_tests_run_the_engine_through_cyclone_core_testing(internal: str) -> None:
    used = {
        f"{path.relative_to(PLUGINS)}: {name}"
        for path in plugin_files("tests")
        for name in core_imports(path)
        if name == internal or name.startswith(internal + ".")
    }
    assert not used


def test_sink_options_come_from_the_file_and_the_command_line(tmp_path: Path) -> None:
    config = tmp_path / "cyclone.toml"
    config.write_text('[sinks.mysql]\nhost = "db01"\ntable = "probes"\n\n[sinks.jsonl]\npath = "x.jsonl"\n')
    options = cyclone_core.sink_options("mysql", config, ["mysql.table=other", "mysql.port=3307", "jsonl.path=y"])
    assert options == {"host": "db01", "table": "other", "port": 3307}
    assert cyclone_core.sink_options("mysql") == {}
    with pytest.raises(cyclone_core.UsageError, match=r"expected SINK\.KEY=VALUE"):
        cyclone_core.sink_options("mysql", None, ["mysql"])
