"""``cyclone plugins ...``: what is installed and whether it loaded."""

from __future__ import annotations

import typer

from cyclone_core.cli import app

plugins_app = typer.Typer(help="Inspect installed plugins.", no_args_is_help=True)
app.add_typer(plugins_app, name="plugins")
