"""Cyclone: run many small tasks across an HPC cluster.

The public API for plugin authors and embedders; everything else is internal.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

from cyclone_core.config import sink_options
from cyclone_core.convert import structure, unstructure
from cyclone_core.dashboard import Cell, Panel
from cyclone_core.errors import ConfigError, CycloneError, PluginError, ResultsRejected, UsageError
from cyclone_core.hookspecs import hookimpl
from cyclone_core.model import (
    Attempt,
    ByteSize,
    Metric,
    MetricKind,
    Outcome,
    Result,
    ResultSink,
    Status,
    Task,
    TaskContext,
    TaskGenerator,
    TaskSpec,
)
from cyclone_core.plugins import get_plugins

if TYPE_CHECKING:
    from cyclone_core.api import Client, LocalCluster
    from cyclone_core.builtins.command import CommandTask
    from cyclone_core.results import read_results

#: Public names imported when first used: the engine and the built-ins are not needed to
#: write a plugin, and ``import cyclone_core`` stays quick.
_LAZY = {
    "Client": "cyclone_core.api",
    "CommandTask": "cyclone_core.builtins.command",
    "LocalCluster": "cyclone_core.api",
    "read_results": "cyclone_core.results",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'cyclone_core' has no attribute {name!r}")
    import importlib  # noqa: PLC0415

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


try:
    __version__ = version("cyclone-core")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0"

__all__ = (
    "Attempt",
    "ByteSize",
    "Cell",
    "Client",
    "CommandTask",
    "ConfigError",
    "CycloneError",
    "LocalCluster",
    "Metric",
    "MetricKind",
    "Outcome",
    "Panel",
    "PluginError",
    "Result",
    "ResultSink",
    "ResultsRejected",
    "Status",
    "Task",
    "TaskContext",
    "TaskGenerator",
    "TaskSpec",
    "UsageError",
    "__version__",
    "get_plugins",
    "hookimpl",
    "read_results",
    "sink_options",
    "structure",
    "unstructure",
)
