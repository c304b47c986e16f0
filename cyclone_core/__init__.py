"""Cyclone: run many small tasks across an HPC cluster.

The public API for plugin authors and embedders; everything else is internal.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from cyclone_core.config import sink_options
from cyclone_core.convert import structure, unstructure
from cyclone_core.errors import ConfigError, CycloneError, PluginError, UsageError
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

try:
    __version__ = version("cyclone-core")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0"

__all__ = (
    "Attempt",
    "ByteSize",
    "ConfigError",
    "CycloneError",
    "Metric",
    "MetricKind",
    "Outcome",
    "PluginError",
    "Result",
    "ResultSink",
    "Status",
    "Task",
    "TaskContext",
    "TaskGenerator",
    "TaskSpec",
    "UsageError",
    "__version__",
    "get_plugins",
    "hookimpl",
    "sink_options",
    "structure",
    "unstructure",
)
