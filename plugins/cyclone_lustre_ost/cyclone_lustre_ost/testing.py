"""Test support: a stand-in Lustre file system driven by the stand-in ``lfs`` and ``lctl``.

Loaded automatically by pytest (``pytest11`` entry point), so any test gets the fixture
``lustre_standin`` without imports; :func:`standin_lustre` is the same thing as a function::

    def test_probe(lustre_standin):
        fs = lustre_standin(osts=12, inactive=[3], flags={5: "D"})
        tools = fs.tools()
        assert [o.active for o in tools.df(str(fs.mount))][3] is False
        result = run_task(LustreOstIoTask(path=str(fs.mount), ost=0), local=fs.local())

The stand-in programs are written as small executable wrappers in a private ``bin``
directory; each one runs the emulation with the current Python and its own state file, so
several stand-ins can coexist in one test and no environment needs to be passed around.
"""

from __future__ import annotations

import json
import os
import shlex
import stat
import sys
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import attrs
import pytest

from cyclone_core import unstructure
from cyclone_lustre_ost.local import SECTION, LustreLocal
from cyclone_lustre_ost.lustre import LustreTools
from cyclone_lustre_ost.standin import ENV, VERSIONS, layouts_path

__all__ = ("StandinLustre", "lustre_standin", "standin_lustre")

_SCRIPTS = Path(__file__).resolve().parent / "standin"


@attrs.frozen
class StandinLustre:
    """A stand-in file system.

    :param mount: its mount point (a real directory; files are created there for real).
    :param lfs_bin: path of the stand-in ``lfs``.
    :param lctl_bin: path of the stand-in ``lctl``.
    :param state: the JSON state file (edit it with :meth:`set_ost`).
    :param env: the environment variable that selects this stand-in when the scripts are run
        directly (``python3 .../standin/lfs``); the wrappers set it themselves.
    :param fsname: the file system name.
    :param version: the Lustre release emulated (``"2.12"`` or ``"2.15"``).
    """

    mount: Path
    lfs_bin: str
    lctl_bin: str
    state: Path
    env: dict[str, str]
    fsname: str
    version: str = "2.15"

    def tools(self, *, timeout: float = 30.0) -> LustreTools:
        """:class:`LustreTools` that run this stand-in."""
        return self.settings().tools(timeout)

    def settings(self, **changes: Any) -> LustreLocal:
        """A controller's :class:`LustreLocal` for this stand-in: its ``lfs`` and ``lctl``, and
        its mount as the only root; ``changes`` override (``roots=()``, ``sudo=True``).  For
        ``TaskContext(task_id=..., local=fs.settings())``."""
        return attrs.evolve(LustreLocal(lfs=self.lfs_bin, lctl=self.lctl_bin, roots=(str(self.mount),)), **changes)

    def toml(self, **changes: Any) -> str:
        """The same as the ``[controller.local.lustre]`` table of a configuration file, for
        ``cyclone run --config FILE``."""
        lines = [f"[controller.local.{SECTION}]"]
        lines += [f"{key} = {json.dumps(value)}" for key, value in self.local(**changes)[SECTION].items()]
        return "\n".join(lines) + "\n"

    def local(self, **changes: Any) -> dict[str, dict[str, Any]]:
        """The same as a controller's ``[controller.local]`` tables, for ``run_task(...,
        local=fs.local())`` and ``cyclone_cluster(..., local=fs.local())``."""
        return {SECTION: unstructure(self.settings(**changes))}

    def set_ost(self, index: int, **changes: Any) -> None:
        """Change one OST's state (``active=False``, ``hang=True``, ``drained=True``,
        ``statfs_error=5``, ``used_kb=...``)."""
        data = json.loads(self.state.read_text())
        for ost in data["osts"]:
            if ost["index"] == index:
                ost.update(changes)
                break
        else:
            raise KeyError(f"the stand-in has no OST {index}")
        self.state.write_text(json.dumps(data, indent=1))

    def layout(self, path: str | os.PathLike[str]) -> list[int]:
        """The OSTs of the objects the stand-in recorded for ``path`` (empty if it has none yet,
        or only Data-on-MDT)."""
        layouts = layouts_path(self.state)
        if not layouts.exists():
            return []
        absolute = os.path.abspath(path)
        resolved = os.path.join(os.path.realpath(os.path.dirname(absolute)), os.path.basename(absolute))
        key = os.path.relpath(resolved, os.path.realpath(self.mount))
        entry = json.loads(layouts.read_text())["files"].get(key)
        return [index for component in entry["components"] for index in component["osts"]] if entry else []


def _wrapper(path: Path, script: Path, state: Path) -> str:
    path.write_text(
        f"#!/bin/sh\n{ENV}={shlex.quote(str(state))} exec {shlex.quote(sys.executable)} -S "
        f'{shlex.quote(str(script))} "$@"\n'
    )
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return str(path)


def standin_lustre(
    tmp_path: Path,
    *,
    osts: int | Iterable[int] = 4,
    inactive: Iterable[int] = (),
    flags: Mapping[int, str] | None = None,
    hang: Iterable[int] = (),
    place_on: Mapping[int, int] | None = None,
    io_error: Iterable[int] = (),
    migrate_error: Mapping[int, str] | None = None,
    used_kb: Mapping[int, int] | None = None,
    size_kb: int = 1_048_576,
    mdt_count: int = 1,
    drained: Iterable[int] = (),
    statfs_error: Mapping[int, int] | None = None,
    check_error: Mapping[int, int] | None = None,
    version: str = "2.15",
    fsname: str = "testfs",
    name: str = "lustre",
) -> StandinLustre:
    """Build a stand-in Lustre file system under ``tmp_path/name``.

    :param osts: how many OSTs (indexes 0..n-1), or the indexes themselves (``[0, 10, 20]``).
    :param inactive: indexes of deactivated OSTs.
    :param flags: index -> ``lfs df`` state letters (``{5: "D"}``).
    :param hang: indexes of OSTs whose server does not answer (commands involving them hang).
    :param place_on: index -> index where the allocator puts objects requested on it.
    :param io_error: indexes of OSTs on which writes fail (ENOSPC).
    :param migrate_error: index -> message with which ``lfs migrate`` onto it fails.
    :param used_kb: index -> used KiB (default 1 % of ``size_kb``).
    :param size_kb: capacity of each OST in KiB.
    :param mdt_count: number of MDTs.
    :param drained: indexes of drained OSTs (``max_create_count=0`` on the MDS: still ACTIVE,
        but no new objects; ``lfs setstripe -o`` fails with ENOBUFS from 2.14 on).
    :param statfs_error: index -> errno its statfs fails with (``lfs df`` prints
        ``<uuid> : <strerror>`` and exits with that status; EAGAIN targets are skipped).
    :param check_error: index -> errno its ping fails with (``lfs check osts`` reports it on
        stderr; a deactivated OST fails with ESHUTDOWN anyway).
    :param version: the Lustre release emulated, ``"2.12"`` or ``"2.15"`` (see
        :mod:`cyclone_lustre_ost.standin`).
    :param fsname: file system name.
    :param name: sub-directory of ``tmp_path`` (use different names for several stand-ins).
    """
    base = tmp_path / name
    mount = base / "mnt"
    bindir = base / "bin"
    mount.mkdir(parents=True)
    bindir.mkdir()
    indexes = list(range(osts)) if isinstance(osts, int) else sorted(osts)
    if version not in VERSIONS:
        raise ValueError(f"version: the stand-in emulates Lustre {', '.join(VERSIONS)}, not {version!r}")
    flags, place_on, migrate_error, used_kb = flags or {}, place_on or {}, migrate_error or {}, used_kb or {}
    statfs_error, check_error = statfs_error or {}, check_error or {}
    inactive, hang, io_error, drained = set(inactive), set(hang), set(io_error), set(drained)
    state = base / "state.json"
    state.write_text(
        json.dumps(
            {
                "fsname": fsname,
                "mount": str(mount),
                "instance": "ffff8803c9c0f000",
                "mdt_count": mdt_count,
                "version": version,
                "osts": [
                    {
                        "index": i,
                        "active": i not in inactive,
                        "size_kb": size_kb,
                        "used_kb": used_kb.get(i, size_kb // 100),
                        "flags": flags.get(i, ""),
                        "hang": i in hang,
                        "place_on": place_on.get(i),
                        "io_error": i in io_error,
                        "migrate_error": migrate_error.get(i),
                        "drained": i in drained,
                        "statfs_error": statfs_error.get(i),
                        "check_error": check_error.get(i),
                    }
                    for i in indexes
                ],
            },
            indent=1,
        )
    )
    return StandinLustre(
        mount=mount,
        lfs_bin=_wrapper(bindir / "lfs", _SCRIPTS / "lfs", state),
        lctl_bin=_wrapper(bindir / "lctl", _SCRIPTS / "lctl", state),
        state=state,
        env={ENV: str(state)},
        fsname=fsname,
        version=version,
    )


@pytest.fixture
def lustre_standin(tmp_path: Path) -> Callable[..., StandinLustre]:
    """A factory: ``lustre_standin(osts=..., inactive=..., ...)`` -> :class:`StandinLustre`
    (keyword arguments as :func:`standin_lustre`), built in the test's ``tmp_path``."""

    def build(**kwargs: Any) -> StandinLustre:
        return standin_lustre(tmp_path, **kwargs)

    return build
