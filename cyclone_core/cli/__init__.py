"""The ``cyclone`` command line.

Each group of commands lives in its own module and registers itself on :data:`app` when
imported; plugins add theirs through the ``cyclone_commands`` hook.  :func:`main` turns every
user error (:class:`CycloneError`, a bad option) into one ``error: ...`` line on stderr and an
exit code: 0 ok, 1 failure, 2 usage or configuration error.  ``--debug`` shows tracebacks.
"""

from __future__ import annotations

import functools
import importlib
import logging
import os
import sys
import traceback
from typing import Annotated

import typer

from cyclone_core import __version__
from cyclone_core.errors import CycloneError
from cyclone_core.plugins import get_plugins

__all__ = ("app", "load_commands", "main")

app = typer.Typer(
    name="cyclone",
    help="Run many small tasks across an HPC cluster.",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    # Plain help: Rich markup would swallow bracketed text such as "[sinks.mysql]" or
    # "[default: ...]" in help strings, and would show boolean flags with a value they reject.
    rich_markup_mode=None,
)

#: Modules under cyclone_core.cli that add the core's commands to :data:`app`.
CORE_COMMAND_MODULES = ("plugins_cmd", "scaffold_cmd", "engine_cmds", "keys_cmds", "results_cmds", "controllers_cmds")

# click's UsageError (bad option, unknown command): typer re-exports only its subclass
# BadParameter, and newer typer versions vendor click, so take the class from there.
_UsageError: type[Exception] = typer.BadParameter.__mro__[1]


def _version(value: bool) -> None:
    if value:
        typer.echo(f"cyclone {__version__}")
        raise typer.Exit


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version and exit.")
    ] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Log debug output and show tracebacks.")] = False,
) -> None:
    """Run many small tasks across an HPC cluster."""
    if debug:
        os.environ["CYCLONE_DEBUG"] = "1"  # child processes (workers) inherit it
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


@functools.cache
def load_commands() -> None:
    """Add the core's command groups and every plugin's commands to :data:`app` (once).

    With ``CYCLONE_STRICT_PLUGINS=1`` a broken plugin raises :class:`PluginError` here, so
    every command fails with the same message.
    """
    for module in CORE_COMMAND_MODULES:
        importlib.import_module(f"{__name__}.{module}")
    get_plugins().add_commands(app)


def _debug_first(args: list[str]) -> list[str]:
    """``args`` with ``--debug`` moved to the front, where the root command takes it, so that
    ``cyclone run --debug`` means ``cyclone --debug run`` (nothing after ``--`` is touched)."""
    end = args.index("--") if "--" in args else len(args)
    if "--debug" not in args[:end]:
        return args
    return ["--debug", *(arg for arg in args[:end] if arg != "--debug"), *args[end:]]


def main() -> None:
    """Entry point of the ``cyclone`` console script."""
    args = _debug_first(sys.argv[1:])
    debug = args[:1] == ["--debug"] or os.environ.get("CYCLONE_DEBUG") == "1"
    try:
        load_commands()
        code = app(args=args, standalone_mode=False)
    except _UsageError as exc:
        context = exc.ctx  # type: ignore[attr-defined]
        if type(exc).__name__ == "NoArgsIsHelpError":  # a group without arguments: its help
            typer.echo(context.get_help())
        else:
            message = exc.format_message().rstrip(".")  # type: ignore[attr-defined]
            command = context.command_path if context is not None else "cyclone"
            typer.echo(f"error: {message} (see '{command} --help')", err=True)
        raise SystemExit(2) from None
    except typer.Abort:
        typer.echo("error: aborted", err=True)
        raise SystemExit(1) from None
    except CycloneError as exc:
        if debug:
            traceback.print_exc()
        else:
            typer.echo(f"error: {exc}", err=True)
        raise SystemExit(exc.exit_code) from None
    raise SystemExit(code if isinstance(code, int) else 0)
