"""``cyclone plugin new NAME``: create a new plugin package (also ``cyclone plugins new``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cyclone_core.cli import app
from cyclone_core.cli.plugins_cmd import plugins_app
from cyclone_core.scaffold import create_plugin

__all__ = ("new_plugin", "plugin_app")

plugin_app = typer.Typer(help="Create a new plugin.", no_args_is_help=True)
app.add_typer(plugin_app, name="plugin")


def new_plugin(
    name: Annotated[str, typer.Argument(help="Plugin name, e.g. disk-probe (lower case, digits, hyphens).")],
    directory: Annotated[
        Path | None, typer.Option("--dir", help="Where to create the project directory [default: here].")
    ] = None,
) -> None:
    """Create cyclone-NAME/: a plugin package with a task type, a generator, a README and tests."""
    project = create_plugin(name, directory or Path.cwd())
    typer.echo(f"created {project}")
    typer.echo(f"next: cd {project} && pip install -e '.[test]' && pytest")


plugin_app.command("new")(new_plugin)
plugins_app.command("new")(new_plugin)
