"""Registers the Lustre OST task types and generators with Cyclone (the ``lustre-ost`` entry point)."""

from __future__ import annotations

from collections.abc import Sequence

from cyclone_core import Panel, Task, TaskGenerator, hookimpl
from cyclone_lustre_ost.migrate import LustreOstMigrateGenerator, LustreOstMigrateTask
from cyclone_lustre_ost.monitor import LustreOstIoGenerator
from cyclone_lustre_ost.panel import io_panel
from cyclone_lustre_ost.probe import LustreOstIoTask


@hookimpl
def cyclone_task_types() -> Sequence[type[Task]]:
    """``lustre-ost-io`` (the I/O probe) and ``lustre-ost-migrate``."""
    return [LustreOstIoTask, LustreOstMigrateTask]


@hookimpl
def cyclone_generators() -> Sequence[type[TaskGenerator]]:
    """``lustre-ost-io`` (probe rounds) and ``lustre-ost-migrate``."""
    return [LustreOstIoGenerator, LustreOstMigrateGenerator]


@hookimpl
def cyclone_dashboard_panels() -> Sequence[Panel]:
    """The dashboard's grid of the latest probe per OST."""
    return [io_panel()]
