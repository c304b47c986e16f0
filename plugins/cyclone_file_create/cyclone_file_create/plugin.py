"""Registers the ``file-create`` task type and generator with Cyclone."""

from __future__ import annotations

from collections.abc import Sequence

from cyclone_core import Panel, Task, TaskGenerator, hookimpl

from cyclone_file_create.generator import FileCreateGenerator
from cyclone_file_create.panel import create_panel
from cyclone_file_create.task import FileCreateTask


@hookimpl
def cyclone_task_types() -> Sequence[type[Task]]:
    """The ``file-create`` task."""
    return [FileCreateTask]


@hookimpl
def cyclone_generators() -> Sequence[type[TaskGenerator]]:
    """The ``file-create`` generator."""
    return [FileCreateGenerator]


@hookimpl
def cyclone_dashboard_panels() -> Sequence[Panel]:
    """The dashboard's grid of the latest check per MDT x OST."""
    return [create_panel()]
