"""Plugin discovery and the registries of task types, generators and sinks.

Core code talks to plugins only through :class:`Plugins`: ``plugins.task_type("sleep")``,
never ``pm.hook...``.  Entry points of the ``cyclone`` group are loaded one at a time, each in
its own ``try``, so a broken plugin is recorded (and shown by ``cyclone plugins list``) instead
of taking the command line down.  Environment variables:

``CYCLONE_LOAD_PLUGINS=a,b``
    load only these entry points (an empty value loads none).
``CYCLONE_STRICT_PLUGINS=1``
    a broken or conflicting plugin is fatal.
"""

from __future__ import annotations

import importlib.metadata
import logging
import os
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import attrs
import pluggy

from cyclone_core import hookspecs
from cyclone_core.errors import ConfigError, PluginError
from cyclone_core.model import ResultSink, Task, TaskGenerator

if TYPE_CHECKING:
    import typer

    from cyclone_core.dashboard.panels import Panel
    from cyclone_core.model import Result

__all__ = ("ENTRY_POINT_GROUP", "PluginInfo", "Plugins", "get_plugins")

log = logging.getLogger("cyclone.plugins")

ENTRY_POINT_GROUP = "cyclone"

# kind -> (hook name, required base class)
_KINDS: dict[str, tuple[str, type]] = {
    "task_types": ("cyclone_task_types", Task),
    "generators": ("cyclone_generators", TaskGenerator),
    "sinks": ("cyclone_sinks", ResultSink),
}
_SINGULAR = {"task_types": "task type", "generators": "generator", "sinks": "sink"}
#: Hooks that tell plugins what happened (:meth:`Plugins.notify`): an implementation that
#: raises is logged, and the others still run.
_LIFECYCLE = frozenset({"cyclone_results", "cyclone_controller_joined", "cyclone_controller_lost"})


@attrs.define
class PluginInfo:
    """What ``cyclone plugins list`` shows about one plugin."""

    name: str
    distribution: str | None = None
    version: str | None = None
    module: str | None = None
    status: str = "ok"  # ok | broken | conflict
    error: str | None = None
    hooks: list[str] = attrs.field(factory=list)
    task_types: list[str] = attrs.field(factory=list)
    generators: list[str] = attrs.field(factory=list)
    sinks: list[str] = attrs.field(factory=list)
    commands: list[str] = attrs.field(factory=list)


def _strict() -> bool:
    return os.environ.get("CYCLONE_STRICT_PLUGINS", "").strip().lower() in {"1", "true", "yes", "on"}


class Plugins:
    """A typed facade over pluggy's ``PluginManager`` and the name registries built from it."""

    def __init__(self) -> None:
        self.manager = pluggy.PluginManager(hookspecs.PROJECT)
        self.manager.add_hookspecs(hookspecs)
        self._infos: dict[str, PluginInfo] = {}
        self._registries: dict[str, dict[str, Any]] | None = None
        self._conflicts: dict[str, dict[str, list[str]]] = {}

    # -- loading -------------------------------------------------------------------------

    def load_entry_points(self) -> None:
        """Load every ``cyclone`` entry point allowed by ``CYCLONE_LOAD_PLUGINS``."""
        allowed = os.environ.get("CYCLONE_LOAD_PLUGINS")
        only = None if allowed is None else {n.strip() for n in allowed.split(",") if n.strip()}
        for ep in sorted(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
            if ep.name in self._infos or (only is not None and ep.name not in only):
                continue
            dist = ep.dist
            info = PluginInfo(
                name=ep.name,
                distribution=dist.name if dist else None,
                version=dist.version if dist else None,
                module=ep.value,
            )
            try:
                plugin = ep.load()
            except Exception as exc:  # any import-time failure of third-party code
                self._mark_broken(info, f"failed to import {ep.value}: {type(exc).__name__}: {exc}")
                continue
            self._register(plugin, info)

    def register(self, plugin: object, name: str | None = None) -> PluginInfo:
        """Register a plugin object in-process (tests, embedding); returns its listing entry."""
        name = name or getattr(plugin, "__name__", None) or type(plugin).__name__
        info = PluginInfo(name=name, module=getattr(plugin, "__name__", None))
        self._register(plugin, info)
        if info.status != "ok" and _strict():
            raise PluginError(f"plugin '{name}' is broken: {info.error}")
        return info

    def unregister(self, name: str) -> None:
        """Remove a plugin registered with :meth:`register`."""
        self.manager.unregister(name=name)
        self._infos.pop(name, None)
        self._registries = None

    def _register(self, plugin: object, info: PluginInfo) -> None:
        self._registries = None
        try:
            self.manager.register(plugin, name=info.name)
        except Exception as exc:  # pluggy validates hook signatures at register time
            self._mark_broken(info, f"invalid hook implementation: {' '.join(str(exc).split())}")
            return
        unknown = sorted(caller.name for caller in self.manager.get_hookcallers(plugin) or [] if not caller.has_spec())
        if unknown:
            self.manager.unregister(plugin)
            self._mark_broken(info, f"implements unknown hook(s) {', '.join(unknown)}")
            return
        info.hooks = sorted(caller.name for caller in self.manager.get_hookcallers(plugin) or [])
        self._infos[info.name] = info
        _isolate_failures(self.manager, plugin)

    def _mark_broken(self, info: PluginInfo, reason: str) -> None:
        info.status, info.error = "broken", reason
        self._infos[info.name] = info
        log.warning("plugin '%s' is broken: %s", info.name, reason)

    def check(self) -> None:
        """Raise :class:`PluginError` for the first broken or conflicting plugin."""
        self._build()
        for info in self._infos.values():
            if info.status != "ok":
                raise PluginError(f"plugin '{info.name}' is {info.status}: {info.error}")

    # -- registries ----------------------------------------------------------------------

    def _build(self) -> dict[str, dict[str, Any]]:
        if self._registries is None:
            self._conflicts = {}
            for info in self._infos.values():
                info.task_types, info.generators, info.sinks = [], [], []
                if info.status == "conflict":
                    info.status, info.error = "ok", None
            self._registries = {kind: self._collect(kind) for kind in _KINDS}
        return self._registries

    def _collect(self, kind: str) -> dict[str, Any]:
        """Name -> class for one kind, recording which plugin provides what and any clashes."""
        hook_name, base = _KINDS[kind]
        registry: dict[str, Any] = {}
        owners: dict[str, str] = {}
        clashes: dict[str, list[str]] = {}
        for impl in reversed(getattr(self.manager.hook, hook_name).get_hookimpls()):
            info = self._infos.get(impl.plugin_name)
            try:
                classes = list(impl.function() or ())
                for cls in classes:
                    _check_component(cls, base, kind)
            except Exception as exc:  # third-party code: record it, keep going
                if info is not None:
                    self._mark_broken(info, f"{hook_name}() failed: {exc}")
                continue
            for cls in classes:
                owner = owners.setdefault(cls.name, impl.plugin_name)
                if owner != impl.plugin_name:
                    clashes.setdefault(cls.name, [owner]).append(impl.plugin_name)
                registry.setdefault(cls.name, cls)
                if info is not None:
                    getattr(info, kind).append(cls.name)
        for name, plugins in clashes.items():
            owners_text = ", ".join(repr(p) for p in sorted(plugins))
            reason = f"{_SINGULAR[kind]} '{name}' is registered by plugins {owners_text}"
            for plugin_name in plugins:
                self._infos[plugin_name].status, self._infos[plugin_name].error = "conflict", reason
            log.warning("%s", reason)
        self._conflicts[kind] = clashes
        return registry

    def _lookup(self, kind: str, name: str) -> Any:
        registry = self._build()[kind]
        if name in self._conflicts[kind]:
            plugins = ", ".join(repr(p) for p in sorted(self._conflicts[kind][name]))
            raise PluginError(f"{_SINGULAR[kind]} '{name}' is registered by more than one plugin ({plugins})")
        try:
            return registry[name]
        except KeyError:
            known = ", ".join(sorted(registry)) or "none"
            raise ConfigError(f"unknown {_SINGULAR[kind]} '{name}' (known: {known})") from None

    def task_types(self) -> dict[str, type[Task]]:
        """Registered task types by name."""
        return dict(self._build()["task_types"])

    def generators(self) -> dict[str, type[TaskGenerator]]:
        """Registered task generators by name."""
        return dict(self._build()["generators"])

    def sinks(self) -> dict[str, type[ResultSink]]:
        """Registered result sinks by name."""
        return dict(self._build()["sinks"])

    def task_type(self, name: str) -> type[Task]:
        """The task class registered as ``name``; :class:`ConfigError` if there is none."""
        return self._lookup("task_types", name)

    def generator(self, name: str) -> type[TaskGenerator]:
        """The generator class registered as ``name``."""
        return self._lookup("generators", name)

    def sink(self, name: str) -> type[ResultSink]:
        """The sink class registered as ``name``."""
        return self._lookup("sinks", name)

    def infos(self) -> list[PluginInfo]:
        """Every plugin seen, loaded or broken, sorted by name."""
        self._build()
        return sorted(self._infos.values(), key=lambda i: i.name)

    # -- hooks the core calls -------------------------------------------------------------

    def add_commands(self, app: typer.Typer) -> None:
        """Let each plugin add its sub-commands to ``app``; a failing plugin is marked broken."""
        for impl in self.manager.hook.cyclone_commands.get_hookimpls():
            before = {id(c) for c in app.registered_commands} | {id(g) for g in app.registered_groups}
            try:
                impl.function(app=app)
            except Exception as exc:
                info = self._infos.get(impl.plugin_name)
                if info is not None:
                    self._mark_broken(info, f"cyclone_commands() failed: {exc}")
                continue
            added = [
                c.name or getattr(c.callback, "__name__", "?") for c in app.registered_commands if id(c) not in before
            ]
            added += [g.name or "?" for g in app.registered_groups if id(g) not in before]
            info = self._infos.get(impl.plugin_name)
            if info is not None:
                info.commands = sorted(added)

    def dashboard_panels(self) -> list[Panel]:
        """The panels plugins add to the dashboard (``cyclone_dashboard_panels``), first of each
        name; a plugin whose hook raises or returns something else is logged and left out."""
        from cyclone_core.dashboard.panels import Panel  # noqa: PLC0415  (only a dashboard needs it)

        panels: dict[str, Panel] = {}
        for impl in reversed(self.manager.hook.cyclone_dashboard_panels.get_hookimpls()):
            try:
                returned: Any = impl.function()
                found = list(returned or ())
                for panel in found:
                    if not isinstance(panel, Panel):
                        raise TypeError(f"{panel!r:.60} is not a cyclone_core.Panel")
            except Exception as exc:  # third-party code
                log.error("plugin '%s' failed in cyclone_dashboard_panels: %s", impl.plugin_name, exc)
                continue
            for panel in found:
                if panel.name in panels:
                    log.warning(
                        "dashboard panel '%s' of plugin '%s' is another's name; left out", panel.name, impl.plugin_name
                    )
                    continue
                panels[panel.name] = panel
        return list(panels.values())

    def notify(self, hook_name: str, **kwargs: Any) -> None:
        """Call a lifecycle hook the way pluggy calls hooks (its order, its wrappers); an
        implementation that raises is logged, never propagated, and the others still run."""
        if hook_name not in _LIFECYCLE:
            raise ValueError(f"{hook_name} is not a lifecycle hook")
        try:
            getattr(self.manager.hook, hook_name)(**kwargs)
        except pluggy.HookCallError:
            raise  # called with the wrong arguments: the core's bug, not a plugin's
        except Exception:  # only a wrapper gets here: the other implementations are isolated
            log.exception("a hook wrapper failed in %s", hook_name)

    def results(self, results: Sequence[Result]) -> None:
        """Tell plugins about terminal results (the ``cyclone_results`` hook)."""
        if self.manager.hook.cyclone_results.get_hookimpls():
            self.notify("cyclone_results", results=results)


def _isolate_failures(manager: pluggy.PluginManager, plugin: object) -> None:
    """Make each of ``plugin``'s lifecycle hook implementations log its own exception instead
    of raising it, so that one failing plugin does not keep the others from hearing of an
    event.  pluggy still calls them, in its order and inside any wrappers; a wrapper is left
    as it is (it sees the outcome of the implementations it wraps)."""
    for caller in manager.get_hookcallers(plugin) or []:
        if caller.name not in _LIFECYCLE:
            continue
        for impl in caller.get_hookimpls():
            if impl.plugin is plugin and not (impl.wrapper or impl.hookwrapper):
                impl.function = _logging_failures(impl.function, impl.plugin_name, caller.name)  # type: ignore[misc]


def _logging_failures(function: Callable[..., Any], plugin_name: str, hook_name: str) -> Callable[..., Any]:
    # pluggy passes the arguments the original function names, positionally.
    def call(*args: Any) -> Any:
        try:
            return function(*args)
        except Exception:
            log.exception("plugin '%s' failed in %s", plugin_name, hook_name)
            return None

    return call


def _check_component(cls: object, base: type, kind: str) -> None:
    if not (isinstance(cls, type) and issubclass(cls, base)):
        raise TypeError(f"{cls!r} is not a subclass of {base.__name__}")
    if not attrs.has(cls):
        raise TypeError(f"{cls.__name__} must be an attrs class")
    if not getattr(cls, "name", ""):
        raise TypeError(f"{cls.__name__} has no {_SINGULAR[kind]} name")


_plugins: Plugins | None = None


def get_plugins() -> Plugins:
    """The process-wide :class:`Plugins`, loading entry points on first use.

    With ``CYCLONE_STRICT_PLUGINS=1`` a broken or conflicting plugin raises :class:`PluginError`.
    """
    global _plugins
    if _plugins is None:
        plugins = Plugins()
        plugins.load_entry_points()
        _plugins = plugins
    if _strict():
        _plugins.check()
    return _plugins


def reset_plugins() -> None:
    """Forget the process-wide plugins (tests use this after changing the environment)."""
    global _plugins
    _plugins = None
