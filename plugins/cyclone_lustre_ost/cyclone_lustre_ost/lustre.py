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
  deactivated one, ``<uuid> : <strerror>`` for a target whose statfs failed (the tool then
  exits non-zero but still prints every row), and a ``filesystem_summary:`` row.
* ``lfs check osts`` reports a failed ping on stderr only and exits 0.
* ``lctl get_param`` prints short values on the ``name=`` line, long ones after it.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shlex
import signal
import subprocess
from collections.abc import Callable, Sequence
from typing import TypeVar

import attrs

__all__ = (
    "PLACEMENT_ERRORS",
    "CheckedOst",
    "Completed",
    "Component",
    "Layout",
    "LustreError",
    "LustreTools",
    "ObdDevice",
    "Ost",
    "ost_label",
    "ost_name",
    "parse_check_osts",
    "parse_get_param",
    "parse_getname",
    "parse_getstripe_yaml",
    "parse_lctl_dl",
    "parse_lfs_df",
    "parse_lfs_mdts",
    "parse_lfs_osts",
    "parse_osc_active",
    "parse_target_obd",
    "parse_version",
    "setstripe_reason",
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
    :param active: whether the client can use it (``False`` for a deactivated target, or one
        whose ``statfs`` or ping failed).
    :param flags: the state letters ``lfs df`` prints after the row (``D`` degraded, ``N``
        no-precreate, ``R`` read-only, ``S`` out of space, ``I`` out of inodes, ``f`` flash).
    :param total_kb: capacity in KiB, when known (``lfs df``).
    :param used_kb: used space in KiB, when known.
    :param available_kb: space available to users in KiB, when known.
    :param error: why it is not usable beyond being deactivated, as the tool said it
        (``"Input/output error"``, ``"Cannot send after transport endpoint shutdown (108)"``).
    """

    index: int
    name: str
    active: bool
    flags: str = ""
    total_kb: int | None = None
    used_kb: int | None = None
    available_kb: int | None = None
    error: str = ""

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
class Component:
    """One component of a file's layout (a plain layout has exactly one).

    :param pattern: ``lmm_pattern``: ``raid0`` for data on OSTs, ``mdt`` for Data-on-MDT.
    :param stripe_count: ``lmm_stripe_count`` (0 for a Data-on-MDT component).
    :param stripe_offset: ``lmm_stripe_offset``; ``-1`` while not instantiated, and ``0`` for a
        Data-on-MDT component, which has no OST object at all.
    :param osts: OST index of every object of the component, in stripe order.
    :param instantiated: whether its objects exist (``lcme_flags`` has ``init``; always true
        for a plain layout).
    """

    pattern: str = "raid0"
    stripe_count: int = 1
    stripe_offset: int = -1
    osts: tuple[int, ...] = ()
    instantiated: bool = True

    @property
    def on_mdt(self) -> bool:
        """Data-on-MDT: the data lives on the MDT, not on an OST."""
        return self.pattern.split(",")[0] == "mdt"

    @property
    def objects(self) -> tuple[int, ...]:
        """The OSTs this component's data is on: none for Data-on-MDT or an uninstantiated
        component; the stripe offset when the output listed no objects (``getstripe -c -i``)."""
        if self.on_mdt or not self.instantiated:
            return ()
        return self.osts or ((self.stripe_offset,) if self.stripe_offset >= 0 else ())


@attrs.frozen
class Layout:
    """A file's layout as ``lfs getstripe -y`` reports it, component by component.

    :param components: the components in order (one for a plain layout).
    :param composite: whether the tool printed a composite (``lcm_*``) layout.
    """

    components: tuple[Component, ...]
    composite: bool = False

    @property
    def osts(self) -> tuple[int, ...]:
        """The OST of every object over the instantiated OST components, in order."""
        return tuple(index for component in self.components for index in component.objects)

    @property
    def dom(self) -> bool:
        """Whether a component keeps data on the MDT (Data-on-MDT)."""
        return any(component.on_mdt for component in self.components)

    @property
    def stripe_offset(self) -> int | None:
        """The OST of the first object, or ``None`` when the file has no OST object (a
        Data-on-MDT-only file, or nothing instantiated)."""
        return self.osts[0] if self.osts else None

    @property
    def stripe_count(self) -> int:
        """Stripes of the first OST component (1 when there is none)."""
        return next((c.stripe_count for c in self.components if not c.on_mdt), 1)

    @property
    def striped(self) -> bool:
        """True if the file's data lives on more than one OST."""
        return len(set(self.osts)) > 1

    def describe(self) -> str:
        """Where the data is, for messages: ``"OST0000,OST0001"``, ``"MDT (Data-on-MDT)"``."""
        places = [ost_label(i) for i in dict.fromkeys(self.osts)]
        if self.dom:
            places.insert(0, "the MDT (Data-on-MDT)")
        return ",".join(places) or "no OST (no object instantiated)"


@attrs.frozen
class ObdDevice:
    """One line of ``lctl dl``: ``index status type name uuid refcount``."""

    index: int
    status: str
    type: str
    name: str
    uuid: str
    refcount: int


@attrs.frozen
class CheckedOst:
    """One OST as ``lfs check osts`` reported it: answered, or the error printed on stderr."""

    index: int
    fsname: str
    error: str = ""

    @property
    def active(self) -> bool:
        """Whether the ping was answered."""
        return not self.error


# -- parsers -------------------------------------------------------------------------------

_DF_HEADER = re.compile(r"^UUID\s+(?P<size>\S+)\s+(?P<used>\S+)\s+(?P<avail>\S+)\s+(?P<ratio>\S+)\s+Mounted on\s*$")
_DF_ROW = re.compile(
    r"^(?P<uuid>\S+)\s+(?P<total>\d+)\s+(?P<used>\d+)\s+(?P<avail>\d+)\s+(?:\d+|-)%\s+"
    r"(?P<mount>.*)\[(?P<kind>OST|MDT):(?P<index>\d+)\](?:\s+(?P<flags>[A-Za-z?]+))?\s*$"
)
_DF_ERROR = re.compile(r"^(?P<uuid>\S*OST[0-9a-fA-F]+\S*)\s*:\s*(?P<error>\S.*?)\s*$")
_TARGET_INDEX = re.compile(r"OST([0-9a-fA-F]{4,})")
_TARGET_LINE = re.compile(r"^\s*(?P<index>\d+): (?P<uuid>\S+) (?P<state>ACTIVE|INACTIVE)\s*$")
_OSC = r"(?P<fs>\S+)-OST(?P<index>[0-9a-fA-F]+)-osc-[0-9a-fA-F]+"
_CHECK_ACTIVE = re.compile(rf"^{_OSC} active\.\s*$")
_CHECK_ERROR = re.compile(rf"error: check '{_OSC}': (?P<error>.*?)\s*$")
_PARAM_LINE = re.compile(r"^(?P<name>[A-Za-z0-9_*\-]+(?:\.[A-Za-z0-9_*\-]+)+)=(?P<value>.*)$")
_OSC_ACTIVE = re.compile(rf"^osc\.{_OSC}\.active$")
_OBJECT_INDEX = re.compile(r"l_ost_idx:\s*(\d+)")
_DL_LINE = re.compile(r"^\s*(\d+)\s+(\S+)\s+(\S+)\s+(\S+)\s+(\S+)\s+(\d+)")
_VERSION = re.compile(r"(\d+)\.(\d+)(?:\.(\d+))?")


def _uuid_to_name(uuid: str) -> str:
    return uuid.removesuffix("_UUID")


def parse_lfs_df(text: str) -> list[Ost]:
    """Parse ``lfs df [-v] PATH`` (1K-blocks) into its OSTs, sorted by index.

    MDT rows and the summary are skipped.  ``inactive device`` rows and rows with a statfs
    error (``testfs-OST0003_UUID : Input/output error``) become ``active=False`` without sizes,
    the statfs error in ``error``; their name gets the file system prefix of the other rows when
    the tool printed only ``OST0003``.  Output of ``lfs df -h``/``-H`` (header ``bytes``) or
    ``-i`` (``Inodes``) is refused with :class:`ValueError`: its numbers are not KiB.
    """
    osts: dict[int, Ost] = {}
    fsname = ""
    for number, line in enumerate(text.splitlines(), start=1):
        if header := _DF_HEADER.match(line):
            if header["size"] != "1K-blocks":
                raise ValueError(
                    f"line {number}: column '{header['size']}' instead of '1K-blocks': this is "
                    f"'lfs df -h', '-H' or '-i' output, not sizes in KiB"
                )
        elif row := _DF_ROW.match(line):
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
            reason = "" if error["error"] == "inactive device" else error["error"]  # deactivated: nothing to add
            osts[index] = Ost(index=index, name=_uuid_to_name(error["uuid"]), active=False, error=reason)
    # "OST0003 : inactive device" carries no file system name; borrow it from the other rows.
    return [
        attrs.evolve(ost, name=ost_name(fsname, ost.index)) if fsname and "-" not in ost.name else ost
        for _, ost in sorted(osts.items())
    ]


def parse_get_param(text: str) -> dict[str, str]:
    """Parse ``lctl get_param NAME...`` output into name -> value.

    ``lctl`` prints ``name=value`` on one line when the value has no newline and value plus
    name stay within 80 characters, and otherwise ``name=`` with the value on the lines after
    it (``read_param`` in ``lustre/utils/lustre_cfg.c``); both forms are read.
    """
    params: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in text.splitlines():
        if match := _PARAM_LINE.match(line):
            current = params.setdefault(match["name"], [])
            if match["value"]:
                current.append(match["value"])
        elif current is not None and line.strip():
            current.append(line)
    return {name: "\n".join(lines) for name, lines in params.items()}


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
    """Parse ``lctl get_param lov.*.target_obd`` (``0: testfs-OST0000_UUID ACTIVE|INACTIVE``),
    in either of ``lctl``'s layouts (see :func:`parse_get_param`)."""
    values = [value for name, value in parse_get_param(text).items() if name.endswith(".target_obd")]
    return _parse_target_list("\n".join(values), "OST")


def parse_lfs_mdts(text: str) -> list[int]:
    """Parse ``lfs mdts PATH`` (``MDTS:`` then ``0: testfs-MDT0000_UUID ACTIVE``) into indexes."""
    return [mdt.index for mdt in _parse_target_list(text, "MDT")]


def parse_check_osts(stdout: str, stderr: str, fsname: str | None = None) -> list[CheckedOst]:
    """Parse ``lfs check osts``: ``<osc> active.`` on stdout for each OST that answered, and
    ``lfs check: error: check '<osc>': <strerror> (<errno>)`` on **stderr** for each that did not
    (liblustreapi ``do_target_check``; the tool's ``inactive.`` branch is dead code and its exit
    status stays 0).  An OST in neither stream was not checked at all: compare with ``lfs osts``.

    The tool checks every mounted Lustre file system; pass ``fsname`` to keep one.
    """
    found: dict[tuple[str, int], CheckedOst] = {}
    for line in stdout.splitlines():
        if match := _CHECK_ACTIVE.match(line):
            found[match["fs"], int(match["index"], 16)] = CheckedOst(int(match["index"], 16), match["fs"])
    for line in stderr.splitlines():
        if match := _CHECK_ERROR.search(line):
            ost = CheckedOst(int(match["index"], 16), match["fs"], match["error"])
            found[ost.fsname, ost.index] = ost
    return [ost for _, ost in sorted(found.items()) if fsname is None or ost.fsname == fsname]


def parse_osc_active(text: str, fsname: str | None = None) -> dict[int, bool]:
    """Parse ``lctl get_param osc.*.active`` (``osc.testfs-OST0000-osc-ffff....active=1``)."""
    states = {}
    for name, value in parse_get_param(text).items():
        if (match := _OSC_ACTIVE.match(name)) and (fsname is None or match["fs"] == fsname):
            states[int(match["index"], 16)] = value.strip() != "0"
    return states


def parse_lctl_dl(text: str) -> list[ObdDevice]:
    """Parse ``lctl dl``: ``%3d %s %s %s %s %d`` per device (extra trailing fields ignored)."""
    return [
        ObdDevice(int(m[1]), m[2], m[3], m[4], m[5], int(m[6]))
        for line in text.splitlines()
        if (m := _DL_LINE.match(line))
    ]


def _component(values: dict[str, str], osts: list[int], composite: bool) -> Component:
    flags = values.get("lcme_flags", "init")
    try:
        return Component(
            pattern=values.get("lmm_pattern", "raid0"),
            stripe_count=int(values.get("lmm_stripe_count", len(osts) or 1)),
            stripe_offset=int(values.get("lmm_stripe_offset", osts[0] if osts else -1)),
            osts=tuple(osts),
            instantiated=not composite or "init" in flags.split(","),
        )
    except ValueError as exc:
        raise ValueError(f"unreadable 'lfs getstripe -y' output: {exc}") from None


def parse_getstripe_yaml(text: str) -> Layout:
    """Parse ``lfs getstripe -y FILE`` (or plain ``lfs getstripe``) into its components.

    Composite layouts (``lcm_*``) list each component (``lcme_*``, then its ``lmm_*`` values and
    objects as ``- l_ost_idx: N``); plain layouts are one component.  A Data-on-MDT component
    has ``lmm_pattern: mdt``, ``lmm_stripe_offset: 0`` and no OST object; an uninstantiated one
    (``lcme_flags`` without ``init``) has none yet either.  The text is read line by line (no
    YAML library).  Raises :class:`ValueError` if it holds no layout.
    """
    composite = False
    parts: list[tuple[dict[str, str], list[int]]] = [({}, [])]
    for line in text.splitlines():
        # Objects print as "- l_ost_idx: 3" (-y) or "- 0: { l_ost_idx: 3, l_fid: ... }" (-v).
        if match := _OBJECT_INDEX.search(line):
            parts[-1][1].append(int(match[1]))
            continue
        key, sep, value = line.strip().removeprefix("- ").partition(":")
        if not sep:
            continue
        if key.startswith("lcm_"):
            composite = True
        elif key == "lcme_id":
            parts.append(({}, []))
        parts[-1][0].setdefault(key, value.strip())
    if composite:
        parts = parts[1:]
    components = tuple(
        _component(values, osts, composite) for values, osts in parts if "lmm_stripe_offset" in values or osts
    )
    if not components:
        raise ValueError("no lmm_stripe_offset in 'lfs getstripe -y' output")
    return Layout(components=components, composite=composite)


def parse_version(text: str) -> tuple[int, int]:
    """``lfs --version`` (``lfs 2.15.7``) or ``lctl get_param -n version`` -> ``(2, 15)``."""
    match = _VERSION.search(text)
    if match is None:
        raise ValueError(f"no Lustre version in {text.strip()!r}")
    return int(match[1]), int(match[2])


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


#: errno of a strict ``lfs setstripe -o`` that refused an OST -> why (``lod_qos.c``).
PLACEMENT_ERRORS = {
    errno.EREMOTEIO: "inactive",
    errno.ENOSPC: "full",
    errno.EROFS: "read_only",
    errno.ENOBUFS: "drained",
}

_SETSTRIPE_ERROR = re.compile(r"setstripe error for '.*': (?P<reason>.*?)\s*$")


def setstripe_reason(exc: LustreError) -> str:
    """The reason in a failed ``lfs setstripe``'s ``setstripe error for '<file>': <reason>``
    line (liblustreapi ``llapi_file_open_param``), else the whole one-line error."""
    for line in exc.stderr.splitlines():
        if match := _SETSTRIPE_ERROR.search(line):
            return match["reason"]
    return str(exc)


@attrs.frozen
class Completed:
    """A tool that ran to the end: its exit status and both output streams."""

    command: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str

    def error(self) -> LustreError:
        """The :class:`LustreError` for a non-zero exit: one line with the command, the exit
        status (or signal) and the tool's stderr."""
        status = (
            f"was killed by signal {-self.returncode}"
            if self.returncode < 0
            else f"exited with status {self.returncode}"
        )
        return LustreError(
            f"{shlex.join(self.command)} {status}: {_one_line(self.stderr) or 'no error output'}",
            command=self.command,
            returncode=self.returncode,
            stderr=self.stderr,
        )


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

    def call(self, binary: str, *args: str) -> Completed:
        """Run one tool to the end, whatever its exit status; raise :class:`LustreError` only
        when it cannot be started or times out (its whole process group is then killed)."""
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
        return Completed(tuple(command), proc.returncode, stdout, stderr)

    def run(self, binary: str, *args: str) -> str:
        """Run one tool and return its standard output; raise :class:`LustreError` unless it
        exits with status 0."""
        done = self.call(binary, *args)
        if done.returncode != 0:
            raise done.error()
        return done.stdout

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

    def version(self) -> tuple[int, int]:
        """The Lustre release of the client tools, ``(2, 15)`` (``lfs --version``)."""
        return self._parsed(parse_version, self.lfs("--version"), "lfs --version")

    # -- discovery ---------------------------------------------------------------------

    def df(self, path: str) -> list[Ost]:
        """OSTs with their fill levels (``lfs df -v PATH``), unusable ones as ``active=False``.

        ``-v`` makes ``lfs df`` list deactivated targets too.  When a target's statfs fails,
        ``lfs df`` still prints every row but exits non-zero (5 for EIO): the rows are used and
        the failing target is ``active=False`` with the tool's message.  Only a failure that
        printed no OST row at all raises.
        """
        done = self.call(self.lfs_bin, "df", "-v", path)
        osts = self._parsed(parse_lfs_df, done.stdout, f"lfs df -v {path}")
        if done.returncode != 0 and not osts:
            raise done.error()
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

    def check_osts(self, fsname: str | None = None) -> list[CheckedOst]:
        """Ping every OST (``lfs check osts``; usually needs root).

        The tool reports a failed ping on stderr only and still exits 0, so both streams are
        read; see :func:`parse_check_osts`.  ``lfs check`` covers every mounted Lustre file
        system; ``fsname`` keeps one.
        """
        done = self.call(self.lfs_bin, "check", "osts")
        if done.returncode != 0:
            raise done.error()
        return parse_check_osts(done.stdout, done.stderr, fsname)

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

    def setstripe(self, file: str, ost_index: int, count: int = 1, *, strict: bool = False) -> None:
        """Create empty ``file`` with ``count`` stripes on OST ``ost_index``.

        With ``strict`` (Lustre 2.14 and later; one stripe), ``lfs setstripe -o`` names the OST and fails
        when it cannot take the object; :data:`PLACEMENT_ERRORS` maps the exit status to why.
        Otherwise ``-i``: the MDS *starts* at that OST and silently skips an inactive, full,
        read-only or drained one, so confirm the placement with :meth:`getstripe`.
        """
        if strict:
            if count != 1:
                raise ValueError("a strict setstripe names exactly one OST")
            self.lfs("setstripe", "-c", "1", "-o", str(ost_index), file)
        else:
            self.lfs("setstripe", "-c", str(count), "-i", str(ost_index), file)

    def getstripe(self, file: str) -> Layout:
        """The layout of ``file`` (``lfs getstripe -y FILE``)."""
        return self._parsed(parse_getstripe_yaml, self.lfs("getstripe", "-y", file), f"lfs getstripe -y {file}")

    def stripe_index(self, file: str) -> int | None:
        """The OST holding the first object of ``file``; ``None`` when it has no OST object."""
        return self.getstripe(file).stripe_offset

    def mkdir_on_mdt(self, directory: str, mdt_index: int) -> None:
        """Create ``directory`` on MDT ``mdt_index`` (``lfs mkdir -i N DIR``)."""
        self.lfs("mkdir", "-i", str(mdt_index), directory)

    def dir_mdts(self, *directories: str) -> list[int]:
        """The MDT each directory lives on (``lfs getdirstripe -m DIR...``)."""
        text = self.lfs("getdirstripe", "-m", *directories)
        try:
            values = [int(line) for line in text.split()]
        except ValueError:
            raise LustreError(f"lfs getdirstripe -m: unexpected output {text.strip()!r}") from None
        if len(values) != len(directories):
            raise LustreError(f"lfs getdirstripe -m: {len(values)} MDT indexes for {len(directories)} directories")
        return values

    def drop_oss_cache(self, file: str, size: int) -> None:
        """Ask the OSS to drop ``file``'s first ``size`` bytes from its cache
        (``lfs ladvise -a dontneed -s 0 -e SIZE FILE``; ldiskfs only, osd-zfs ignores it)."""
        self.lfs("ladvise", "-a", "dontneed", "-s", "0", "-e", str(size), file)

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
