"""Which OSTs a file system has, which of them to work on, and whether a path is Lustre at all.

Selections are ClusterShell RangeSets of **decimal** OST indexes (``0-11,20``), the numbers
``lfs df`` prints in ``[OST:10]``; names are always built from the index (``OST000a``), never
with NodeSet, which would pad decimal digits.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence

import attrs
from ClusterShell.RangeSet import RangeSet, RangeSetParseError

from cyclone_core import CycloneError
from cyclone_lustre_ost.lustre import CheckedOst, LustreError, LustreTools, Ost

__all__ = (
    "ADMIN_STATES",
    "MODES",
    "SOURCES",
    "FileSystem",
    "admin_state",
    "check_rangeset",
    "discover",
    "format_indexes",
    "lustre_mount_of",
    "parse_rangeset",
    "resolve_mode",
    "select",
)

log = logging.getLogger("cyclone.lustre_ost")

#: Values of the ``mode`` option: detect, force Lustre, or treat the path as a plain directory.
MODES = ("auto", "lustre", "plain")


def parse_rangeset(text: str) -> list[int] | None:
    """``"0-11,20"`` -> sorted indexes; an empty string means "all" (``None``).

    Raises :class:`ValueError` naming the text if it is not a RangeSet of whole numbers.
    """
    if not text.strip():
        return None
    try:
        return sorted({int(item) for item in RangeSet(text.strip())})
    except (RangeSetParseError, ValueError) as exc:
        raise ValueError(f"{text!r} is not a RangeSet of OST indexes such as '0-11,20' ({exc})") from None


def check_rangeset(_instance: object, attribute: attrs.Attribute[str], value: str) -> None:
    """attrs validator for RangeSet options; the error names the option."""
    try:
        parse_rangeset(value)
    except ValueError as exc:
        raise ValueError(f"{attribute.name}: {exc}") from None


def format_indexes(indexes: Iterable[int]) -> str:
    """``[0, 1, 2, 3, 20]`` -> ``"0-3,20"`` (decimal, unpadded)."""
    return str(RangeSet.fromlist([str(i) for i in sorted(set(indexes))])) or "none"


@attrs.frozen
class FileSystem:
    """What discovery found: the file system's name and its OSTs, sorted by index."""

    fsname: str
    osts: tuple[Ost, ...]

    def by_index(self) -> dict[int, Ost]:
        """Index -> OST."""
        return {ost.index: ost for ost in self.osts}


#: Values of the ``discovery`` option: where the list of OSTs and their state comes from.
SOURCES = ("osts", "df", "lctl", "check")


def discover(tools: LustreTools, path: str, source: str = "osts") -> FileSystem:
    """List the OSTs of the file system holding ``path``.

    :param source: ``osts`` (default) runs ``lfs osts``: it reads the client's own target
        table, so it neither needs root nor waits for a server that does not answer.  ``df``
        runs ``lfs df -v``, which adds fill levels and state flags but asks every OST; a target
        whose statfs fails is listed as not active, with the tool's message.  ``lctl`` reads
        ``lctl get_param lov.*.target_obd``.  ``check`` pings every OST with ``lfs check osts``
        (usually needs root: set ``sudo``), as Cyclone 2.x did; the OSTs come from ``lfs osts``
        and one whose ping failed, which ``lfs check`` reports on stderr only, is not active.
    """
    if source == "df":
        osts = tools.df(path)
        return FileSystem(fsname=next((o.fsname for o in osts if o.fsname), "") or tools.fsname(path), osts=tuple(osts))
    fsname = tools.fsname(path)
    if source == "osts":
        osts = tools.osts(path)
    elif source == "lctl":
        osts = [ost for ost in tools.target_obd() if ost.fsname == fsname]
    else:
        checked = {ost.index: ost for ost in tools.check_osts(fsname)}
        osts = [_checked(ost, checked.get(ost.index)) for ost in tools.osts(path)]
    if not osts:
        raise LustreError(f"no OSTs of file system '{fsname}' found with discovery '{source}'")
    return FileSystem(fsname=fsname, osts=tuple(osts))


def _checked(ost: Ost, checked: CheckedOst | None) -> Ost:
    """An OST of ``lfs osts`` with the outcome of its ping (none: it was not pinged)."""
    if checked is None:
        return attrs.evolve(ost, active=False, error="not answered in 'lfs check osts'")
    return attrs.evolve(ost, active=checked.active, error=checked.error)


#: Values of an OST's administrative state: in service, drained (takes no new objects on
#: purpose) or retired (deactivated for good).  Neither of the last two is a fault.
ADMIN_STATES = ("", "drained", "retired")


def admin_state(ost: Ost, drained: Iterable[int], retired: Iterable[int]) -> str:
    """``"retired"`` for an OST listed as retired, ``"drained"`` for one listed as drained or
    flagged ``N`` (no precreate) by ``lfs df``, else ``""``.

    A drained OST (``max_create_count=0`` on the MDS) still shows ACTIVE on clients; a retired
    one stays INACTIVE.  Only the operator knows either is on purpose, hence the lists.
    """
    if ost.index in set(retired):
        return "retired"
    if ost.index in set(drained) or "N" in ost.flags:
        return "drained"
    return ""


def select(fs: FileSystem, selection: str, *, option: str = "osts") -> list[Ost]:
    """The OSTs of ``fs`` named by the RangeSet ``selection`` (empty: all of them).

    An index the file system does not have is an error naming it and the known range.
    """
    wanted = parse_rangeset(selection)
    known = fs.by_index()
    if wanted is None:
        return list(fs.osts)
    unknown = [i for i in wanted if i not in known]
    if unknown:
        raise CycloneError(
            f"{option}: no OST {format_indexes(unknown)} in file system '{fs.fsname}' "
            f"(its OSTs are {format_indexes(known)})"
        )
    return [known[i] for i in wanted]


def lustre_mount_of(path: str, mounts_file: str = "/proc/mounts") -> str | None:
    """The Lustre mount point holding ``path`` according to ``/proc/mounts``, or ``None``."""
    real = os.path.realpath(path)
    best: tuple[str, str] | None = None
    try:
        with open(mounts_file) as mounts:
            entries: Sequence[list[str]] = [line.split() for line in mounts]
    except OSError:
        return None
    for fields in entries:
        if len(fields) < 3:
            continue
        # /proc/mounts escapes spaces as \040.
        mount_point, fstype = fields[1].replace("\\040", " "), fields[2]
        inside = real == mount_point or real.startswith(mount_point.rstrip("/") + "/")
        if inside and (best is None or len(mount_point) > len(best[0])):
            best = (mount_point, fstype)
    return best[0] if best and best[1] == "lustre" else None


def resolve_mode(mode: str, path: str, tools: LustreTools) -> str:
    """``"lustre"`` or ``"plain"`` for ``path``.

    ``auto`` says Lustre when ``/proc/mounts`` puts the path on a ``lustre`` mount, or when
    ``lfs getname PATH`` succeeds (a client whose mount table is unusual, or a stand-in);
    a missing or failing ``lfs`` means a plain directory.
    """
    if mode != "auto":
        return mode
    if lustre_mount_of(path):
        return "lustre"
    try:
        tools.fsname(path)
    except LustreError as exc:
        log.warning("%s is not on Lustre (%s); measuring it as a plain directory", path, exc)
        return "plain"
    return "lustre"
