"""Cyclone's own plugin: built-in task types, generators and sinks.

It is registered through cyclone-core's ``cyclone`` entry point like any third-party plugin, so
every run exercises the plugin contract.
"""

from __future__ import annotations

from collections.abc import Sequence

from cyclone_core.builtins.command import CommandTask
from cyclone_core.builtins.generators import (
    BenchmarkGenerator,
    QueueGenerator,
    SweepGenerator,
    TasksFileGenerator,
)
from cyclone_core.builtins.sinks import JsonlSink, SqliteSink
from cyclone_core.builtins.tasks import CrashTask, FailTask, HangTask, NoopTask, SleepTask
from cyclone_core.hookspecs import hookimpl
from cyclone_core.model import ResultSink, Task, TaskGenerator


@hookimpl
def cyclone_task_types() -> Sequence[type[Task]]:
    return [NoopTask, SleepTask, FailTask, CrashTask, HangTask, CommandTask]


@hookimpl
def cyclone_generators() -> Sequence[type[TaskGenerator]]:
    return [BenchmarkGenerator, TasksFileGenerator, SweepGenerator, QueueGenerator]


@hookimpl
def cyclone_sinks() -> Sequence[type[ResultSink]]:
    return [SqliteSink, JsonlSink]
