"""Controllers as child processes of this one, and the embedded run (``cyclone run``) built on
them.

The embedded run's master listens on an ``ipc://`` socket in a directory of mode 0700 made
for the run (and removed after it, see :mod:`~cyclone_core.engine.tempdirs`), so no other local
user can join it or read it; master and controllers speak plaintext there, without keys.

Each child is a fresh interpreter (``spawn``: the master's threads and sockets are not forked)
running :func:`~cyclone_core.engine.controller.run_controller`.  A child leaves the terminal's
process group, so Ctrl-C reaches only the master, which drains its controllers with Shutdown;
and it gets SIGTERM if the master process dies, so no controller outlives its master.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import multiprocessing
import os
import shutil
import signal
import socket
import sys
import time
from collections.abc import Callable
from multiprocessing.process import BaseProcess
from typing import Any

import attrs

from cyclone_core.config import Config, ControllerSettings, build_generator, build_sinks
from cyclone_core.engine import tempdirs
from cyclone_core.engine.error_summary import ErrorSummary
from cyclone_core.engine.execution import embedded_tables
from cyclone_core.engine.master import Master
from cyclone_core.hookspecs import hookimpl
from cyclone_core.model import TaskGenerator
from cyclone_core.plugins import get_plugins

__all__ = ("LocalControllers", "run_local")

log = logging.getLogger("cyclone.local")

_PR_SET_PDEATHSIG = 1


def _child(settings: ControllerSettings, log_level: int) -> None:
    os.setpgrp()  # out of the terminal's process group: Ctrl-C is the master's to handle
    with contextlib.suppress(OSError, AttributeError):  # Linux only
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    # On a terminal each record first erases the line it starts on: cyclone run's progress line.
    erase = "\r\x1b[K" if sys.stderr.isatty() else ""
    logging.basicConfig(
        level=log_level, format=f"{erase}%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    from cyclone_core.engine.controller import run_controller  # noqa: PLC0415  (only the child needs it)

    sys.exit(run_controller(settings))


class LocalControllers:
    """``count`` controllers with ``settings`` in child processes.

    :param count: how many controllers.
    :param settings: their settings (``master`` is the endpoint to connect to).
    """

    def __init__(self, count: int, settings: ControllerSettings) -> None:
        self.count = count
        self.settings = settings
        self.processes: list[BaseProcess] = []
        #: Ids of the controllers that registered with the master (see :meth:`cyclone_controller_joined`).
        self.joined: set[str] = set()
        self._host = socket.gethostname()

    @hookimpl
    def cyclone_controller_joined(self, controller_id: str, host: str, workers: int) -> None:
        """The ``cyclone_controller_joined`` hook: note which controllers registered (register
        this object as a plugin for that)."""
        self.joined.add(controller_id)

    def _registered(self, process: BaseProcess) -> bool:
        # A controller without an id of its own is HOST-PID (cyclone_core.engine.controller).
        return f"{self._host}-{process.pid}" in self.joined

    def start(self) -> None:
        """Start the children."""
        context = multiprocessing.get_context("spawn")
        level = logging.getLogger("cyclone").getEffectiveLevel()
        for index in range(self.count):
            process = context.Process(
                target=_child, args=(self.settings, level), name=f"cyclone-controller-{index}", daemon=False
            )
            process.start()
            self.processes.append(process)

    def all_exited(self) -> bool:
        """Whether every child has exited."""
        return bool(self.processes) and all(p.exitcode is not None for p in self.processes)

    def exit_codes(self) -> list[int | None]:
        """Each child's exit code (``None`` while it runs)."""
        return [p.exitcode for p in self.processes]

    def stop(self, timeout: float = 10.0) -> None:
        """Reap every child: SIGTERM at once to those that never registered (no master told
        them to exit; it makes them go), wait up to ``timeout`` seconds for the others to exit
        (the master told them to), then SIGTERM, then SIGKILL."""
        for process in self.processes:
            if process.exitcode is None and not self._registered(process):
                process.terminate()
        deadline = time.monotonic() + timeout
        for process in self.processes:
            process.join(max(deadline - time.monotonic(), 0.0))
        for process in self.processes:
            if process.exitcode is None:
                log.warning("controller process %d did not exit; terminating it", process.pid)
                process.terminate()
                process.join(5.0)
            if process.exitcode is None:
                process.kill()
                process.join(5.0)
        for process in self.processes:
            process.close()
        self.processes = []


def run_local(
    config: Config,
    *,
    controllers: int = 1,
    workers: int | None = None,
    progress: Callable[[dict[str, Any]], None] | None = None,
    on_master: Callable[[Master], None] | None = None,
    generator: TaskGenerator | None = None,
) -> tuple[int, dict[str, Any]]:
    """Run a whole job in this process: a master on a private ``ipc://`` endpoint plus
    ``controllers`` local controllers, until the generator is exhausted and every task has settled.

    Returns ``cyclone run``'s exit code (0 when every task succeeded, else 1) and the master's
    summary, with ``errors``: the most common errors of the tasks that did not succeed
    (:mod:`~cyclone_core.engine.error_summary`).  The master stops early (and drains) when
    its controllers all exit, or when asked to with :meth:`Master.request_stop` (``on_master``
    receives the master just before it runs, so a caller can wire signals to that).  The child
    controllers are always reaped.

    :param config: the settings, generator and sinks (``bind``, ``pid_file``, ``keys`` and
        ``insecure`` of the master and the controllers are the run's own).
    :param controllers: how many local controllers.
    :param workers: worker processes per controller, 0 for one per CPU; ``None`` keeps
        ``config.controller.workers``.
    :param progress: called with a status snapshot about once a second.
    :param generator: a generator built already (the Python API's); ``None`` builds the
        configuration's.
    """
    # Mode 0700, so the socket in it is this user's alone.
    private = tempdirs.make("run", socket_name=len("master"))
    plugins = get_plugins()
    errors = ErrorSummary()
    # Told of each batch of terminal results by the master; it looks only at those not ok.
    errors_plugin = plugins.register(errors, name=f"cyclone-run-errors-{id(errors)}").name
    try:
        code, summary = _run_local(
            config,
            private,
            controllers=controllers,
            workers=workers,
            progress=progress,
            on_master=on_master,
            generator=generator or build_generator(config),
        )
    finally:
        plugins.unregister(errors_plugin)
        shutil.rmtree(private, ignore_errors=True)
    summary["errors"] = [group.as_dict() for group in errors.top()]
    return code, summary


def _run_local(
    config: Config,
    private: str,
    *,
    controllers: int,
    workers: int | None,
    progress: Callable[[dict[str, Any]], None] | None,
    on_master: Callable[[Master], None] | None,
    generator: TaskGenerator,
) -> tuple[int, dict[str, Any]]:
    plugins = get_plugins()
    settings = attrs.evolve(
        config.master, bind=f"ipc://{os.path.join(private, 'master')}", pid_file="", keys="", insecure=True
    )
    children: LocalControllers | None = None

    def on_progress(snapshot: dict[str, Any]) -> None:
        if children is not None and children.all_exited() and not the_master.stopping:
            log.error("the local controllers exited (codes %s) before the run finished", children.exit_codes())
            the_master.request_stop()
        if progress is not None:
            progress(snapshot)

    the_master = Master(settings, generator, build_sinks(config), progress=on_progress)
    endpoint = the_master.open()
    code: int | None = None
    try:
        controller_settings = attrs.evolve(
            config.controller,
            master=endpoint,
            workers=config.controller.workers if workers is None else workers,
            id="",
            pid_file="",
            keys="",
            token="",
            insecure=True,
            local=_embedded_local(config),
        )
        children = LocalControllers(controllers, controller_settings)
        plugins.register(children, name=f"cyclone-run-controllers-{id(children)}")
        children.start()
        if on_master is not None:
            on_master(the_master)
        code = the_master.run()
    finally:
        if children is not None:
            # After a clean run the master told those that registered to exit; one that never
            # registered (the run ended first) or a failure leaves them running: SIGTERM makes
            # them drain and go.
            children.stop(timeout=3.0 if code is not None else 0.0)
            plugins.unregister(f"cyclone-run-controllers-{id(children)}")
        the_master.close()
    summary = the_master.summary()
    all_ok = summary["succeeded"] == summary["submitted"] and not summary["interrupted"]
    return (0 if code == 0 and all_ok else 1), summary


def _embedded_local(config: Config) -> dict[str, dict[str, Any]]:
    """The embedded controllers' local tables: the user's, and each task type's
    ``embedded_local`` for the sections they leave out (``command`` runs the user's programs)."""
    return embedded_tables(config.controller.local, get_plugins())
