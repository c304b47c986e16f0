"""``cyclone run``, ``cyclone master``, ``cyclone controller`` and ``cyclone status``."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import logging.handlers
import os
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Annotated, Any, TextIO

import typer
from rich.console import Console

from cyclone_core.cli import app
from cyclone_core.config import (
    Config,
    GeneratorSettings,
    LogSettings,
    apply_overrides,
    build_generator,
    build_sinks,
    check_endpoint,
    load_config,
)
from cyclone_core.engine.curve import key_dir, status_keys
from cyclone_core.engine.error_summary import ErrorGroup, format_error_line
from cyclone_core.engine.local import run_local
from cyclone_core.engine.master import Master
from cyclone_core.engine.pidfile import PidFile
from cyclone_core.engine.status import (
    BY_HOST_ABOVE,
    expect_split,
    expected_hosts,
    fetch_status,
    fold,
    format_duration,
    render_status,
)
from cyclone_core.errors import CycloneError, UsageError
from cyclone_core.plural import plural
from cyclone_core.slurm import controller_settings as with_slurm_defaults

__all__ = ("controller", "master", "run", "status")

log = logging.getLogger("cyclone.cli")

_LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

# Options shared by several commands.
ConfigOption = Annotated[
    str | None, typer.Option("--config", "-c", help="TOML file (or Cyclone 2.x INI file) with the settings.")
]
GeneratorOption = Annotated[
    str | None, typer.Option("--generator", help="Registered generator to take tasks from (default: benchmark).")
]
GeneratorOptions = Annotated[
    list[str] | None, typer.Option("--generator-option", "-g", help="Generator option KEY=VALUE (repeatable).")
]
SinkOption = Annotated[
    list[str] | None,
    typer.Option("--sink", help="Registered sink to deliver results to (repeatable; default: sqlite)."),
]
SinkOptions = Annotated[
    list[str] | None, typer.Option("--sink-option", "-s", help="Sink option SINK.KEY=VALUE (repeatable).")
]
JournalOption = Annotated[
    str | None, typer.Option("--journal", help="SQLite journal; a master restarted on it resumes the run.")
]
MetricsOption = Annotated[int | None, typer.Option("--metrics-port", help="Serve Prometheus metrics on this port.")]
HttpOption = Annotated[
    int | None,
    typer.Option("--http-port", min=0, max=65535, help="Serve the web dashboard on this port (docs/dashboard.md)."),
]
PidFileOption = Annotated[str | None, typer.Option("--pid-file", help="One instance per pid file.")]
KeysOption = Annotated[
    str | None,
    typer.Option("--keys", help="Key directory (default: $CYCLONE_KEYS, else ~/.config/cyclone/keys)."),
]
InsecureOption = Annotated[
    bool, typer.Option("--insecure", help="Plaintext without keys: only on a network nobody else can reach.")
]


def _load(
    path: str | None,
    generator: str | None = None,
    generator_options: list[str] | None = None,
    sinks: list[str] | None = None,
    sink_options: list[str] | None = None,
) -> Config:
    """The configuration file (or the defaults) with the command line's choices applied."""
    config = load_config(path) if path else Config()
    if generator and generator != config.generator.name:
        config.generator = GeneratorSettings(name=generator)  # the file's options were for another one
    if sinks:
        config.sinks = {name: config.sinks.get(name, {}) for name in sinks}
    return apply_overrides(config, generator_options or (), sink_options or ())


def _debug() -> bool:
    return os.environ.get("CYCLONE_DEBUG") == "1"


def _configure_logging(settings: LogSettings) -> None:
    """Log as ``[log]`` says: to its file (reopened when logrotate moves it) or stderr."""
    root = logging.getLogger()
    root.setLevel(logging.DEBUG if _debug() else getattr(logging, settings.level.upper()))
    if settings.file:
        try:
            handler: logging.Handler = logging.handlers.WatchedFileHandler(settings.file)
        except OSError as exc:
            raise UsageError(f"log file {settings.file}: {exc.strerror}") from None
        handler.setFormatter(logging.Formatter(_LOG_FORMAT))
        for old in root.handlers[:]:
            root.removeHandler(old)
        root.addHandler(handler)


@contextlib.contextmanager
def _stop_on_signals(stop: Callable[[], None], what: str) -> Iterator[None]:
    """SIGINT and SIGTERM call ``stop`` (the first drains, a second stops at once)."""
    count = 0

    def handler(signum: int, _: object) -> None:
        nonlocal count
        count += 1
        name = signal.Signals(signum).name
        if count == 1:
            log.warning("%s: %s is stopping gracefully (send it again to stop at once)", name, what)
        else:
            log.warning("%s again: %s stops now", name, what)
        stop()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


@contextlib.contextmanager
def _pid_file(path: str) -> Iterator[None]:
    if not path:
        yield
        return
    with PidFile(path):
        yield


# -- cyclone run ------------------------------------------------------------------------------


class _ProgressLine:
    """One self-rewriting line on a terminal: a bar with done/total and the time left when the
    total is known (from the generator, or once it is exhausted), else done and submitted; rate.

    Log records of this process go above it (:meth:`logs_above`): the line is erased, the
    record written, the line drawn again.  The local controllers, in processes of their own,
    start each record by erasing the line (:mod:`~cyclone_core.engine.local`); it is drawn
    again with the next snapshot."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.width = 0
        self._line = ""
        self._lock = threading.Lock()  # snapshots come from the master's loop, records from any thread

    def __call__(self, snapshot: dict[str, Any]) -> None:
        done = snapshot["succeeded"] + snapshot["failed"] + snapshot["quarantined"]
        rate = snapshot["tasks_per_second"]
        generator = snapshot["generator"]
        total = snapshot["submitted"] if generator["exhausted"] else generator["total"]
        if total is None:
            head = f"{done:,} done, {snapshot['submitted']:,} submitted"
        else:
            filled = min(30, 30 * done // total) if total else 30
            head = f"[{'#' * filled}{'.' * (30 - filled)}] {done:,}/{total:,}"
            if rate > 0 and done < total:
                head += f"  {format_duration((total - done) / rate)} left"
        problems = snapshot["failed"] + snapshot["quarantined"]
        with self._lock:
            self._line = f"{head}  {rate:,.0f} tasks/s" + (f"  {problems:,} not ok" if problems else "")
            self._draw()

    def _draw(self) -> None:
        self.stream.write("\r" + self._line.ljust(self.width))
        self.stream.flush()
        self.width = len(self._line)

    def _erase(self) -> None:
        if self.width:
            self.stream.write("\r" + " " * self.width + "\r")
            self.stream.flush()
            self.width = 0

    def clear(self) -> None:
        """Erase the line for good."""
        with self._lock:
            self._erase()
            self._line = ""

    @contextlib.contextmanager
    def above(self) -> Iterator[None]:
        """Erase the line, let the block write whole lines, then draw the line again."""
        with self._lock:
            self._erase()
            try:
                yield
            finally:
                if self._line:
                    self._draw()

    @contextlib.contextmanager
    def logs_above(self) -> Iterator[None]:
        """Within the block, the root logger's handlers that write to the line's stream write
        :meth:`above` it."""
        root = logging.getLogger()
        swapped = [
            (handler, _LogAbove(handler, self))
            for handler in root.handlers
            if isinstance(handler, logging.StreamHandler) and handler.stream is self.stream
        ]
        for old, new in swapped:
            root.removeHandler(old)
            root.addHandler(new)
        try:
            yield
        finally:
            for old, new in swapped:
                root.removeHandler(new)
                root.addHandler(old)


class _LogAbove(logging.Handler):
    """Hands records to ``handler`` with the progress line out of the way."""

    def __init__(self, handler: logging.Handler, line: _ProgressLine) -> None:
        super().__init__(handler.level)
        self.handler = handler
        self.line = line

    def emit(self, record: logging.LogRecord) -> None:
        with self.line.above():
            self.handler.handle(record)


def _print_summary(summary: dict[str, Any]) -> None:
    settled = summary["succeeded"] + summary["failed"] + summary["quarantined"]
    latency = ""
    if summary["latency_ms_p50"] is not None:
        latency = f"; round trip p50 {summary['latency_ms_p50']:.2f} ms, p99 {summary['latency_ms_p99']:.2f} ms"
    rate = summary["tasks_per_second"]
    typer.echo(
        f"run {summary['run_id']}: {plural(settled, 'task')} in {summary['duration_s']:.2f} s "
        f"({rate:,.{0 if rate >= 100 else 1}f} tasks/s){latency}"
    )
    typer.echo(
        f"  {summary['succeeded']:,} succeeded, {summary['failed']:,} failed, "
        f"{summary['quarantined']:,} quarantined ({plural(summary['timed_out'], 'attempt')} timed out, "
        f"{summary['crashed']:,} crashed)"
    )
    _print_errors(summary)
    if summary["interrupted"]:
        typer.echo(
            f"  stopped early: {plural(summary['submitted'] - settled, 'task')} taken from the generator did not run"
        )
    _print_backlog(summary.get("backlog") or {})
    if summary["undelivered"]:
        typer.echo(f"  {plural(summary['undelivered'], 'result')} could not be delivered to the sinks yet")
    if summary["generator_error"]:
        typer.echo(f"  the generator failed: {summary['generator_error']}")


def _print_backlog(backlog: dict[str, dict[str, int]]) -> None:
    """What a resumed run delivered of the results its previous master journaled and the sinks
    did not have yet, for all sinks at once when they agree, else per sink."""
    counts = {(part["delivered"], part["waiting"]) for part in backlog.values()}
    if len(counts) == 1:
        delivered, waiting = counts.pop()
        got = f"{delivered:,} of {waiting:,}" if delivered < waiting else f"{waiting:,}"
        sinks = ", ".join(backlog)
        noun = "result" if waiting == 1 else "results"
        typer.echo(f"  resumed: {got} {noun} journaled before the restart delivered now ({sinks})")
    elif backlog:
        parts = ", ".join(f"{p['delivered']:,} of {p['waiting']:,} to {name}" for name, p in backlog.items())
        typer.echo(f"  resumed: results journaled before the restart delivered now: {parts}")


def _print_errors(summary: dict[str, Any]) -> None:
    """The most common errors, one line each within the terminal's width."""
    errors = summary.get("errors")
    if not errors:
        return
    typer.echo("  most common errors:")
    width = shutil.get_terminal_size().columns
    for error in errors:
        group = ErrorGroup(error["error"], error["count"], error["tasks"])
        typer.echo(format_error_line(group, width, summary["run_id"]))
    shown = sum(error["count"] for error in errors)
    not_ok = summary["failed"] + summary["quarantined"]
    if not_ok > shown:
        typer.echo(f"    and {plural(not_ok - shown, 'task')} with other errors")


@app.command()
def run(  # noqa: PLR0917  (typer passes options as parameters)
    config_path: ConfigOption = None,
    generator: GeneratorOption = None,
    generator_options: GeneratorOptions = None,
    sinks: SinkOption = None,
    sink_options: SinkOptions = None,
    controllers: Annotated[int, typer.Option("--controllers", min=1, help="Local controllers to start.")] = 1,
    workers: Annotated[
        int | None, typer.Option("--workers", min=0, help="Worker processes per controller; 0: one per CPU (default).")
    ] = None,
    journal: JournalOption = None,
    metrics_port: MetricsOption = None,
    http_port: HttpOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as one JSON object.")] = False,
) -> None:
    """Run a whole job here: a master, local controllers and their workers, then a summary.

    Exit code 0 when every task succeeded, 1 when any did not, 2 for a usage or configuration
    error.  Ctrl-C stops gracefully and still prints the summary.
    """
    config = _load(config_path, generator, generator_options, sinks, sink_options)
    if not _debug():
        logging.getLogger("cyclone").setLevel(logging.WARNING)  # the progress line and summary say it all
    if journal is not None:
        config.master.journal = journal
    if metrics_port is not None:
        config.master.metrics_port = metrics_port
    if http_port is not None:
        config.master.http_port = http_port
    bar = _ProgressLine(sys.stderr) if sys.stderr.isatty() else None
    with contextlib.ExitStack() as stack:
        if bar is not None:
            stack.enter_context(bar.logs_above())

        def on_master(the_master: Master) -> None:
            stack.enter_context(_stop_on_signals(the_master.request_stop, "the run"))
            _announce_dashboard(the_master)

        try:
            code, summary = run_local(
                config, controllers=controllers, workers=workers, progress=bar, on_master=on_master
            )
        finally:
            if bar is not None:
                bar.clear()
    if as_json:
        typer.echo(json.dumps(summary))
    else:
        _print_summary(summary)
    raise typer.Exit(code)


def _announce_dashboard(the_master: Master) -> None:
    """Tell the user who started the master how to open its dashboard (the token, once)."""
    if the_master.dashboard is not None:
        typer.echo(the_master.dashboard.announcement(), err=True)


# -- the daemons ------------------------------------------------------------------------------


@app.command()
def master(  # noqa: PLR0917
    config_path: ConfigOption = None,
    bind: Annotated[str | None, typer.Option("--bind", help="Endpoint to listen on, tcp://HOST:PORT.")] = None,
    generator: GeneratorOption = None,
    generator_options: GeneratorOptions = None,
    sinks: SinkOption = None,
    sink_options: SinkOptions = None,
    journal: JournalOption = None,
    pid_file: PidFileOption = None,
    metrics_port: MetricsOption = None,
    http_port: HttpOption = None,
    keys: KeysOption = None,
    insecure: InsecureOption = False,
) -> None:
    """Run the master daemon: hand tasks to controllers, deliver results to the sinks.

    Controllers and status requests are admitted by their CurveZMQ keys (``cyclone keys``).
    SIGTERM or SIGINT stops it gracefully: controllers are told to finish, the journal is
    flushed and the sinks get time to catch up.
    """
    config = _load(config_path, generator, generator_options, sinks, sink_options)
    settings = config.master
    options = {
        "bind": bind,
        "journal": journal,
        "pid_file": pid_file,
        "metrics_port": metrics_port,
        "http_port": http_port,
        "keys": keys,
        "insecure": insecure or None,  # the flag only turns it on
    }
    for name, value in options.items():
        if value is not None:
            setattr(settings, name, value)
    check_endpoint(settings.bind, "--bind" if bind is not None else "master.bind", bind=True)
    _configure_logging(config.log)
    with _pid_file(settings.pid_file):
        the_master = Master(settings, build_generator(config), build_sinks(config))
        with the_master, _stop_on_signals(the_master.request_stop, "the master"):
            _announce_dashboard(the_master)
            code = the_master.run()
    raise typer.Exit(code)


@app.command()
def controller(  # noqa: PLR0917
    config_path: ConfigOption = None,
    master_endpoint: Annotated[
        str | None, typer.Option("--master", help="The master's endpoint, tcp://HOST:PORT.")
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option("--workers", min=0, help="Worker processes; 0: one per CPU, under srun the task's (the default)."),
    ] = None,
    controller_id: Annotated[
        str | None,
        typer.Option("--id", help="Unique controller id (default: HOST-PID; under srun, HOST-JOB.STEP.TASK)."),
    ] = None,
    pid_file: PidFileOption = None,
    token: Annotated[
        str | None, typer.Option("--token", help="Join token from 'cyclone keys token': enroll this controller once.")
    ] = None,
    keys: KeysOption = None,
    insecure: InsecureOption = False,
    stay: Annotated[
        bool, typer.Option("--stay", help="When the master's run ends, wait for the next master instead of exiting.")
    ] = False,
) -> None:
    """Run a controller daemon: take tasks from the master and run them in worker processes.

    It connects with its keypair to the master whose key it pinned (``cyclone keys``), or
    enrolls with a join token first.  It may start before its master and keeps reconnecting.
    When the master's run ends it exits, or with --stay waits for the next master.
    SIGTERM or SIGINT drains it: running tasks finish (or are handed back), results are
    delivered, then it says goodbye.
    """
    from cyclone_core.engine.controller import run_controller  # noqa: PLC0415  (only this command needs it)

    config = _load(config_path)
    settings = config.controller
    options = {
        "master": master_endpoint,
        "workers": workers,
        "id": controller_id,
        "pid_file": pid_file,
        "token": token,
        "keys": keys,
        "insecure": insecure or None,  # the flag only turns it on
        "stay": stay or None,
    }
    for name, value in options.items():
        if value is not None:
            setattr(settings, name, value)
    settings = with_slurm_defaults(settings, os.environ, os.uname().nodename)  # what is still unset
    check_endpoint(settings.master, "--master" if master_endpoint is not None else "controller.master")
    _configure_logging(config.log)
    raise typer.Exit(run_controller(settings))


# -- cyclone status ---------------------------------------------------------------------------


@app.command()
def status(  # noqa: PLR0917
    master_endpoint: Annotated[
        str, typer.Option("--master", help="The master's endpoint, tcp://HOST:PORT.")
    ] = "tcp://127.0.0.1:5678",
    as_json: Annotated[bool, typer.Option("--json", help="Print the master's snapshot as JSON.")] = False,
    timeout: Annotated[float, typer.Option("--timeout", min=0.1, help="Seconds to wait for the master.")] = 5.0,
    keys: KeysOption = None,
    insecure: InsecureOption = False,
    watch: Annotated[
        bool, typer.Option("--watch", help="Show the status again every --interval seconds, until Ctrl-C.")
    ] = False,
    interval: Annotated[float, typer.Option("--interval", min=0.1, help="Seconds between two looks (--watch).")] = 2.0,
    by_host: Annotated[
        bool | None,
        typer.Option(
            "--by-host/--by-controller",
            help=f"Controllers per host, in folded nodesets, or one row each (default: per host above "
            f"{BY_HOST_ABOVE} controllers or with --expect).",
        ),
    ] = None,
    expect: Annotated[
        str | None,
        typer.Option(
            "--expect", help="Hosts that should run controllers, as a nodeset (node[01-32]): names the missing."
        ),
    ] = None,
) -> None:
    """Show a running master's controllers, queue, throughput and failures.

    It asks with a key the master admits as an admin: in the key directory, the master's own
    (on the master's host) or a controller keypair allowed with --admin.  With --watch it
    redraws the status in place on a terminal (elsewhere: one snapshot per interval, each after
    an empty line; with --json one JSON object a line) until Ctrl-C (exit code 0) or until the
    master goes away (exit code 1).
    """
    check_endpoint(master_endpoint, "--master")
    expected = expected_hosts(expect) if expect is not None else None
    client_keys = None if insecure else status_keys(key_dir(keys or ""))

    def fetch() -> dict[str, Any]:
        return fetch_status(master_endpoint, timeout, client_keys)

    def render(snapshot: dict[str, Any], console: Console) -> None:
        render_status(snapshot, console, by_host=by_host, expect=expected)

    if not watch:
        snapshot = fetch()
        if as_json:
            if expected is not None:
                missing, unexpected = expect_split((c["host"] for c in snapshot["controllers"]), expected)
                snapshot["expect"] = {"missing": fold(missing), "not_expected": fold(unexpected)}
            typer.echo(json.dumps(snapshot, indent=2))
        else:
            render(snapshot, Console())
        return
    try:
        _watch_status(fetch, render, master_endpoint, interval, as_json)
    except KeyboardInterrupt:
        raise typer.Exit(0) from None


def _watch_status(
    fetch: Callable[[], dict[str, Any]],
    render: Callable[[dict[str, Any], Console], None],
    endpoint: str,
    interval: float,
    as_json: bool,
) -> None:
    """Show ``fetch()`` with ``render`` every ``interval`` seconds: in place on a terminal, else
    one after the other."""
    out = sys.stdout
    in_place = out.isatty() and not as_json
    drawn = 0  # lines of the last frame on the terminal
    snapshots = 0
    while True:
        try:
            snapshot = fetch()
        except CycloneError as exc:
            if not snapshots:
                raise  # never reached: the one-line error of a plain `cyclone status`
            raise CycloneError(f"the master at {endpoint} went away: {exc}") from None
        snapshots += 1
        if as_json:
            out.write(json.dumps(snapshot) + "\n")
        else:
            width = shutil.get_terminal_size().columns
            console = Console(file=io.StringIO(), width=width, force_terminal=in_place, no_color=not in_place)
            console.print(f"{time.strftime('%H:%M:%S')}, every {interval:g} s (Ctrl-C to stop)", highlight=False)
            render(snapshot, console)
            frame = console.file.getvalue()  # type: ignore[attr-defined]
            if in_place:
                # Back to the first line of the last frame, erase to the end of the screen, redraw.
                out.write((f"\x1b[{drawn}F\x1b[J" if drawn else "") + frame)
                drawn = frame.count("\n")
            else:
                out.write(("\n" if snapshots > 1 else "") + frame)
        out.flush()
        time.sleep(interval)
