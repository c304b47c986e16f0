"""What a round checks: the file system examined once per round, turned into a plan of targets.

For Lustre the plan holds one target per selected (MDT, OST) pair, each with whether the OST
is active; for a plain directory, one target.  The examination runs ``lfs`` and so may take
a while: the generator runs :func:`discover` in a thread.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import attrs
from cyclone_core import CycloneError
from cyclone_lustre_ost import discovery as lustre_discovery
from cyclone_lustre_ost.discovery import format_indexes, parse_rangeset, resolve_mode
from cyclone_lustre_ost.lustre import LustreError, LustreTools

if TYPE_CHECKING:
    from cyclone_file_create.generator import FileCreateGenerator

__all__ = ("DiscoveryError", "Plan", "Target", "discover")


class DiscoveryError(Exception):
    """The file system could not be examined; the message is one line."""


@attrs.frozen
class Target:
    """One check of a round: an (MDT, OST) pair, or the whole directory in plain mode."""

    mdt_index: int | None = None
    ost_index: int | None = None
    active: bool = True

    @property
    def key(self) -> str:
        """The task key: ``mdt0-ost10`` (decimal indexes), or ``plain``."""
        return "plain" if self.ost_index is None else f"mdt{self.mdt_index}-ost{self.ost_index}"


@attrs.frozen
class Plan:
    """What one round checks.

    :param mode: ``lustre`` or ``plain``.
    :param fsname: the Lustre file system name (empty in plain mode).
    :param targets: the checks, MDT by MDT, OSTs in index order.
    """

    mode: str
    fsname: str
    targets: tuple[Target, ...]


def _select_mdts(selection: str, fsname: str, mdts: list[int]) -> list[int]:
    wanted = parse_rangeset(selection)
    if wanted is None:
        return sorted(mdts)
    unknown = sorted(set(wanted) - set(mdts))
    if unknown:
        raise DiscoveryError(
            f"mdts: no MDT {format_indexes(unknown)} in file system '{fsname}' (its MDTs are {format_indexes(mdts)})"
        )
    return wanted


def discover(options: FileCreateGenerator) -> Plan:
    """Examine ``options.path`` and return the plan of one round.

    The OSTs and whether each is active come from ``lfs osts``, which reads the client's own
    target table: it needs no root and never waits for a server that does not answer.

    :raises DiscoveryError: the path is not a directory, a Lustre command failed, or
        ``osts``/``mdts`` name targets the file system does not have.
    """
    path = Path(options.path)
    if not path.is_dir():
        raise DiscoveryError(f"path {path} is not a directory" if path.exists() else f"path {path} does not exist")
    tools = LustreTools(
        lfs_bin=options.lfs_bin, lctl_bin=options.lctl_bin, sudo=options.sudo, timeout=options.timeout_ms / 1000
    )
    if resolve_mode(options.mode, str(path), tools) == "plain":
        return Plan(mode="plain", fsname="", targets=(Target(),))
    try:
        fs = lustre_discovery.discover(tools, str(path))
        osts = lustre_discovery.select(fs, options.osts)
        mdts = _select_mdts(options.mdts, fs.fsname, tools.mdts(str(path)))
    except (LustreError, CycloneError) as exc:
        raise DiscoveryError(str(exc)) from exc
    targets = tuple(Target(mdt, ost.index, ost.active) for mdt in mdts for ost in osts)
    return Plan(mode="lustre", fsname=fs.fsname, targets=targets)
