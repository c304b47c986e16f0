"""Built-in task types: the smallest tasks that exercise every path of the engine."""

from __future__ import annotations

import ctypes
import os
import signal
import threading
import time
from typing import ClassVar

import attrs

from cyclone_core.model import Task, TaskContext

__all__ = ("CrashTask", "FailTask", "HangTask", "NoopTask", "SleepTask")


@attrs.define(kw_only=True)
class NoopTask(Task):
    """Does nothing; measures the engine's own overhead."""

    name: ClassVar[str] = "noop"

    def execute(self, ctx: TaskContext) -> None:
        return None


@attrs.define(kw_only=True)
class SleepTask(Task):
    """Sleeps for ``seconds``."""

    name: ClassVar[str] = "sleep"
    seconds: float = attrs.field(default=1.0, validator=attrs.validators.ge(0))

    def execute(self, ctx: TaskContext) -> None:
        time.sleep(self.seconds)


@attrs.define(kw_only=True)
class FailTask(Task):
    """Raises ``RuntimeError(message)``: a task that fails cleanly."""

    name: ClassVar[str] = "fail"
    message: str = "this task always fails"

    def execute(self, ctx: TaskContext) -> None:
        raise RuntimeError(self.message)


@attrs.define(kw_only=True)
class CrashTask(Task):
    """Kills its own worker process with ``signal`` (default SIGKILL); with SIGSEGV by a real
    invalid memory access, as a broken C extension would."""

    name: ClassVar[str] = "crash"
    signal: int = int(signal.SIGKILL)

    def execute(self, ctx: TaskContext) -> None:
        if self.signal == signal.SIGSEGV:
            ctypes.string_at(0)  # reads address 0
        os.kill(os.getpid(), self.signal)
        time.sleep(60)  # the signal may be delivered asynchronously


@attrs.define(kw_only=True)
class HangTask(Task):
    """Never returns; only a timeout ends it."""

    name: ClassVar[str] = "hang"

    def execute(self, ctx: TaskContext) -> None:
        threading.Event().wait()
