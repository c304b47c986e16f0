"""Cyclone's own plugin: built-in task types, generators and sinks.

It is registered through cyclone-core's ``cyclone`` entry point like any third-party plugin, so
every run exercises the plugin contract.
"""

from __future__ import annotations

from collections.abc import Sequence

from cyclone_core.builtins.tasks import CrashTask, FailTask, HangTask, NoopTask, SleepTask
from cyclone_core.hookspecs import hookimpl
from cyclone_core.model import Task


@hookimpl
def cyclone_task_types() -> Sequence[type[Task]]:
    return [NoopTask, SleepTask, FailTask, CrashTask, HangTask]
