"""Stand-in ``lfs`` and ``lctl``: a configurable Lustre file system on an ordinary directory.

They print exactly what the real tools print (column widths, headers, ``filesystem_summary:``,
``inactive device`` rows, ``OBDS:`` listings, ``lfs check osts`` lines, ``lfs getstripe -y``,
``lctl dl``, ``lctl get_param``) and fail with the real messages and exit statuses (the
``errno``) for bad usage and unknown paths, so code tested against them runs unchanged against
Lustre.  Only the standard library is used: the programs start in a few milliseconds.

The file system is described by a JSON state file named by the environment variable
``CYCLONE_STANDIN_LUSTRE``::

    {"fsname": "testfs", "mount": "/tmp/x/mnt", "instance": "ffff8803c9c0f000",
     "mdt_count": 1,
     "osts": [{"index": 0, "active": true, "size_kb": 1048576, "used_kb": 1024,
               "flags": "", "hang": false, "place_on": null, "io_error": false,
               "migrate_error": null}]}

Per OST: ``active`` false makes it a deactivated target (``inactive device``, ``INACTIVE``,
skipped by the allocator); ``flags`` are the ``lfs df`` state letters; ``hang`` makes every
command that involves the OST hang (``lfs df``, ``lfs check``, ``setstripe``/``migrate`` onto
it); ``place_on`` makes the allocator put objects requested on this OST on that one;
``io_error`` backs objects on this OST with ``/dev/full`` so that writes fail with ENOSPC;
``migrate_error`` makes ``lfs migrate`` onto this OST fail with that message.

``lfs setstripe`` creates the (empty) file for real under the mount and records its layout in
``<state>-layouts.json`` beside the state file; ``getstripe`` reads it (a file it has not seen
gets a default one-stripe layout on first sight); ``lfs mkdir -i N`` creates the directory and
records its MDT; ``lfs migrate`` rewrites the layout.  The state can be edited between calls.
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
from pathlib import Path
from typing import Any, NoReturn

__all__ = ("ENV", "layouts_path", "main_lctl", "main_lfs")

#: The environment variable naming the state file.
ENV = "CYCLONE_STANDIN_LUSTRE"

_MDT_SIZE_KB = 2_097_152
_MDT_USED_KB = 4_608
_STRIPE_SIZE = 1_048_576
# LL_IOC_LOV_SETSTRIPE, as liblustreapi prints it in "error on ioctl" messages.
_SETSTRIPE_IOCTL = "0x4008669a"


class _Exit(Exception):
    def __init__(self, status: int, message: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.message = message


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

    def allocate(self, start: int, count: int) -> list[int]:
        """Mimic lod_ost_alloc_specific: start at ``start`` and skip inactive OSTs."""
        order = sorted(self.osts)
        if start < 0:  # let the "MDS" choose: the least used active OST first
            start = min((i for i in order if self.osts[i].get("active", True)), key=self._used, default=order[0])
        if start not in self.osts:
            _fail(errno.EINVAL, "")
        requested = self.osts[start].get("place_on")
        first = int(requested) if requested is not None else start
        rotated = order[order.index(first) :] + order[: order.index(first)]
        chosen = [i for i in rotated if self.osts[i].get("active", True)][: max(count, 1)]
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

    def new_layout(self, data: dict[str, Any], osts: list[int], generation: int = 0) -> dict[str, Any]:
        oid = data["next_oid"]
        data["next_oid"] = oid + len(osts)
        return {"osts": osts, "oid": oid, "stripe_size": _STRIPE_SIZE, "layout_gen": generation}

    def layout_of(self, data: dict[str, Any], path: str) -> dict[str, Any]:
        """The recorded layout, or the default one-stripe layout a file created without
        ``setstripe`` would have got (deterministic, recorded on first sight)."""
        key = self.key(path)
        if key not in data["files"]:
            active = [i for i in sorted(self.osts) if self.osts[i].get("active", True)] or sorted(self.osts)
            data["files"][key] = self.new_layout(data, [active[zlib.crc32(key.encode()) % len(active)]])
        return dict(data["files"][key])

    def mdt_of(self, data: dict[str, Any], path: str) -> int:
        """The MDT of a directory (recorded by ``lfs mkdir -i``) or of a file's parent."""
        key = self.key(path)
        while key not in ("", "."):
            if key in data["dirs"]:
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


# -- lfs --------------------------------------------------------------------------------------


def _df_row(name: str, total: int, used: int, avail: int, *, mount: str, suffix: str = "") -> str:
    ratio = used / (used + avail) * 100 if used + avail else 0.0
    percent = f"{math.ceil(ratio):3d}%"  # lfs rounds up, like df(1)
    return f"{name:<20} {total:>11} {used:>11} {avail:>11} {percent:>4} {mount}{suffix}"


def _lfs_df(fs: _Fs, argv: list[str]) -> str:
    options, operands = _getopt("df", argv, {"-v": ("v", False), "--verbose": ("v", False), "-l": ("l", False)})
    verbose = "v" in options
    if operands:
        if not os.path.exists(operands[0]):
            _fail(errno.ENOENT, f"error: invalid path '{operands[0]}': {_strerror(errno.ENOENT)}")
        if not fs.inside(operands[0]):
            return ""  # llapi_search_mounts finds no Lustre mount: nothing printed, status 0
    fs.involve(*fs.osts)  # statfs goes to every OST
    lines = [f"{'UUID':<20} {'1K-blocks':>11} {'Used':>11} {'Available':>11} {'Use%':>4} Mounted on"]
    for mdt in range(fs.mdt_count):
        name, avail = f"{fs.fsname}-MDT{mdt:04x}_UUID", _MDT_SIZE_KB - _MDT_USED_KB
        lines.append(_df_row(name, _MDT_SIZE_KB, _MDT_USED_KB, avail, mount=fs.mount, suffix=f"[MDT:{mdt}]"))
    total = used_sum = avail_sum = 0
    for index in sorted(fs.osts):
        ost = fs.ost(index)
        if not ost.get("active", True):
            if verbose:  # only -v lists deactivated targets; lfs names them by index alone
                lines.append(f"{f'OST{index:04x}':<20}: inactive device")
            continue
        size, used = int(ost.get("size_kb", 1_048_576)), int(ost.get("used_kb", 0))
        avail = max(size - used, 0)
        flags = "".join(c for c in ost.get("flags", "") if verbose or c.isupper() or c == "?")
        suffix = f"[OST:{index}]" + (f" {flags}" if flags else "")
        lines.append(_df_row(fs.uuid(index), size, used, avail, mount=fs.mount, suffix=suffix))
        total, used_sum, avail_sum = total + size, used_sum + used, avail_sum + avail
    lines += ["", _df_row("filesystem_summary:", total, used_sum, avail_sum, mount=fs.mount), "", ""]
    return "\n".join(lines)


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


def _lfs_check(fs: _Fs, argv: list[str]) -> str:
    if len(argv) != 1:
        _fail(errno.EINVAL, "lfs check: server type must be specified")
    kind = argv[0]
    lines = []
    if kind in ("osts", "all", "servers"):
        fs.involve(*fs.osts)  # every OSC is pinged
        lines += [f"{fs.osc(i)} {'active' if fs.ost(i).get('active', True) else 'inactive'}." for i in sorted(fs.osts)]
    if kind in ("mdts", "mds", "all", "servers"):
        lines += [f"{fs.fsname}-MDT{i:04x}-mdc-{fs.instance} active." for i in range(fs.mdt_count)]
    if kind in ("mgts", "all", "servers"):
        lines.append("MGC192.168.0.10@tcp active.")
    if not lines:
        _fail(errno.EINVAL, f"lfs check: unrecognized option '{kind}'")
    return "\n".join(lines) + "\n"


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


_SETSTRIPE_SPEC = {
    "-c": ("count", True),
    "--stripe-count": ("count", True),
    "-i": ("index", True),
    "--stripe-index": ("index", True),
    "-S": ("size", True),
    "--stripe-size": ("size", True),
}


def _lfs_setstripe(fs: _Fs, argv: list[str]) -> str:
    options, operands = _getopt("setstripe", argv, _SETSTRIPE_SPEC)
    if not operands:
        _fail(errno.EINVAL, "lfs setstripe: missing filename|dirname")
    count = _int("setstripe", "stripe count", options.get("count", "1"))
    start = _int("setstripe", "stripe offset", options.get("index", "-1"))
    for name in operands:
        if os.path.isdir(name):
            continue  # a directory gets a default layout; nothing to record for the emulation
        parent = os.path.dirname(os.path.abspath(name))
        ioctl_error = f"lfs setstripe: error on ioctl {_SETSTRIPE_IOCTL} for '{name}' (3): "
        if not os.path.isdir(parent):
            _fail(errno.ENOENT, f"lfs setstripe: unable to open '{name}': {_strerror(errno.ENOENT)} (2)")
        if not fs.inside(parent):
            _fail(errno.ENOTTY, f"{ioctl_error}{_strerror(errno.ENOTTY)}")
        # A dead OST hangs the command before it takes the layouts lock, so that a hung
        # stand-in never blocks the others (the real MDS would answer them too).
        fs.involve(start)
        with fs.layouts() as data:
            if os.path.lexists(name) and fs.key(name) in data["files"]:
                _fail(errno.EEXIST, f"{ioctl_error}stripe already set")
            try:
                osts = fs.allocate(start, count)
            except _Exit as exc:
                _fail(exc.status, f"{ioctl_error}{_strerror(exc.status)}")
            if fs.ost(osts[0]).get("io_error"):
                os.symlink("/dev/full", name)  # writes to it fail with ENOSPC, as on a broken OST
            else:
                os.close(os.open(name, os.O_CREAT | os.O_WRONLY, 0o644))
            data["files"][fs.key(name)] = fs.new_layout(data, osts)
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


def _show_layout(name: str, layout: dict[str, Any], options: dict[str, str]) -> str:
    osts: list[int] = layout["osts"]
    yaml = "y" in options
    fields = {
        "c": ("lmm_stripe_count:  ", str(len(osts))),
        "i": ("lmm_stripe_offset: ", str(osts[0])),
    }
    chosen = [k for k in ("c", "i") if k in options]
    if chosen:
        if len(chosen) == 1 and not yaml:  # one field alone prints the bare value
            return f"{fields[chosen[0]][1]}\n"
        return "".join(f"{fields[k][0]}{fields[k][1]}\n" for k in chosen)
    head = "" if yaml else f"{name}\n"  # YAML output omits the path
    lines = [
        f"lmm_stripe_count:  {len(osts)}",
        f"lmm_stripe_size:   {layout['stripe_size']}",
        "lmm_pattern:       raid0",
        f"lmm_layout_gen:    {layout['layout_gen']}",
        f"lmm_stripe_offset: {osts[0]}",
    ]
    if yaml:
        lines.append("lmm_objects:")
        for n, index in enumerate(osts):
            oid = layout["oid"] + n
            lines += [
                f"      - l_ost_idx: {index}",
                f"        l_fid:     0x{0x100000000 + (index << 16):x}:0x{oid:x}:0x0",
            ]
    else:
        lines.append("\tobdidx\t\t objid\t\t objid\t\t group")
        for n, index in enumerate(osts):
            oid = layout["oid"] + n
            lines.append(f"\t{index:6d}\t{oid:14d}\t{oid:#13x}\t{0:14d}")
    return head + "\n".join(lines) + "\n\n"


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
        fs.involve(*old["osts"], start)  # the data moves from the old objects to the new OST
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
            data["files"][fs.key(name)] = fs.new_layout(data, osts, old["layout_gen"] + 1)
    return ""


_LFS = {
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
            else:  # multi-line values start on the line after "name="
                out.append(f"{name}=\n{value}" if "\n" in value or name.endswith("target_obd") else f"{name}={value}")
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
        sys.stdout.write(commands[command](_load(), rest))
    except _Exit as exc:
        if exc.message:
            sys.stderr.write(exc.message + "\n")
        return exc.status
    return 0


def main_lfs(argv: list[str] | None = None) -> int:
    """Entry point of the stand-in ``lfs``."""
    return _main("lfs", _LFS, sys.argv[1:] if argv is None else argv)


def main_lctl(argv: list[str] | None = None) -> int:
    """Entry point of the stand-in ``lctl``."""
    return _main("lctl", _LCTL, sys.argv[1:] if argv is None else argv)
