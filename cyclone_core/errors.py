"""Errors a user can cause, and how the CLI reports them.

Every error here carries one line that names the thing at fault and, where it helps, what to
do about it.  The CLI prints that line (no traceback unless ``--debug``) and exits with the
error's ``exit_code``.
"""

from __future__ import annotations

__all__ = ("ConfigError", "CycloneError", "PluginError", "UsageError")


class CycloneError(Exception):
    """Base class for errors meant to be shown to a user as one line."""

    exit_code: int = 1


class UsageError(CycloneError):
    """Wrong command-line usage (exit code 2)."""

    exit_code = 2


class ConfigError(CycloneError):
    """Invalid configuration: a file, key or option value (exit code 2)."""

    exit_code = 2


class PluginError(CycloneError):
    """A plugin could not be loaded, or two plugins claim the same name."""

    exit_code = 1
