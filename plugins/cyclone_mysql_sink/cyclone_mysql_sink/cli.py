"""``cyclone mysql create-table``: print or apply the schema of the ``mysql`` sink's table."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cyclone_core import UsageError, sink_options, structure
from cyclone_mysql_sink.layouts import LAYOUTS
from cyclone_mysql_sink.sink import MySQLSink

__all__ = ("mysql_app",)

mysql_app = typer.Typer(help="The MySQL/MariaDB result sink.", no_args_is_help=True)


@mysql_app.command("create-table")
def create_table(
    config: Annotated[
        Path | None,
        typer.Option("--config", "-c", help="Configuration file; its [sinks.mysql] table holds the options."),
    ] = None,
    options: Annotated[
        list[str] | None,
        typer.Option("--sink-option", "-s", metavar="mysql.KEY=VALUE", help="Set a sink option (repeatable)."),
    ] = None,
    layout: Annotated[
        str | None,
        typer.Option("--layout", help=f"Table layout: {' or '.join(LAYOUTS)} (default: the configured one)."),
    ] = None,
    print_only: Annotated[
        bool, typer.Option("--print", help="Print the CREATE TABLE statement; do not connect.")
    ] = False,
) -> None:
    """Create the sink's table if it does not exist (or print its definition)."""
    options = options or []
    for item in options:
        if not item.startswith("mysql."):
            raise UsageError(f"sink option {item!r}: create-table takes mysql.KEY=VALUE options only")
    settings = sink_options("mysql", config, options)
    if layout is not None:
        settings["layout"] = layout
    sink = structure(settings, MySQLSink, where="sink 'mysql'")
    if print_only:
        typer.echo(sink.create_table_sql() + ";")
        return
    sink.create_table = True
    try:
        sink.open()
    finally:
        sink.close()
    typer.echo(f"table {sink.table} (layout {sink.layout}) is ready in {sink.server}")
