"""``cyclone plugins ...``: what is installed, what it provides, and whether it loaded."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from cyclone_core.cli import app
from cyclone_core.plugins import get_plugins

__all__ = ("plugin_rows", "plugins_app", "render_table")

plugins_app = typer.Typer(help="Inspect installed plugins and create new ones.", no_args_is_help=True)
app.add_typer(plugins_app, name="plugins")

# What a plugin provides, as (key in a row, label in the table).
_PROVIDES = (("task_types", "task types"), ("generators", "generators"), ("sinks", "sinks"), ("commands", "commands"))


def plugin_rows() -> list[dict[str, Any]]:
    """One plain dict per plugin, sorted by name: the ``cyclone plugins list --json`` output.

    Keys: plugin, distribution, version, module, task_types, generators, sinks, commands,
    hooks, status (``ok``, ``broken`` or ``conflict``) and error (why, or ``None``).
    """
    return [
        {
            "plugin": info.name,
            "distribution": info.distribution,
            "version": info.version,
            "module": info.module,
            "task_types": list(info.task_types),
            "generators": list(info.generators),
            "sinks": list(info.sinks),
            "commands": list(info.commands),
            "hooks": list(info.hooks),
            "status": info.status,
            "error": info.error,
        }
        for info in get_plugins().infos()
    ]


def render_table(rows: list[dict[str, Any]]) -> Table:
    """The human-readable form of :func:`plugin_rows`."""
    table = Table()
    for header in ("plugin", "distribution", "version", "provides", "status"):
        table.add_column(header, overflow="fold")  # wrap long names, never cut them off
    for row in rows:
        provides = "\n".join(f"{label}: {', '.join(row[key])}" for key, label in _PROVIDES if row[key])
        status = Text(row["status"], style="green" if row["status"] == "ok" else "bold red")
        if row["error"]:
            status.append(f": {row['error']}", style="default")
        # Text, not markup: an error such as "[Errno 2] ..." must be shown as it is.
        table.add_row(row["plugin"], row["distribution"] or "-", row["version"] or "-", Text(provides), status)
    return table


@plugins_app.command("list")
def list_plugins(
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON list instead of a table.")] = False,
) -> None:
    """List installed plugins: what each provides, and why a broken one failed to load."""
    rows = plugin_rows()
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
    else:
        Console().print(render_table(rows))
