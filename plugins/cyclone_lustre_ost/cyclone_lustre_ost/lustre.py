"""Typed wrappers around the Lustre tools ``lfs`` and ``lctl``, and pure parsers for their output.

Every call runs the tool as a child process in its own process group with a deadline: a client
whose OST does not answer makes ``lfs`` hang in the kernel, and a monitoring probe must report
that instead of hanging with it.  A failed, missing or hung tool raises :class:`LustreError`
with one line naming the command, the exit status and the tool's own error output.

The parsers take the text a tool printed and return plain values; they are pure so that they
can be tested against verbatim output captured from real systems.  Formats (lustre-release
``lustre/utils/lfs.c``, ``liblustreapi.c``, ``lctl``):

* OST names are ``<fsname>-OST<index as %04x>``: **hex** (index 10 is ``OST000a``), while
  ``lfs df`` prints the index in decimal (``[OST:10]``).  Never build names with ClusterShell's
  NodeSet, which pads decimal numbers.
* ``lfs df -v`` prints one row per target, ``<uuid> <1K-blocks> <used> <available> <use%>
  <mount>[OST:<n>]`` optionally followed by state letters, ``<uuid> : inactive device`` for a
  deactivated one, and a ``filesystem_summary:`` row.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import signal
import subprocess
from collections.abc import Callable, Sequence
from typing import TypeVar

import attrs

__all__ = (
    "Layout",
    "LustreError",
    "LustreTools",
    "ObdDevice",
    "Ost",
    "ost_label",
    "ost_name",
    "parse_check_osts",
    "parse_getname",
    "parse_getstripe_yaml",
    "parse_lctl_dl",
    "parse_lfs_df",
    "parse_lfs_mdts",
    "parse_lfs_osts",
    "parse_osc_active",
    "parse_target_obd",
)

T = TypeVar("T")


class LustreError(Exception):
    """A Lustre tool failed, timed out or could not be started; ``str()`` is one line.

    :param command: the argument vector that was run.
    :param returncode: the tool's exit status, or ``None`` if it never finished.
    :param stderr: what the tool printed on standard error.
    """

    def __init__(
        self, message: str, *, command: Sequence[str] = (), returncode: int | None = None, stderr: str = ""
    ) -> None:
        super().__init__(message)
        self.command = tuple(command)
        self.returncode = returncode
        self.stderr = stderr


def ost_label(index: int) -> str:
    """The target part of an OST name: ``10`` -> ``"OST000a"`` (hex, four digits at least)."""
    return f"OST{index:04x}"


def ost_name(fsname: str, index: int) -> str:
    """The full OST name: ``("testfs", 10)`` -> ``"testfs-OST000a"``."""
    return f"{fsname}-{ost_label(index)}"


@attrs.frozen
class Ost:
    """One object storage target as a client sees it.

    :param index: the OST index (decimal).
    :param name: ``<fsname>-OST<hex index>``, e.g. ``"testfs-OST000a"``.
    :param active: whether the client uses it (``False`` for a deactivated or failing target).
    :param flags: the state letters ``lfs df`` prints after the row (``D`` degraded, ``N``
        no-precreate, ``R`` read-only, ``S`` out of space, ``I`` out of inodes, ``f`` flash).
    :param total_kb: capacity in KiB, when known (``lfs df``).
    :param used_kb: used space in KiB, when known.
    :param available_kb: space available to users in KiB, when known.
    """

    index: int
    name: str
    active: bool
    flags: str = ""
    total_kb: int | None = None
    used_kb: int | None = None
    available_kb: int | None = None

    @property
    def label(self) -> str:
        """``"OST000a"``: the name without the file system."""
        return ost_label(self.index)

    @property
    def fsname(self) -> str:
        """The file system part of the name (empty if the tool did not print it)."""
        return self.name.rpartition("-")[0]

    @property
    def fill_percent(self) -> float | None:
        """Used space as a percentage of used plus available, as ``lfs df`` computes ``Use%``
        (blocks reserved for root count as neither); ``None`` when sizes are unknown."""
        if self.used_kb is None or self.available_kb is None:
            return None
        usable = self.used_kb + self.available_kb
        return 100.0 * self.used_kb / usable if usable else 0.0


@attrs.frozen
class Layout:
    """A file's layout as ``lfs getstripe -y`` reports it.

    :param stripe_count: stripes of the first component.
    :param stripe_offset: ``lmm_stripe_offset``: the OST of the first stripe.
    :param osts: OST index of every object, in order, over all components.
    :param components: number of components (1 for a plain layout).
    """

    stripe_count: int
    stripe_offset: int
    osts: tuple[int, ...] = ()
    components: int = 1

    @property
    def striped(self) -> bool:
        """True if the file's data lives on more than one OST or in several components."""
        return self.stripe_count > 1 or self.components > 1 or len(set(self.osts)) > 1


@attrs.frozen
class ObdDevice:
    """One line of ``lctl dl``: ``index status type name uuid refcount``."""

    index: int
    status: str
    type: str
    name: str
    uuid: str
    refcount: int


# -- parsers -------------------------------------------------------------------------------

_DF_ROW = re.compile(
    r"^(?P<uuid>\S+)\s+(?P<total>\d+)\s+(?P<used>\d+)\s+(?P<avail>\d+)\s+(?:\d+|-)%\s+"
    r"(?P<mount>.*)\[(?P<kind>OST|MDT):(?P<index>\d+)\](?:\s+(?P<flags>[A-Za-z?]+))?\s*$"
)
_DF_ERROR = re.compile(r"^(?P<uuid>\S*OST[0-9a-fA-F]+\S*)\s*:\s*(?P<error>\S.*)$")
_TARGET_INDEX = re.compile(r"OST([0-9a-fA-F]{4,})")
_TARGET_LINE = re.compile(r"^\s*(?P<index>\d+): (?P<uuid>\S+) (?P<state>ACTIVE|INACTIVE)\s*$")
_CHECK_LINE = re.compile(r"^(?P<fs>\S+)-OST(?P<index>[0-9a-fA-F]+)-osc-\S+ (?P<state>active|inactive)\.\s*$")
_OSC_ACTIVE = re.compile(r"^osc\.(?P<fs>\S+)-OST(?P<index>[0-9a-fA-F]+)-osc-[^.]+\.active=(?P<value>\d+)\s*$")
_OBJECT_INDEX = re.compile(r"l_ost_idx:\s*(\d+)")
_DL_LINE = re.compile(r"^\s*(\d+)\s+(\S+)\s+(\S+)\s+(\S+)\s+(\S+)\s+(\d+)")


def _uuid_to_name(uuid: str) -> str:
    return uuid.removesuffix("_UUID")


def parse_lfs_df(text: str) -> list[Ost]:
    """Parse ``lfs df [-v] PATH`` (1K-blocks, not ``-h``) into its OSTs, sorted by index.

    MDT rows and the summary are skipped.  ``inactive device`` rows (and rows with any other
    statfs error) become ``active=False`` without sizes; their name gets the file system
    prefix of the other rows when the tool printed only ``OST0003``.
    """
    osts: dict[int, Ost] = {}
    fsname = ""
    for line in text.splitlines():
        if row := _DF_ROW.match(line):
            if row["kind"] != "OST":
                continue
            name = _uuid_to_name(row["uuid"])
            fsname = fsname or name.rpartition("-")[0]
            osts[int(row["index"])] = Ost(
                index=int(row["index"]),
                name=name,
                active=True,
                flags=row["flags"] or "",
                total_kb=int(row["total"]),
                used_kb=int(row["used"]),
                available_kb=int(row["avail"]),
            )
        elif (error := _DF_ERROR.match(line)) and (target := _TARGET_INDEX.search(error["uuid"])):
            index = int(target[1], 16)
            osts[index] = Ost(index=index, name=_uuid_to_name(error["uuid"]), active=False)
    # "OST0003 : inactive device" carries no file system name; borrow it from the other rows.
    return [
        attrs.evolve(ost, name=ost_name(fsname, ost.index)) if fsname and "-" not in ost.name else ost
        for _, ost in sorted(osts.items())
    ]


def _parse_target_list(text: str, kind: str) -> list[Ost]:
    targets = []
    for line in text.splitlines():
        if (match := _TARGET_LINE.match(line)) and f"-{kind}" in match["uuid"]:
            targets.append(
                Ost(index=int(match["index"]), name=_uuid_to_name(match["uuid"]), active=match["state"] == "ACTIVE")
            )
    return sorted(targets, key=lambda ost: ost.index)


def parse_lfs_osts(text: str) -> list[Ost]:
    """Parse ``lfs osts PATH`` (``OBDS:`` then ``0: testfs-OST0000_UUID ACTIVE`` lines)."""
    return _parse_target_list(text, "OST")


def parse_target_obd(text: str) -> list[Ost]:
    """Parse ``lctl get_param lov.*.target_obd`` (``0: testfs-OST0000_UUID ACTIVE|INACTIVE``)."""
    return _parse_target_list(text, "OST")


def parse_lfs_mdts(text: str) -> list[int]:
    """Parse ``lfs mdts PATH`` (``MDTS:`` then ``0: testfs-MDT0000_UUID ACTIVE``) into indexes."""
    return [mdt.index for mdt in _parse_target_list(text, "MDT")]


def _filtered(pairs: list[tuple[str, int, bool]], fsname: str | None) -> dict[int, bool]:
    return {index: state for fs, index, state in pairs if fsname is None or fs == fsname}


def parse_check_osts(text: str, fsname: str | None = None) -> dict[int, bool]:
    """Parse ``lfs check osts`` (``testfs-OST0000-osc-ffff... active.``) into index -> active.

    The tool checks every mounted Lustre file system; pass ``fsname`` to keep one.
    """
    pairs = [
        (m["fs"], int(m["index"], 16), m["state"] == "active")
        for line in text.splitlines()
        if (m := _CHECK_LINE.match(line))
    ]
    return _filtered(pairs, fsname)


def parse_osc_active(text: str, fsname: str | None = None) -> dict[int, bool]:
    """Parse ``lctl get_param osc.*.active`` (``osc.testfs-OST0000-osc-ffff....active=1``)."""
    pairs = [
        (m["fs"], int(m["index"], 16), m["value"] != "0")
        for line in text.splitlines()
        if (m := _OSC_ACTIVE.match(line))
    ]
    return _filtered(pairs, fsname)


def parse_lctl_dl(text: str) -> list[ObdDevice]:
    """Parse ``lctl dl``: ``%3d %s %s %s %s %d`` per device (extra trailing fields ignored)."""
    return [
        ObdDevice(int(m[1]), m[2], m[3], m[4], m[5], int(m[6]))
        for line in text.splitlines()
        if (m := _DL_LINE.match(line))
    ]


def parse_getstripe_yaml(text: str) -> Layout:
    """Parse ``lfs getstripe -y FILE`` for a plain or composite (PFL) layout.

    Only the keys needed are read, line by line (no YAML library): the first
    ``lmm_stripe_count`` and ``lmm_stripe_offset``, every ``l_ost_idx`` and
    ``lcm_entry_count``.  Raises :class:`ValueError` if the text holds no layout.
    """
    values: dict[str, str] = {}
    osts: list[int] = []
    for line in text.splitlines():
        # Objects print as "- l_ost_idx: 3" (-y) or "- 0: { l_ost_idx: 3, l_fid: ... }" (PFL).
        if match := _OBJECT_INDEX.search(line):
            osts.append(int(match[1]))
            continue
        key, sep, value = line.strip().partition(":")
        if sep:
            values.setdefault(key, value.strip())
    if "lmm_stripe_offset" not in values and not osts:
        raise ValueError("no lmm_stripe_offset in 'lfs getstripe -y' output")
    try:
        offset = int(values["lmm_stripe_offset"]) if "lmm_stripe_offset" in values else osts[0]
        count = int(values.get("lmm_stripe_count", len(osts) or 1))
        components = int(values.get("lcm_entry_count", 1))
    except ValueError as exc:
        raise ValueError(f"unreadable 'lfs getstripe -y' output: {exc}") from None
    return Layout(stripe_count=count, stripe_offset=offset, osts=tuple(osts), components=components)


def parse_getname(text: str) -> str:
    """Parse ``lfs getname PATH`` (``testfs-ffff8803c9c0f000 /mnt/testfs``) into the fsname."""
    instance = text.split(maxsplit=1)[0] if text.split() else ""
    fsname = instance.rpartition("-")[0]
    if not fsname:
        raise ValueError(f"unexpected 'lfs getname' output {text.strip()!r}")
    return fsname


# -- running the tools ---------------------------------------------------------------------


def _one_line(text: str) -> str:
    return "; ".join(line.strip() for line in text.splitlines() if line.strip())


@attrs.frozen
class LustreTools:
    """Runs ``lfs`` and ``lctl``; every call is bounded by ``timeout`` seconds.

    :param lfs_bin: the ``lfs`` program (name on ``PATH`` or a path).
    :param lctl_bin: the ``lctl`` program.
    :param sudo: prefix every command with ``sudo -n`` (never prompts).
    :param timeout: seconds a single tool call may take before it is killed.
    """

    lfs_bin: str = "lfs"
    lctl_bin: str = "lctl"
    sudo: bool = False
    timeout: float = 60.0

    def run(self, binary: str, *args: str) -> str:
        """Run one tool and return its standard output; raise :class:`LustreError` otherwise."""
        command = [*(("sudo", "-n") if self.sudo else ()), binary, *args]
        shown = shlex.join(command)
        try:
            # Own session: on timeout the whole group (sudo and lfs under it) is killed.
            proc = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                start_new_session=True,
            )
        except OSError as exc:
            raise LustreError(f"{shown}: cannot run {command[0]}: {exc.strerror}", command=command) from None
        try:
            stdout, stderr = proc.communicate(timeout=self.timeout)
        except subprocess.TimeoutExpired:
            _kill(proc)
            raise LustreError(f"{shown} timed out after {self.timeout:g} s", command=command) from None
        if proc.returncode != 0:
            status = (
                f"was killed by signal {-proc.returncode}"
                if proc.returncode < 0
                else f"exited with status {proc.returncode}"
            )
            raise LustreError(
                f"{shown} {status}: {_one_line(stderr) or 'no error output'}",
                command=command,
                returncode=proc.returncode,
                stderr=stderr,
            )
        return stdout

    def lfs(self, *args: str) -> str:
        """Run ``lfs ARGS`` and return its output."""
        return self.run(self.lfs_bin, *args)

    def lctl(self, *args: str) -> str:
        """Run ``lctl ARGS`` and return its output."""
        return self.run(self.lctl_bin, *args)

    def _parsed(self, parser: Callable[[str], T], text: str, command: str) -> T:
        try:
            return parser(text)
        except ValueError as exc:
            raise LustreError(f"{command}: {exc}") from None

    # -- discovery ---------------------------------------------------------------------

    def df(self, path: str) -> list[Ost]:
        """OSTs with their fill levels (``lfs df -v PATH``), inactive ones as ``active=False``.

        ``-v`` makes ``lfs df`` list deactivated targets too; without it they are left out.
        """
        osts = parse_lfs_df(self.lfs("df", "-v", path))
        if not osts:
            raise LustreError(f"lfs df -v {path}: no OSTs listed (is {path} on a Lustre file system?)")
        return osts

    def osts(self, path: str) -> list[Ost]:
        """OSTs and whether the client uses them (``lfs osts PATH``); no sizes.

        Cheap and safe: it reads the client's own target table and never waits for a server.
        """
        osts = parse_lfs_osts(self.lfs("osts", path))
        if not osts:
            raise LustreError(f"lfs osts {path}: no OSTs listed (is {path} on a Lustre file system?)")
        return osts

    def check_osts(self, fsname: str | None = None) -> dict[int, bool]:
        """Ping every OST (``lfs check osts``; usually needs root) -> index -> answered.

        ``lfs check`` covers every mounted Lustre file system; ``fsname`` keeps one.
        """
        return parse_check_osts(self.lfs("check", "osts"), fsname)

    def mdts(self, path: str) -> list[int]:
        """MDT indexes of the file system holding ``path`` (``lfs mdts PATH``)."""
        return parse_lfs_mdts(self.lfs("mdts", path))

    def mdt_count(self, path: str) -> int:
        """How many MDTs the file system holding ``path`` has."""
        return len(self.mdts(path))

    def fsname(self, path: str) -> str:
        """The file system name of ``path`` (``lfs getname PATH``)."""
        return self._parsed(parse_getname, self.lfs("getname", path), f"lfs getname {path}")

    def osc_active(self, fsname: str | None = None) -> dict[int, bool]:
        """Index -> active from ``lctl get_param osc.*.active``."""
        return parse_osc_active(self.lctl("get_param", "osc.*.active"), fsname)

    def target_obd(self) -> list[Ost]:
        """OSTs from ``lctl get_param lov.*.target_obd``."""
        return parse_target_obd(self.lctl("get_param", "lov.*.target_obd"))

    def devices(self) -> list[ObdDevice]:
        """The client's OBD devices (``lctl dl``)."""
        return parse_lctl_dl(self.lctl("dl"))

    # -- layouts -----------------------------------------------------------------------

    def setstripe(self, file: str, ost_index: int, count: int = 1) -> None:
        """Create empty ``file`` with ``count`` stripes starting at ``ost_index``.

        The MDS *starts* at that OST and skips inactive or full ones, so the object may land
        elsewhere: confirm with :meth:`stripe_index`.
        """
        self.lfs("setstripe", "-c", str(count), "-i", str(ost_index), file)

    def getstripe(self, file: str) -> Layout:
        """The layout of ``file`` (``lfs getstripe -y FILE``)."""
        return self._parsed(parse_getstripe_yaml, self.lfs("getstripe", "-y", file), f"lfs getstripe -y {file}")

    def stripe_index(self, file: str) -> int:
        """The OST holding the first object of ``file`` (``lmm_stripe_offset``)."""
        return self.getstripe(file).stripe_offset

    def mkdir_on_mdt(self, directory: str, mdt_index: int) -> None:
        """Create ``directory`` on MDT ``mdt_index`` (``lfs mkdir -i N DIR``)."""
        self.lfs("mkdir", "-i", str(mdt_index), directory)

    def migrate(
        self, file: str, ost_index: int, *, block: bool = True, direct_io: bool = True, stripe_count: int = 1
    ) -> None:
        """Move the data of ``file`` to OST ``ost_index`` (``lfs migrate``).

        :param block: block other access during the copy (``--block``), else give up when the
            file is accessed (``--non-block``).
        :param direct_io: copy with O_DIRECT (the default); ``False`` adds ``--non-direct``.
        :param stripe_count: stripes of the new layout.
        """
        args = ["migrate", "--block" if block else "--non-block"]
        if not direct_io:
            args.append("--non-direct")
        self.lfs(*args, "-c", str(stripe_count), "-i", str(ost_index), file)


def _kill(proc: subprocess.Popen[str]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        proc.kill()
    # A descendant that escaped the group may hold the pipes; do not wait for it forever.
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.communicate(timeout=5)
