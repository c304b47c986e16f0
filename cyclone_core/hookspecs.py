"""The plugin contract: every hook a Cyclone plugin may implement.

A plugin is a module (or object) with functions decorated by :data:`cyclone_core.hookimpl`,
named after the hooks below, registered under the ``cyclone`` entry-point group::

    [project.entry-points.cyclone]
    myplugin = "myplugin"

Implementations may accept fewer arguments than a spec names (pluggy's opt-in arguments), so
adding an argument to a hook later does not break existing plugins.  Hooks are always called
with keyword arguments.  Everything here runs in ordinary Python processes; none of it may
block for long, since the master calls the lifecycle hooks on its event loop.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    import typer

    from cyclone_core.dashboard.panels import Panel
    from cyclone_core.model import Result, ResultSink, Task, TaskGenerator

__all__ = (
    "cyclone_commands",
    "cyclone_controller_joined",
    "cyclone_controller_lost",
    "cyclone_dashboard_panels",
    "cyclone_generators",
    "cyclone_results",
    "cyclone_sinks",
    "cyclone_task_types",
    "hookimpl",
    "hookspec",
)

PROJECT = "cyclone"

hookspec = pluggy.HookspecMarker(PROJECT)
#: Decorator marking a plugin's implementation of a hook.
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def cyclone_task_types() -> Sequence[type[Task]]:
    """Return the task types this plugin provides.

    Called once per process when the plugin registries are first needed: in the CLI, in the
    master and in every worker.  Each class subclasses :class:`cyclone_core.Task`, is an
    ``attrs`` class, and has a unique ``name`` (``"lustre-ost-io"``).  Two plugins providing the
    same name is an error that names both.

    :return: the task classes; an empty sequence is fine.

    .. versionadded:: 0.1
    """


@hookspec
def cyclone_generators() -> Sequence[type[TaskGenerator]]:
    """Return the task generators this plugin provides.

    Called once per process when the registries are first needed.  Each class subclasses
    :class:`cyclone_core.TaskGenerator`; its ``attrs`` fields are the generator's options (set
    with ``-g KEY=VALUE`` or a ``[generator]`` table) and its ``name`` is what ``--generator``
    selects.

    :return: the generator classes.

    .. versionadded:: 0.1
    """


@hookspec
def cyclone_sinks() -> Sequence[type[ResultSink]]:
    """Return the result sinks this plugin provides.

    Called once per process when the registries are first needed.  Each class subclasses
    :class:`cyclone_core.ResultSink`; its ``attrs`` fields are the sink's options (``-s
    NAME.KEY=VALUE`` or a ``[sinks.NAME]`` table) and its ``name`` is what ``--sink`` selects.
    The master calls each sink's :meth:`~cyclone_core.ResultSink.check` before the run starts:
    raising there says the sink cannot work at all (exit code 2); failures of ``open`` and
    ``write`` later are retried.

    :return: the sink classes.

    .. versionadded:: 0.1
    """


@hookspec
def cyclone_commands(app: typer.Typer) -> None:
    """Add sub-commands to the ``cyclone`` command line.

    Called once, before the command line is parsed.  Add a command group with
    ``app.add_typer(my_app, name="mysql")`` or single commands with ``app.command()``.  Choose
    names that cannot clash with core commands (prefix them with your plugin's topic).

    :param app: the root ``cyclone`` Typer application.

    .. versionadded:: 0.1
    """


@hookspec
def cyclone_results(results: Sequence[Result]) -> None:
    """Observe a batch of terminal results in the master, before they go to the sinks.

    Called on the master's event loop once per batch, so an implementation must be quick and
    must not raise (an exception is logged and otherwise ignored).  Use a sink for anything
    that stores or sends results.

    :param results: results that just became terminal; each task appears once per run.

    .. versionadded:: 0.1
    """


@hookspec
def cyclone_controller_joined(controller_id: str, host: str, workers: int) -> None:
    """Called in the master when a controller registers.

    :param controller_id: the controller's unique id.
    :param host: the host it runs on.
    :param workers: how many worker processes it runs.

    .. versionadded:: 0.1
    """


@hookspec
def cyclone_controller_lost(controller_id: str, reason: str, requeued: int) -> None:
    """Called in the master when a controller leaves or is declared lost.

    :param controller_id: the controller's id.
    :param reason: ``"goodbye"`` for a clean exit, or why it was declared lost.
    :param requeued: how many of its tasks went back to the queue.

    .. versionadded:: 0.1
    """


@hookspec
def cyclone_dashboard_panels() -> Sequence[Panel]:
    """Return grids the master's dashboard shows, filled from results (per OST, per MDT x OST).

    Called once by a master that serves the dashboard (``master.http_port``), when it starts.
    Each :class:`cyclone_core.Panel` names the task types it looks at and a ``fold``
    function that turns one terminal result into the :class:`cyclone_core.Cell`
    objects it updates; the page keeps the latest cell per row and column and draws every
    panel with the same grid, so a plugin needs no JavaScript.  ``fold`` runs on the master's
    event loop: it must be quick; what it raises is counted and logged, never propagated.

    :return: the panels; an empty sequence is fine.

    .. versionadded:: 0.1
    """
