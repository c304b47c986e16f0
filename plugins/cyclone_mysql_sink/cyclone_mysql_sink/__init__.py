"""Cyclone result sink ``mysql``: buffered, idempotent bulk writes to MySQL or MariaDB.

Registered under the ``cyclone`` entry-point group; adds the sink and the
``cyclone mysql create-table`` command.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from cyclone_core import ResultSink, hookimpl
from cyclone_mysql_sink.sink import MySQLSink

if TYPE_CHECKING:
    import typer

__all__ = ("MySQLSink",)


@hookimpl
def cyclone_sinks() -> Sequence[type[ResultSink]]:
    """The ``mysql`` sink."""
    return [MySQLSink]


@hookimpl
def cyclone_commands(app: typer.Typer) -> None:
    """``cyclone mysql ...``."""
    from cyclone_mysql_sink.cli import mysql_app  # noqa: PLC0415  (only the command line needs typer)

    app.add_typer(mysql_app, name="mysql")
