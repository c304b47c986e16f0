"""Controllers as child processes of this one: the embedded ``cyclone run``.

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
import signal
import sys
import time
from multiprocessing.process import BaseProcess

from cyclone_core.config import ControllerSettings

__all__ = ("LocalControllers",)

log = logging.getLogger("cyclone.local")

_PR_SET_PDEATHSIG = 1


def _child(settings: ControllerSettings, log_level: int) -> None:
    os.setpgrp()  # out of the terminal's process group: Ctrl-C is the master's to handle
    with contextlib.suppress(OSError, AttributeError):  # Linux only
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    logging.basicConfig(level=log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
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
        """Reap every child: wait up to ``timeout`` seconds for them to exit (the master told
        them to), then SIGTERM, then SIGKILL."""
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
