"""Stand-in ``lfs`` and ``lctl``: a configurable Lustre file system on an ordinary directory.

They print exactly what the real tools of Lustre 2.12 to 2.15 print (column widths, headers,
``filesystem_summary:``, ``inactive device`` and statfs error rows, ``OBDS:`` listings,
``lfs check osts`` lines and their stderr-only failures, ``lfs getstripe -y`` of plain,
composite and Data-on-MDT layouts, ``lctl dl``, ``lctl get_param`` in its one-line and
multi-line forms) and fail with the real messages and exit statuses (the ``errno``), so code
tested against them runs unchanged against Lustre.  Only the standard library is used: the
programs start in a few milliseconds.

The file system is described by a JSON state file named by the environment variable
``CYCLONE_STANDIN_LUSTRE``::

    {"fsname": "testfs", "mount": "/tmp/x/mnt", "instance": "ffff8803c9c0f000",
     "mdt_count": 1, "version": "2.15",
     "osts": [{"index": 0, "active": true, "size_kb": 1048576, "used_kb": 1024,
               "flags": "", "hang": false, "place_on": null, "io_error": false,
               "migrate_error": null, "drained": false, "statfs_error": null,
               "check_error": null}]}

``version`` is the Lustre release emulated, ``2.12`` or ``2.15`` (the default); they differ
where the real tools do: ``lfs setstripe -o`` is strict from 2.14 on (an unusable OST fails the
call) while 2.12's allocator skips it as it does for ``-i``; ``lfs df`` prints the state letters
``N`` and ``f`` from 2.14 on; ``lfs --version`` says which.

Per OST: ``active`` false makes it a deactivated target (``inactive device``, ``INACTIVE``,
a failed ``lfs check``, skipped by the allocator); ``flags`` are the ``lfs df`` state letters
(``S`` and ``R`` also make the allocator skip it); ``drained`` is ``max_create_count=0`` on the
MDS (still ACTIVE everywhere, but no new objects); ``statfs_error`` an errno its statfs fails
with (``lfs df`` prints ``<uuid> : <strerror>`` and exits with it, EAGAIN is skipped);
``check_error`` the errno its ping fails with; ``hang`` makes every command that involves the
OST hang (``lfs df``, ``lfs check``, ``setstripe``/``migrate`` onto it); ``place_on`` makes the
allocator put objects requested on this OST on that one; ``io_error`` backs objects on this OST
with ``/dev/full`` so that writes fail with ENOSPC; ``migrate_error`` makes ``lfs migrate`` onto
this OST fail with that message.

``lfs setstripe`` creates the (empty) file for real under the mount and records its layout in
``<state>-layouts.json`` beside the state file (``-E``/``-L mdt`` make composite and
Data-on-MDT layouts; only the first component is instantiated, as at create); on a directory
it records the default layout its new files get.  ``getstripe`` reads the layout (a file it has
not seen gets its directory's default layout, or a one-stripe one, on first sight: that is
when the stand-in "creates" its objects, so a ``hang`` OST hangs it there); ``lfs
mkdir -i N`` creates the directory and records its MDT; ``lfs migrate`` rewrites the layout.
The state can be edited between calls.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import fnmatch
import json
import math
import os
import sys
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

__all__ = ("ENV", "VERSIONS", "layouts_path", "main_lctl", "main_lfs")

#: The environment variable naming the state file.
ENV = "CYCLONE_STANDIN_LUSTRE"
#: The Lustre releases emulated, by the ``version`` of the state file.
VERSIONS = {"2.12": "2.12.9", "2.15": "2.15.7"}

_MDT_SIZE_KB = 2_097_152
_MDT_USED_KB = 4_608
_STRIPE_SIZE = 1_048_576
_EOF = -1


class _Exit(Exception):
    def __init__(self, status: int, message: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class _Output:
    """What a command printed on both streams, and its exit status (for commands that print
    rows and still fail, or report failures on stderr and still succeed)."""

    stdout: str = ""
    stderr: str = ""
    status: int = 0


def _fail(status: int, message: str) -> NoReturn:
    raise _Exit(status, message)


def _strerror(code: int) -> str:
    return os.strerror(code)


def layouts_path(state_path: Path) -> Path:
    """Where the layouts of files and directories of the stand-in at ``state_path`` are kept."""
    return state_path.with_name(f"{state_path.stem}-layouts.json")


class _Fs:
    """The stand-in file system: state (read-only here) plus the layouts file (read-write)."""

    def __init__(self, state_path: Path) -> None:
        self.state_path = state_path
        self.state: dict[str, Any] = json.loads(state_path.read_text())
        self.fsname: str = self.state["fsname"]
        self.mount = os.path.realpath(self.state["mount"])
        self.instance: str = self.state.get("instance", "ffff8803c9c0f000")
        self.mdt_count: int = int(self.state.get("mdt_count", 1))
        self.osts: dict[int, dict[str, Any]] = {int(o["index"]): o for o in self.state["osts"]}
        self.release: str = VERSIONS[str(self.state.get("version", "2.15"))]
        self.version = tuple(int(part) for part in self.release.split(".")[:2])

    # -- paths -----------------------------------------------------------------------------

    @staticmethod
    def _resolved(path: str) -> str:
        # Resolve the directories but not the last component: an object backed by /dev/full is
        # a symlink that must still count as a file of this file system.
        absolute = os.path.abspath(path)
        if os.path.isdir(absolute):
            return os.path.realpath(absolute)
        return os.path.join(os.path.realpath(os.path.dirname(absolute)), os.path.basename(absolute))

    def inside(self, path: str) -> bool:
        real = self._resolved(path)
        return real == self.mount or real.startswith(self.mount + os.sep)

    def key(self, path: str) -> str:
        return os.path.relpath(self._resolved(path), self.mount)

    # -- OST behaviour ---------------------------------------------------------------------

    def ost(self, index: int) -> dict[str, Any]:
        return self.osts[index]

    def uuid(self, index: int) -> str:
        return f"{self.fsname}-OST{index:04x}_UUID"

    def osc(self, index: int) -> str:
        return f"{self.fsname}-OST{index:04x}-osc-{self.instance}"

    def involve(self, *indexes: int) -> None:
        """A command that talks to these OSTs hangs if one of them does (a dead server)."""
        if any(self.osts[i].get("hang") for i in indexes if i in self.osts):
            while True:
                time.sleep(3600)

    def refusal(self, index: int) -> int | None:
        """Why the MDS cannot create an object on this OST (an errno), or ``None``: inactive
        (EREMOTEIO), out of space (ENOSPC), read-only (EROFS), drained (ENOBUFS)."""
        ost = self.osts[index]
        if not ost.get("active", True) or ost.get("statfs_error"):
            return errno.EREMOTEIO
        if "S" in ost.get("flags", ""):
            return errno.ENOSPC
        if "R" in ost.get("flags", ""):
            return errno.EROFS
        if ost.get("drained"):
            return errno.ENOBUFS
        return None

    def allocate(self, start: int, count: int) -> list[int]:
        """Mimic lod_ost_alloc_specific: start at ``start`` and skip OSTs that cannot take an
        object (inactive, full, read-only, drained)."""
        order = sorted(self.osts)
        if start < 0:  # let the "MDS" choose: the least used usable OST first
            start = min((i for i in order if self.refusal(i) is None), key=self._used, default=order[0])
        if start not in self.osts:
            _fail(errno.EINVAL, "")
        requested = self.osts[start].get("place_on")
        first = int(requested) if requested is not None else start
        rotated = order[order.index(first) :] + order[: order.index(first)]
        chosen = [i for i in rotated if self.refusal(i) is None][: max(count, 1)]
        if not chosen:
            _fail(errno.ENOSPC, "")
        return chosen

    def _used(self, index: int) -> int:
        return int(self.osts[index].get("used_kb", 0))

    # -- layouts ---------------------------------------------------------------------------

    @contextlib.contextmanager
    def layouts(self) -> Iterator[dict[str, Any]]:
        """The layouts file, locked against concurrent ``lfs`` processes, saved on exit."""
        path = layouts_path(self.state_path)
        with open(path.with_suffix(".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            data = json.loads(path.read_text()) if path.exists() else {}
            data.setdefault("files", {})
            data.setdefault("dirs", {})
            data.setdefault("next_oid", 2)
            before = json.dumps(data, sort_keys=True)
            yield data
            if json.dumps(data, sort_keys=True) != before:
                tmp = path.with_suffix(".tmp")
                tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
                os.replace(tmp, path)

    @staticmethod
    def component(
        data: dict[str, Any],
        osts: list[int],
        *,
        pattern: str = "raid0",
        count: int = 1,
        start: int = 0,
        end: int = _EOF,
    ) -> dict[str, Any]:
        """One component; ``osts`` empty for an uninstantiated or Data-on-MDT one."""
        oid = data["next_oid"]
        data["next_oid"] = oid + len(osts)
        return {
            "pattern": pattern,
            "count": 0 if pattern == "mdt" else count,
            "osts": osts,
            "oid": oid,
            "start": start,
            "end": end,
            "init": bool(osts) or (pattern == "mdt" and start == 0),
        }

    def new_layout(self, data: dict[str, Any], osts: list[int], generation: int = 0) -> dict[str, Any]:
        """A plain layout with its objects on ``osts``."""
        return {"composite": False, "layout_gen": generation, "components": [self.component(data, osts)]}

    def layout_of(self, data: dict[str, Any], path: str) -> dict[str, Any]:
        """The recorded layout or, on first sight, the one the MDS gave a file created without
        ``setstripe``: its directory's default (``lfs setstripe DIR``), else one stripe on a
        deterministic usable OST."""
        key = self.key(path)
        if key not in data["files"]:
            default = self.default_of(data, key)
            if default is not None:
                osts = self.allocate(int(default["index"]), int(default["count"]))
                self.involve(*osts)  # a create waits for a dead OST's objects: it hangs
            else:
                usable = [i for i in sorted(self.osts) if self.refusal(i) is None] or sorted(self.osts)
                osts = [usable[zlib.crc32(key.encode()) % len(usable)]]
            data["files"][key] = self.new_layout(data, osts)
        return dict(data["files"][key])

    def default_of(self, data: dict[str, Any], key: str) -> dict[str, Any] | None:
        """The default file layout the nearest directory above ``key`` was given."""
        key = os.path.dirname(key)
        while key not in ("", "."):
            if "stripe" in data["dirs"].get(key, {}):
                return dict(data["dirs"][key]["stripe"])
            key = os.path.dirname(key)
        return None

    def mdt_of(self, data: dict[str, Any], path: str) -> int:
        """The MDT of a directory (recorded by ``lfs mkdir -i``) or of a file's parent."""
        key = self.key(path)
        while key not in ("", "."):
            if "mdt" in data["dirs"].get(key, {}):
                return int(data["dirs"][key]["mdt"])
            key = os.path.dirname(key)
        return 0


def _load() -> _Fs:
    name = os.environ.get(ENV)
    if not name:
        _fail(errno.ENODEV, f"stand-in Lustre tool: set {ENV} to the state file")
    try:
        return _Fs(Path(name))
    except (OSError, ValueError, KeyError) as exc:
        _fail(errno.EIO, f"stand-in Lustre tool: cannot read state {name}: {exc}")


# -- option parsing (getopt_long style, enough for the commands emulated) -------------------


def _getopt(cmd: str, argv: list[str], spec: dict[str, tuple[str, bool]]) -> tuple[dict[str, str], list[str]]:
    """``spec`` maps each accepted spelling (``-c``, ``--stripe-count``) to (key, takes value)."""
    options: dict[str, str] = {}
    operands: list[str] = []
    args = iter(argv)
    for arg in args:
        if arg.startswith("--") and "=" in arg:
            option, value = arg.split("=", 1)
            if option not in spec:
                _fail(errno.EINVAL, f"{cmd}: unrecognized option '{option}'")
            options[spec[option][0]] = value
        elif arg in spec:
            key, takes = spec[arg]
            if takes:
                argument = next(args, None)
                if argument is None:
                    _fail(errno.EINVAL, f"{cmd}: option requires an argument -- '{arg.lstrip('-')}'")
                options[key] = argument
            else:
                options[key] = ""
        elif arg.startswith("-") and len(arg) > 1 and not arg.lstrip("-").isdigit():
            if not arg.startswith("--") and all(f"-{c}" in spec and not spec[f"-{c}"][1] for c in arg[1:]):
                options.update({spec[f"-{c}"][0]: "" for c in arg[1:]})  # bundled flags: -ciy
                continue
            shown = f"invalid option -- '{arg[1:]}'" if not arg.startswith("--") else f"unrecognized option '{arg}'"
            _fail(errno.EINVAL, f"{cmd}: {shown}")
        else:
            operands.append(arg)
    return options, operands


def _int(cmd: str, what: str, text: str) -> int:
    try:
        return int(text, 0)
    except ValueError:
        _fail(errno.EINVAL, f"lfs {cmd}: invalid {what} '{text}'")


def _size(cmd: str, text: str) -> int:
    """``1M``, ``64K``, ``-1``/``EOF`` (end of file) as ``lfs`` reads component ends."""
    if text.lower() in ("-1", "eof"):
        return _EOF
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
    scale = units.get(text[-1:].lower(), 1)
    return _int(cmd, "component end", text[:-1] if scale > 1 else text) * scale


# -- lfs --------------------------------------------------------------------------------------


def _cooked(value_kb: int) -> str:
    """``lfs df -h``: sizes with a binary suffix (``HDF`` in lfs.c)."""
    value, suffix = float(value_kb) * 1024, ""
    for unit in "KMGTPE":
        if value < 1024:
            break
        value, suffix = value / 1024, unit
    return f"{value:.1f}{suffix}" if suffix else f"{int(value)}"


def _df_row(name: str, total: int, used: int, avail: int, *, mount: str, suffix: str = "", cooked: bool = False) -> str:
    ratio = used / (used + avail) * 100 if used + avail else 0.0
    percent = f"{math.ceil(ratio):3d}%"  # lfs rounds up, like df(1)
    numbers = [_cooked(n) if cooked else str(n) for n in (total, used, avail)]
    return f"{name:<20} {numbers[0]:>11} {numbers[1]:>11} {numbers[2]:>11} {percent:>4} {mount}{suffix}"


_DF_SPEC = {
    "-v": ("v", False),
    "--verbose": ("v", False),
    "-l": ("l", False),
    "--lazy": ("l", False),
    "-h": ("h", False),
    "--human-readable": ("h", False),
    "-H": ("h", False),
    "-i": ("i", False),
    "--inodes": ("i", False),
}


def _lfs_df(fs: _Fs, argv: list[str]) -> str | _Output:
    options, operands = _getopt("df", argv, _DF_SPEC)
    verbose, cooked, inodes = "v" in options, "h" in options, "i" in options
    if operands:
        if not os.path.exists(operands[0]):
            _fail(errno.ENOENT, f"error: invalid path '{operands[0]}': {_strerror(errno.ENOENT)}")
        if not fs.inside(operands[0]):
            return ""  # llapi_search_mounts finds no Lustre mount: nothing printed, status 0
    fs.involve(*fs.osts)  # statfs goes to every OST
    columns = (
        ("Inodes", "IUsed", "IFree", "IUse%")
        if inodes
        else ("bytes" if cooked else "1K-blocks", "Used", "Available", "Use%")
    )
    lines = [f"{'UUID':<20} {columns[0]:>11} {columns[1]:>11} {columns[2]:>11} {columns[3]:>4} Mounted on"]

    def sizes(size: int, used: int) -> tuple[int, int, int]:
        # -i shows inode counts; the stand-in gives every target one inode per 4 KiB.
        if inodes:
            return size // 4, used // 64, size // 4 - used // 64
        return size, used, max(size - used, 0)

    for mdt in range(fs.mdt_count):
        total, used, avail = sizes(_MDT_SIZE_KB, _MDT_USED_KB)
        row = _df_row(f"{fs.fsname}-MDT{mdt:04x}_UUID", total, used, avail, mount=fs.mount, cooked=cooked)
        lines.append(f"{row}[MDT:{mdt}]")
    letters = "DRSINf" if fs.version >= (2, 14) else "DRSI"  # N and f came with 2.14
    status = 0
    sums = [0, 0, 0]
    for index in sorted(fs.osts):
        ost = fs.ost(index)
        if not ost.get("active", True):
            if verbose:  # only -v lists deactivated targets; lfs names them by index alone
                lines.append(f"{f'OST{index:04x}':<20}: inactive device")
            continue
        if code := ost.get("statfs_error"):
            if code != errno.EAGAIN:  # EAGAIN targets are skipped, not printed
                lines.append(f"{fs.uuid(index):<20}: {_strerror(code)}")
                status = status or code  # mntdf keeps the first error; the rows still print
            continue
        total, used, avail = sizes(int(ost.get("size_kb", 1_048_576)), int(ost.get("used_kb", 0)))
        flags = "".join(c for c in ost.get("flags", "") if c in letters and (verbose or c.isupper()))
        suffix = f"[OST:{index}]" + (f" {flags}" if flags else "")
        lines.append(_df_row(fs.uuid(index), total, used, avail, mount=fs.mount, suffix=suffix, cooked=cooked))
        sums = [sums[0] + total, sums[1] + used, sums[2] + avail]
    lines += ["", _df_row("filesystem_summary:", *sums, mount=fs.mount, cooked=cooked), "", ""]
    return _Output(stdout="\n".join(lines), status=status)


def _target_path(fs: _Fs, operands: list[str], cmd: str) -> bool:
    """Check an optional PATH operand as ``lfs osts|mdts`` do; False if it is not Lustre."""
    if len(operands) > 1:
        _fail(errno.EINVAL, f"usage: {cmd} [path]")
    if operands and not os.path.exists(operands[0]):
        _fail(errno.ENOENT, f"error: invalid path '{operands[0]}': {_strerror(errno.ENOENT)}")
    return not operands or fs.inside(operands[0])


def _lfs_osts(fs: _Fs, argv: list[str]) -> str:
    _, operands = _getopt("osts", argv, {})
    if not _target_path(fs, operands, "osts"):
        return ""
    rows = [f"{i}: {fs.uuid(i)} {'ACTIVE' if fs.ost(i).get('active', True) else 'INACTIVE'}" for i in sorted(fs.osts)]
    return "OBDS:\n" + "\n".join(rows) + "\n"


def _lfs_mdts(fs: _Fs, argv: list[str]) -> str:
    _, operands = _getopt("mdts", argv, {})
    if not _target_path(fs, operands, "mdts"):
        return ""
    return "MDTS:\n" + "".join(f"{i}: {fs.fsname}-MDT{i:04x}_UUID ACTIVE\n" for i in range(fs.mdt_count))


def _lfs_check(fs: _Fs, argv: list[str]) -> _Output:
    """``lfs check``: ``<device> active.`` for a target that answered the ping; for one that did
    not, liblustreapi's ``do_target_check`` prints the error on stderr only (its ``inactive.``
    branch compares a negative errno with a positive one and never runs) and the status stays 0.
    """
    if len(argv) != 1:
        _fail(errno.EINVAL, "lfs check: server type must be specified")
    kind = argv[0]
    out, err = [], []
    if kind in ("osts", "all", "servers"):
        fs.involve(*fs.osts)  # every OSC is pinged
        for i in sorted(fs.osts):
            ost = fs.ost(i)
            code = ost.get("check_error") or (None if ost.get("active", True) else errno.ESHUTDOWN)
            if code:
                err.append(f"lfs check: error: check '{fs.osc(i)}': {_strerror(code)} ({code})")
            else:
                out.append(f"{fs.osc(i)} active.")
    if kind in ("mdts", "mds", "all", "servers"):
        out += [f"{fs.fsname}-MDT{i:04x}-mdc-{fs.instance} active." for i in range(fs.mdt_count)]
    if kind in ("mgts", "all", "servers"):
        out.append("MGC192.168.0.10@tcp active.")
    if not out and not err:
        _fail(errno.EINVAL, f"lfs check: unrecognized option '{kind}'")
    return _Output(stdout="".join(f"{line}\n" for line in out), stderr="".join(f"{line}\n" for line in err))


def _lfs_getname(fs: _Fs, argv: list[str]) -> str:
    _, operands = _getopt("getname", argv, {})
    if not operands:
        return f"{fs.fsname}-{fs.instance} {fs.mount}\n"
    out = []
    for path in operands:
        if not os.path.exists(path):
            _fail(errno.ENOENT, f"cannot get instance for '{path}': {_strerror(errno.ENOENT)}")
        if not fs.inside(path):
            _fail(errno.ENOTTY, f"cannot get instance for '{path}': {_strerror(errno.ENOTTY)}")
        out.append(f"{fs.fsname}-{fs.instance} {path}\n")
    return "".join(out)


def _lfs_version(fs: _Fs, argv: list[str]) -> str:
    return f"lfs {fs.release}\n"


_COMPONENT_OPTIONS = {
    "-c": "count",
    "--stripe-count": "count",
    "-i": "index",
    "--stripe-index": "index",
    "-o": "ost",
    "--ost": "ost",
    "--ost-list": "ost",
    "-S": "size",
    "--stripe-size": "size",
    "-L": "layout",
    "--layout": "layout",
}


def _setstripe_args(cmd: str, argv: list[str]) -> tuple[list[dict[str, str]], bool, list[str]]:
    """Components (each ``-E END`` starts one), whether any ``-E`` was given, and the files."""
    components: list[dict[str, str]] = [{}]
    composite = False
    operands: list[str] = []
    args = iter(argv)
    for arg in args:
        option, _, inline = arg.partition("=") if arg.startswith("--") else (arg, "", "")
        if option in ("-E", "--component-end", *_COMPONENT_OPTIONS):
            value = inline or next(args, None)
            if value is None:
                _fail(errno.EINVAL, f"lfs {cmd}: option requires an argument -- '{option.lstrip('-')}'")
            if option in ("-E", "--component-end"):
                if composite:
                    components.append({})
                composite = True
                components[-1]["end"] = value
            else:
                components[-1][_COMPONENT_OPTIONS[option]] = value
        elif arg.startswith("-") and len(arg) > 1:
            _fail(errno.EINVAL, f"lfs {cmd}: invalid option -- '{arg.lstrip('-')}'")
        else:
            operands.append(arg)
    return components, composite, operands


def _create_error(name: str, code: int, reason: str = "") -> NoReturn:
    # llapi_file_open_param: "setstripe error for '%s': %s", the errno as exit status.
    _fail(code, f"lfs setstripe: setstripe error for '{name}': {reason or _strerror(code)}")


def _instantiate(fs: _Fs, name: str, spec: dict[str, str]) -> list[int]:
    """The OSTs of a new component's objects: ``-o`` strictly (2.14+), else from ``-i``."""
    count = _int("setstripe", "stripe count", spec.get("count", "1"))
    if "ost" in spec:
        listed = [_int("setstripe", "OST index", item) for item in spec["ost"].split(",")]
        if any(i not in fs.osts for i in listed):
            _create_error(name, errno.EINVAL)
        fs.involve(*listed)
        if fs.version >= (2, 14):  # LOV_USER_MAGIC_SPECIFIC is honoured or refused, never moved
            for index in listed:
                if (code := fs.refusal(index)) is not None:
                    reason = (
                        f"inactive OST among your specified {len(listed)} OST(s)" if code == errno.EREMOTEIO else ""
                    )
                    _create_error(name, code, reason)
            return listed
        start, count = listed[0], len(listed)
    else:
        start = _int("setstripe", "stripe offset", spec.get("index", "-1"))
        fs.involve(start)
    try:
        return fs.allocate(start, count)
    except _Exit as exc:
        _create_error(name, exc.status)


def _lfs_setstripe(fs: _Fs, argv: list[str]) -> str:
    specs, composite, operands = _setstripe_args("setstripe", argv)
    if not operands:
        _fail(errno.EINVAL, "lfs setstripe: missing filename|dirname")
    for name in operands:
        if os.path.isdir(name):  # a directory: the default layout of the files created in it
            spec = specs[0]
            with fs.layouts() as data:
                entry = data["dirs"].setdefault(fs.key(name), {})
                index = spec.get("ost", spec.get("index", "-1")).split(",")[0]
                entry["stripe"] = {
                    "index": _int("setstripe", "stripe offset", index),
                    "count": int(spec.get("count", "1")),
                }
            continue
        parent = os.path.dirname(os.path.abspath(name))
        if not os.path.isdir(parent):
            _fail(errno.ENOENT, f"lfs setstripe: unable to open '{name}': {_strerror(errno.ENOENT)} (2)")
        if not fs.inside(parent):
            _create_error(name, errno.ENOTTY)
        with fs.layouts() as data:
            if os.path.lexists(name) and fs.key(name) in data["files"]:
                _create_error(name, errno.EEXIST, "stripe already set")
        # Outside the layouts lock: a dead OST hangs this command, never the others.
        first = specs[0]
        pattern = first.get("layout", "raid0")
        osts = [] if pattern == "mdt" else _instantiate(fs, name, first)
        with fs.layouts() as data:
            start = 0
            components = []
            for n, spec in enumerate(specs):
                end = _size("setstripe", spec["end"]) if composite else _EOF
                count = _int("setstripe", "stripe count", spec.get("count", "1"))
                components.append(
                    fs.component(
                        data,
                        osts if n == 0 else [],
                        pattern=spec.get("layout", "raid0"),
                        count=count,
                        start=start,
                        end=end,
                    )
                )
                start = end
            if osts and fs.ost(osts[0]).get("io_error"):
                os.symlink("/dev/full", name)  # writes to it fail with ENOSPC, as on a broken OST
            else:
                os.close(os.open(name, os.O_CREAT | os.O_WRONLY, 0o644))
            data["files"][fs.key(name)] = {"composite": composite, "layout_gen": 0, "components": components}
    return ""


def _missing(cmd: str, name: str, trailer: str = "") -> NoReturn:
    _fail(errno.ENOENT, f"lfs {cmd}: cannot open '{name}': {_strerror(errno.ENOENT)} (2){trailer}")


_GETSTRIPE_SPEC = {
    "-y": ("y", False),
    "--yaml": ("y", False),
    "-c": ("c", False),
    "--stripe-count": ("c", False),
    "-i": ("i", False),
    "--stripe-index": ("i", False),
    "-m": ("m", False),
    "--mdt-index": ("m", False),
    "-q": ("q", False),
    "-d": ("d", False),
}


def _lfs_getstripe(fs: _Fs, argv: list[str]) -> str:
    options, operands = _getopt("getstripe", argv, _GETSTRIPE_SPEC)
    if not operands:
        _fail(errno.EINVAL, "error: getstripe: no filename|pathname")
    out = []
    for name in operands:
        if not os.path.lexists(name):
            _missing("getstripe", name, f"\nerror: getstripe failed for {name}.")
        if not fs.inside(name):
            _fail(errno.ENODATA, f"{name} has no stripe info")
        with fs.layouts() as data:
            if "m" in options:
                out.append(f"{fs.mdt_of(data, name)}\n")
                continue
            layout = fs.layout_of(data, name)
        out.append(_show_layout(name, layout, options))
    return "".join(out)


def _lmm_lines(component: dict[str, Any], generation: int, yaml: bool) -> list[str]:
    """``lov_dump_user_lmm_v1v3``: the ``lmm_*`` values and the objects of one component."""
    osts: list[int] = component["osts"]
    offset = 0 if component["pattern"] == "mdt" else (osts[0] if osts else -1)
    lines = [
        f"lmm_stripe_count:  {component['count']}",
        f"lmm_stripe_size:   {_STRIPE_SIZE}",
        f"lmm_pattern:       {component['pattern']}",
        f"lmm_layout_gen:    {generation}",
        f"lmm_stripe_offset: {offset}",
    ]
    if not osts:
        return lines
    if yaml:
        lines.append("lmm_objects:")
        for n, index in enumerate(osts):
            lines += [
                f"      - l_ost_idx: {index}",
                f"        l_fid:     0x{0x100000000 + (index << 16):x}:0x{component['oid'] + n:x}:0x0",
            ]
    else:
        lines.append("\tobdidx\t\t objid\t\t objid\t\t group")
        for n, index in enumerate(osts):
            oid = component["oid"] + n
            lines.append(f"\t{index:6d}\t{oid:14d}\t{oid:#13x}\t{0:14d}")
    return lines


def _show_layout(name: str, layout: dict[str, Any], options: dict[str, str]) -> str:
    yaml = "y" in options
    components: list[dict[str, Any]] = layout["components"]
    on_ost = next((c for c in components if c["pattern"] != "mdt" and c["osts"]), components[0])
    fields = {
        "c": ("lmm_stripe_count:  ", str(on_ost["count"])),
        "i": ("lmm_stripe_offset: ", str(on_ost["osts"][0] if on_ost["osts"] else -1)),
    }
    chosen = [k for k in ("c", "i") if k in options]
    if chosen:
        if len(chosen) == 1 and not yaml:  # one field alone prints the bare value
            return f"{fields[chosen[0]][1]}\n"
        return "".join(f"{fields[k][0]}{fields[k][1]}\n" for k in chosen)
    head = "" if yaml else f"{name}\n"  # YAML output omits the path
    if not layout["composite"]:
        return head + "\n".join(_lmm_lines(components[0], layout["layout_gen"], yaml)) + "\n\n"
    lines = [
        f"lcm_layout_gen:    {layout['layout_gen']}",
        "lcm_mirror_count:  1",
        f"lcm_entry_count:   {len(components)}",
    ]
    for n, component in enumerate(components):
        end = "EOF" if component["end"] == _EOF else str(component["end"])
        lines += [
            f"  component{n}:",
            f"    lcme_id:             {n + 1}",
            "    lcme_mirror_id:      0",
            f"    lcme_flags:          {'init' if component['init'] else '0'}",
            f"    lcme_extent.e_start: {component['start']}",
            f"    lcme_extent.e_end:   {end}",
            "    sub_layout:",
            *(f"      {line.strip()}" if not line.startswith(" ") else line for line in _lmm_lines(component, 0, True)),
            "",
        ]
    return head + "\n".join(lines) + "\n"


def _lfs_mkdir(fs: _Fs, argv: list[str]) -> str:
    spec = dict.fromkeys(("-i", "-m", "--mdt-index", "--mdt", "--index"), ("index", True))
    spec |= {"-c": ("count", True), "--mdt-count": ("count", True)}
    options, operands = _getopt("setdirstripe", argv, spec)
    if not operands:
        _fail(errno.EINVAL, "lfs setdirstripe: DIR must be specified")
    index = _int("setdirstripe", "MDT target(s)", options.get("index", "0"))
    for name in operands:
        if not os.path.isdir(os.path.dirname(os.path.abspath(name))):
            code = errno.ENOENT
        elif os.path.lexists(name):
            code = errno.EEXIST
        elif not fs.inside(os.path.dirname(os.path.abspath(name))) or not 0 <= index < fs.mdt_count:
            code = errno.EINVAL
        else:
            os.mkdir(name)
            with fs.layouts() as data:
                data["dirs"][fs.key(name)] = {"mdt": index}
            continue
        _fail(code, f"lfs setdirstripe: cannot create dir '{name}': {_strerror(code)}")
    return ""


def _lfs_getdirstripe(fs: _Fs, argv: list[str]) -> str:
    _, operands = _getopt("getdirstripe", argv, {"-m": ("m", False), "-i": ("m", False), "--mdt-index": ("m", False)})
    out = []
    for name in operands:
        if not os.path.isdir(name):
            _missing("getdirstripe", name)
        with fs.layouts() as data:
            out.append(f"{fs.mdt_of(data, name)}\n")
    return "".join(out)


_LADVICE = ("willread", "dontneed", "lockahead", "noexpand", "lockno")


def _lfs_ladvise(fs: _Fs, argv: list[str]) -> str:
    spec = dict.fromkeys(("-a", "--advice"), ("advice", True))
    spec |= dict.fromkeys(("-s", "--start"), ("start", True))
    spec |= dict.fromkeys(("-e", "--end"), ("end", True))
    spec |= dict.fromkeys(("-l", "--length"), ("length", True))
    spec |= dict.fromkeys(("-b", "--background"), ("background", False))
    options, operands = _getopt("ladvise", argv, spec)
    if options.get("advice") not in _LADVICE:
        _fail(errno.EINVAL, f"lfs ladvise: advice type '{options.get('advice', '')}' is not supported")
    if not operands:
        _fail(errno.EINVAL, "lfs ladvise: please give one or more file names")
    for name in operands:
        if not os.path.exists(name):
            _fail(errno.ENOENT, f"lfs ladvise: cannot open file '{name}': {_strerror(errno.ENOENT)} (2)")
        with fs.layouts() as data:
            layout = fs.layout_of(data, name)
        fs.involve(*(i for c in layout["components"] for i in c["osts"]))  # the advice goes to each OSS
    return ""


def _lfs_migrate(fs: _Fs, argv: list[str]) -> str:
    spec = dict(_SETSTRIPE_SPEC)
    spec |= dict.fromkeys(("-b", "--block"), ("block", False))
    spec |= dict.fromkeys(("-n", "--non-block"), ("non-block", False))
    spec |= dict.fromkeys(("-D", "--non-direct"), ("non-direct", False))
    spec |= dict.fromkeys(("-v", "--verbose"), ("verbose", False))
    options, operands = _getopt("migrate", argv, spec)
    if not operands:
        _fail(errno.EINVAL, "lfs migrate: missing filename")
    count = _int("migrate", "stripe count", options.get("count", "1"))
    start = _int("migrate", "stripe offset", options.get("index", "-1"))
    for name in operands:
        if not os.path.lexists(name):
            _missing("migrate", name)
        with fs.layouts() as data:
            old = fs.layout_of(data, name)
        fs.involve(*(i for c in old["components"] for i in c["osts"]), start)  # the data moves to the new OST
        with fs.layouts() as data:
            try:
                osts = fs.allocate(start, count)
            except _Exit as exc:
                _fail(
                    exc.status,
                    f"lfs migrate: cannot create layout for '{name}': {_strerror(exc.status)} ({exc.status})",
                )
            if message := fs.ost(osts[0]).get("migrate_error"):
                _fail(errno.EIO, f"lfs migrate: {name}: {message}")
            # -c/-i give a plain layout: whatever components the file had are gone.
            data["files"][fs.key(name)] = fs.new_layout(data, osts, old["layout_gen"] + 1)
    return ""


_SETSTRIPE_SPEC = {
    "-c": ("count", True),
    "--stripe-count": ("count", True),
    "-i": ("index", True),
    "--stripe-index": ("index", True),
    "-S": ("size", True),
    "--stripe-size": ("size", True),
}

_LFS = {
    "--version": _lfs_version,
    "df": _lfs_df,
    "osts": _lfs_osts,
    "mdts": _lfs_mdts,
    "check": _lfs_check,
    "getname": _lfs_getname,
    "setstripe": _lfs_setstripe,
    "getstripe": _lfs_getstripe,
    "mkdir": _lfs_mkdir,
    "setdirstripe": _lfs_mkdir,
    "getdirstripe": _lfs_getdirstripe,
    "ladvise": _lfs_ladvise,
    "migrate": _lfs_migrate,
}


# -- lctl --------------------------------------------------------------------------------------


def _lctl_params(fs: _Fs) -> dict[str, str]:
    params = {}
    for i in sorted(fs.osts):
        params[f"osc.{fs.osc(i)}.active"] = "1" if fs.ost(i).get("active", True) else "0"
        params[f"osc.{fs.osc(i)}.ost_conn_uuid"] = "192.168.0.11@tcp"
    params[f"lov.{fs.fsname}-clilov-{fs.instance}.target_obd"] = "\n".join(
        f"{i}: {fs.uuid(i)} {'ACTIVE' if fs.ost(i).get('active', True) else 'INACTIVE'}" for i in sorted(fs.osts)
    )
    params[f"lmv.{fs.fsname}-clilmv-{fs.instance}.target_obd"] = "\n".join(
        f"{i}: {fs.fsname}-MDT{i:04x}_UUID ACTIVE" for i in range(fs.mdt_count)
    )
    params[f"llite.{fs.fsname}-{fs.instance}.uuid"] = f"{fs.fsname}-clilov-{fs.instance}_UUID"
    return params


def _lctl_get_param(fs: _Fs, argv: list[str]) -> str:
    options, patterns = _getopt("get_param", argv, {"-n": ("n", False), "-N": ("N", False)})
    if not patterns:
        _fail(errno.EINVAL, "get_param: no parameter specified")
    params = _lctl_params(fs)
    out = []
    for pattern in patterns:
        names = [name for name in params if fnmatch.fnmatchcase(name, pattern.replace("/", "."))]
        if not names:
            _fail(errno.ENOENT, f"error: get_param: param_path '{pattern}': {_strerror(errno.ENOENT)}")
        for name in names:
            value = params[name]
            if "N" in options:
                out.append(name)
            elif "n" in options:
                out.append(value)
            # read_param: the value goes on its own lines when it holds a newline or when the
            # buffer read (value and its newline) plus the name exceed 80 characters.
            elif "\n" in value or len(value) + 1 + len(name) > 80:
                out.append(f"{name}=\n{value}")
            else:
                out.append(f"{name}={value}")
    return "\n".join(out) + "\n"


def _lctl_dl(fs: _Fs, argv: list[str]) -> str:
    _getopt("device_list", argv, {"-t": ("t", False), "-y": ("y", False)})
    client = "c9b8e0f2-5a8c-a1d6-41e5-6a0b3b0f5f35"
    devices = [
        ("UP", "mgc", "MGC192.168.0.10@tcp", "0b1f5a7e-1c2d-3b4a-9e8f-7d6c5b4a3f2e"),
        ("UP", "lov", f"{fs.fsname}-clilov-{fs.instance}", client),
        ("UP", "lmv", f"{fs.fsname}-clilmv-{fs.instance}", client),
    ]
    devices += [("UP", "mdc", f"{fs.fsname}-MDT{i:04x}-mdc-{fs.instance}", client) for i in range(fs.mdt_count)]
    devices += [("UP" if fs.ost(i).get("active", True) else "IN", "osc", fs.osc(i), client) for i in sorted(fs.osts)]
    return "".join(f"{n:3d} {s} {t} {name} {uuid} {4}\n" for n, (s, t, name, uuid) in enumerate(devices))


_LCTL = {"get_param": _lctl_get_param, "dl": _lctl_dl, "device_list": _lctl_dl}


def _main(program: str, commands: dict[str, Any], argv: list[str]) -> int:
    if not argv:
        sys.stderr.write(f"usage: {program} <command> [options]\n")
        return errno.EINVAL
    command, *rest = argv
    if command not in commands:
        sys.stderr.write(f"{program}: unknown command '{command}'; try '{program} help'\n")
        return errno.EINVAL
    try:
        result = commands[command](_load(), rest)
    except _Exit as exc:
        if exc.message:
            sys.stderr.write(exc.message + "\n")
        return exc.status
    output = result if isinstance(result, _Output) else _Output(stdout=result)
    sys.stdout.write(output.stdout)
    sys.stderr.write(output.stderr)
    return output.status


def main_lfs(argv: list[str] | None = None) -> int:
    """Entry point of the stand-in ``lfs``."""
    return _main("lfs", _LFS, sys.argv[1:] if argv is None else argv)


def main_lctl(argv: list[str] | None = None) -> int:
    """Entry point of the stand-in ``lctl``."""
    return _main("lctl", _LCTL, sys.argv[1:] if argv is None else argv)
