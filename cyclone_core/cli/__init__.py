"""The ``cyclone`` command line.

Each group of commands lives in its own module and is added to :data:`app` here; plugins add
theirs through the ``cyclone_commands`` hook.  :func:`main` turns :class:`CycloneError` into one
line on stderr and the error's exit code (tracebacks only with ``--debug``).
"""

from __future__ import annotations

import logging
import os
import sys

import typer

from cyclone_core.errors import CycloneError

__all__ = ("app", "main")

app = typer.Typer(
    name="cyclone",
    help="Run many small tasks across an HPC cluster.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        from cyclone_core import __version__

        typer.echo(f"cyclone {__version__}")
        raise typer.Exit


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Show the version and exit."),
    debug: bool = typer.Option(False, "--debug", help="Log debug output and show tracebacks."),
) -> None:
    """Run many small tasks across an HPC cluster."""
    if debug:
        os.environ["CYCLONE_DEBUG"] = "1"
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def _add_commands() -> None:
    from cyclone_core.cli import plugins_cmd  # noqa: F401  (registers its commands on import)
    from cyclone_core.plugins import get_plugins

    try:
        get_plugins().add_commands(app)
    except CycloneError as exc:  # strict plugin mode
        typer.echo(f"error: {exc}", err=True)
        raise SystemExit(exc.exit_code) from exc


def main() -> None:
    """Entry point of the ``cyclone`` console script."""
    debug = "--debug" in sys.argv or os.environ.get("CYCLONE_DEBUG") == "1"
    _add_commands()
    try:
        app(standalone_mode=True)
    except CycloneError as exc:
        if debug:
            raise
        typer.echo(f"error: {exc}", err=True)
        raise SystemExit(exc.exit_code) from None
