from __future__ import annotations

from collections.abc import Iterator
from typing import ClassVar

import attrs
import pytest

from cyclone_core import ConfigError, PluginError, Task, hookimpl
from cyclone_core.plugins import Plugins


def test_builtins_are_discovered_through_the_entry_point() -> None:
    plugins = Plugins()
    plugins.load_entry_points()
    assert {"noop", "sleep", "fail", "crash", "hang"} <= set(plugins.task_types())
    (info,) = [i for i in plugins.infos() if i.name == "builtins"]
    assert info.distribution == "cyclone-core"
    assert info.status == "ok"


def test_unknown_task_type_names_the_known_ones() -> None:
    plugins = Plugins()
    plugins.load_entry_points()
    with pytest.raises(ConfigError, match=r"unknown task type 'nope' \(known: .*noop"):
        plugins.task_type("nope")


@attrs.define(kw_only=True)
class _Dup(Task):
    name: ClassVar[str] = "noop"


class _DupPlugin:
    @hookimpl
    def cyclone_task_types(self) -> list[type[Task]]:
        return [_Dup]


class _UnknownHookPlugin:
    @hookimpl
    def cyclone_no_such_hook(self) -> None: ...


def test_two_plugins_with_one_name_is_an_error_naming_both() -> None:
    plugins = Plugins()
    plugins.load_entry_points()
    plugins.register(_DupPlugin(), name="dup")
    expected = r"task type 'noop' is registered by more than one plugin \('builtins', 'dup'\)"
    with pytest.raises(PluginError, match=expected):
        plugins.task_type("noop")
    assert {i.name: i.status for i in plugins.infos()}["dup"] == "conflict"


def test_unknown_hook_marks_plugin_broken() -> None:
    plugins = Plugins()
    info = plugins.register(_UnknownHookPlugin(), name="odd")
    assert info.status == "broken"
    assert "cyclone_no_such_hook" in (info.error or "")


def test_unregistering_a_conflicting_plugin_clears_the_conflict() -> None:
    plugins = Plugins()
    plugins.load_entry_points()
    plugins.register(_DupPlugin(), name="dup")
    assert {i.name: i.status for i in plugins.infos()}["builtins"] == "conflict"
    plugins.unregister("dup")
    builtins = {i.name: i for i in plugins.infos()}["builtins"]
    assert (builtins.status, builtins.task_types.count("noop")) == ("ok", 1)
    assert plugins.task_type("noop").name == "noop"


def _listener(label: str, calls: list[str], *, fail: bool = False, **order: bool) -> object:
    """A plugin implementing ``cyclone_controller_joined`` (with ``order``: tryfirst, trylast)."""

    class Listener:
        @hookimpl(**order)
        def cyclone_controller_joined(self, controller_id: str) -> None:
            calls.append(label)
            if fail:
                raise RuntimeError(f"{label} fails")

    return Listener()


class _Wrapper:
    def __init__(self, calls: list[str]) -> None:
        self.calls = calls

    @hookimpl(wrapper=True)
    def cyclone_controller_joined(self, controller_id: str) -> Iterator[None]:
        self.calls.append(f"wrapper sees {controller_id}")
        yield
        self.calls.append("wrapper after")


def test_lifecycle_hooks_run_as_pluggy_calls_them_and_a_failure_is_only_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls: list[str] = []
    plugins = Plugins()
    plugins.register(_listener("first", calls, tryfirst=True), name="first")
    plugins.register(_listener("older", calls), name="older")
    plugins.register(_listener("broken", calls, fail=True), name="broken")
    plugins.register(_listener("newer", calls), name="newer")
    plugins.register(_listener("last", calls, trylast=True), name="last")
    plugins.register(_Wrapper(calls), name="wrapper")
    plugins.notify("cyclone_controller_joined", controller_id="c1", host="node01", workers=4)
    # Wrappers around everything; tryfirst, then the newest registration first, then trylast.
    assert calls == ["wrapper sees c1", "first", "newer", "broken", "older", "last", "wrapper after"]
    (record,) = [r for r in caplog.records if r.name == "cyclone.plugins"]
    assert record.getMessage() == "plugin 'broken' failed in cyclone_controller_joined"
    assert record.exc_info is not None
    assert str(record.exc_info[1]) == "broken fails"
