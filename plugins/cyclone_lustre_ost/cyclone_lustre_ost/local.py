"""The controller's own settings for the Lustre task types: ``[controller.local.lustre]``.

Which ``lfs`` and ``lctl`` a node runs, whether through ``sudo``, and under which directories
a task may create, probe or migrate files are decided by the controller that runs the task,
never by the task: a task's fields come from whoever dispatched it.  ``lustre-ost-io``,
``lustre-ost-migrate`` and ``file-create`` (cyclone-file-create) all read this one table::

    [controller.local.lustre]
    lfs = "/usr/bin/lfs"
    lctl = "/usr/sbin/lctl"
    sudo = false
    roots = ["/lustre/fs1"]

With no ``roots`` a controller runs no Lustre task that names a path: it refuses every one,
saying so, rather than letting a master point it anywhere.
"""

from __future__ import annotations

import os
from typing import Any

import attrs

from cyclone_core import TaskContext
from cyclone_lustre_ost.lustre import LustreTools

__all__ = ("SECTION", "LustreLocal")

#: The ``[controller.local.<section>]`` table the Lustre task types read.
SECTION = "lustre"


def _program(_instance: object, attribute: attrs.Attribute[str], value: str) -> None:
    if not value.strip():
        raise ValueError(f"{attribute.name} must name a program, such as /usr/bin/{attribute.name}")


def _absolute(_instance: object, attribute: attrs.Attribute[tuple[str, ...]], value: tuple[str, ...]) -> None:
    for root in value:
        if not os.path.isabs(root):
            raise ValueError(f"{attribute.name} must be absolute paths, got {root!r}")


@attrs.frozen(kw_only=True)
class LustreLocal:
    """``[controller.local.lustre]``: the Lustre tools and the directories this node allows.

    :param lfs: the ``lfs`` program (a name on ``PATH`` or a path).
    :param lctl: the ``lctl`` program.
    :param sudo: run the tools as ``sudo -n ...`` (never prompts).
    :param roots: directories the tasks may work under (their paths are resolved, symbolic
        links and ``..`` included, before they are compared); empty: none, so every task that
        names a path is refused.
    """

    lfs: str = attrs.field(default="lfs", validator=_program)
    lctl: str = attrs.field(default="lctl", validator=_program)
    sudo: bool = False
    roots: tuple[str, ...] = attrs.field(default=(), validator=_absolute)

    @classmethod
    def of(cls, ctx: TaskContext) -> LustreLocal:
        """The settings a task got in ``ctx``; the defaults (no roots) when it got none, as a
        task run without a controller's settings (``execute`` called directly) does."""
        local: Any = ctx.local
        return local if isinstance(local, LustreLocal) else cls()

    def tools(self, timeout: float) -> LustreTools:
        """The Lustre tools as this controller runs them, each call bounded by ``timeout`` s."""
        return LustreTools(lfs_bin=self.lfs, lctl_bin=self.lctl, sudo=self.sudo, timeout=timeout)

    def refusal(self, path: str) -> str | None:
        """``None`` when ``path`` is one of the roots or under one; else the one-line reason
        the task is refused."""
        resolved = os.path.realpath(path)
        for root in self.roots:
            top = os.path.realpath(root)
            if resolved == top or resolved.startswith(top.rstrip("/") + "/"):
                return None
        setting = "controller.local.lustre.roots"
        if not self.roots:
            return f"{path}: refused: this controller runs no Lustre task on a path ({setting} is empty)"
        return f"{path}: refused: outside this controller's roots {', '.join(self.roots)} ({setting})"
