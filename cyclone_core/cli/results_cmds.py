"""``cyclone results``: list stored results with their errors, parameters and metrics."""

from __future__ import annotations

import csv
import datetime
import json
import sys
from collections.abc import Iterable
from typing import Annotated, Any

import typer

from cyclone_core.cli import app
from cyclone_core.config import load_config
from cyclone_core.convert import unstructure
from cyclone_core.engine.journal import read_dead_letters
from cyclone_core.errors import UsageError
from cyclone_core.model import Result
from cyclone_core.plural import plural
from cyclone_core.results import read_results, run_id_of

__all__ = ("results",)

#: Columns of ``--csv`` before the parameters; then ``metrics``, as JSON.
CSV_COLUMNS = (
    "task_id",
    "run_id",
    "status",
    "task_type",
    "key",
    "attempt",
    "started_at",
    "duration",
    "exit_code",
    "error",
)
_DEFAULT_PATH = "cyclone-results.sqlite"


@app.command()
def results(  # noqa: PLR0917  (typer passes options as parameters)
    path: Annotated[
        str | None,
        typer.Argument(help="Results file: the sqlite sink's database or the jsonl sink's file (default: the sink's)."),
    ] = None,
    run: Annotated[str | None, typer.Option("--run", help="Only this run's results (its run id).")] = None,
    status: Annotated[
        str | None, typer.Option("--status", help="Only results with this status: ok, failed, timeout, quarantined.")
    ] = None,
    task_type: Annotated[str | None, typer.Option("--task-type", help="Only results of this task type.")] = None,
    config_path: Annotated[
        str | None, typer.Option("--config", "-c", help="Read the file of the sqlite (or jsonl) sink configured here.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="A JSON list of every field of each result.")] = False,
    as_csv: Annotated[bool, typer.Option("--csv", help="CSV, one column per parameter.")] = False,
    dead_letters: Annotated[
        bool,
        typer.Option(
            "--dead-letters",
            help="List the results the sinks rejected (cannot store), kept in the master's journal: "
            "PATH is the journal (default: master.journal of --config).",
        ),
    ] = False,
) -> None:
    """List stored results with their errors, parameters and metrics (the sacct of Cyclone)."""
    if as_json and as_csv:
        raise UsageError("give --json or --csv, not both")
    if dead_letters:
        if as_csv or run or status or task_type:
            raise UsageError(
                "--dead-letters lists every dead letter, as lines or --json: no --csv, --run, --status or --task-type"
            )
        _list_dead_letters(path or _configured_journal(config_path), as_json=as_json)
        return
    file = path or _configured_path(config_path)
    found = read_results(file, run=run, status=status, task_type=task_type)
    if as_json:
        _write_json(found)
    elif as_csv:
        # The parameters' columns need one look at every result first.
        names = _param_names(read_results(file, run=run, status=status, task_type=task_type))
        _write_csv(found, names)
    else:
        _write_lines(found)


def _configured_path(config_path: str | None) -> str:
    """The default sink's file: the sqlite sink's, else the jsonl sink's, of the configuration."""
    if config_path is None:
        return _DEFAULT_PATH
    sinks = load_config(config_path).sinks or {"sqlite": {}}
    for name, default in (("sqlite", _DEFAULT_PATH), ("jsonl", "cyclone-results.jsonl")):
        if name in sinks:
            return str(sinks[name].get("path", default))
    raise UsageError(f"{config_path}: no sqlite or jsonl sink to read results from; give the file")


def _configured_journal(config_path: str | None) -> str:
    """The master's journal of the configuration."""
    journal = load_config(config_path).master.journal if config_path is not None else ""
    if not journal:
        raise UsageError("--dead-letters: give the journal file (or --config with master.journal)")
    return journal


def _list_dead_letters(journal: str, *, as_json: bool) -> None:
    """The journal's dead letters, newest first: one line each, or every field as JSON."""
    letters = read_dead_letters(journal)
    if as_json:
        typer.echo(
            json.dumps(
                [
                    {
                        "sink": d.sink,
                        "task_id": d.task_id,
                        "rejected_at": d.at,
                        "error": d.error,
                        "result": unstructure(d.result) if d.result is not None else None,
                    }
                    for d in letters
                ],
                default=str,
                indent=1,
            )
        )
    else:
        for d in letters:
            when = datetime.datetime.fromtimestamp(d.at).isoformat(" ", "seconds")
            typer.echo(f"{d.task_id or '?'}  {d.sink}  {when}  {d.error}")
    typer.echo(plural(len(letters), "dead letter"), err=True)


def params_of(result: Result) -> dict[str, Any]:
    """A result's sweep parameters (``payload.params``), or none."""
    params = (result.payload or {}).get("params")
    return params if isinstance(params, dict) else {}


def _param_names(found: Iterable[Result]) -> list[str]:
    names: dict[str, None] = {}
    for result in found:
        names.update(dict.fromkeys(params_of(result)))
    return list(names)


def _write_json(found: Iterable[Result]) -> None:
    out = sys.stdout
    out.write("[")
    for index, result in enumerate(found):
        out.write(("," if index else "") + "\n" + json.dumps(unstructure(result), default=str))
    out.write("\n]\n")


def _write_csv(found: Iterable[Result], names: list[str]) -> None:
    writer = csv.writer(sys.stdout)
    writer.writerow([*CSV_COLUMNS, *names, "metrics"])
    for result in found:
        params = params_of(result)
        writer.writerow(
            [
                result.task_id,
                run_id_of(result.task_id),
                result.status.value,
                result.task_type,
                result.key or "",
                result.attempt,
                result.started_at,
                result.duration,
                (result.payload or {}).get("exit_code", ""),
                result.error or "",
                *(params.get(name, "") for name in names),
                json.dumps({metric.name: metric.value for metric in result.metrics}) if result.metrics else "",
            ]
        )


def _write_lines(found: Iterable[Result]) -> None:
    count = 0
    for result in found:
        count += 1
        params = params_of(result)
        what = " ".join(f"{name}={value}" for name, value in params.items()) if params else (result.key or "")
        line = f"{result.task_id}  {result.status.value:<11}  {result.task_type}  {what}"
        if result.error:
            line += f"  error: {result.error}"
        if result.metrics:
            line += "  " + " ".join(f"{metric.name}={metric.value:g}" for metric in result.metrics[:5])
            if len(result.metrics) > 5:
                line += f" (+{len(result.metrics) - 5} metrics)"
        typer.echo(line)
    typer.echo(plural(count, "result"), err=True)
