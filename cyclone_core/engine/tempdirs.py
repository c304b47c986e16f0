"""Cyclone's temporary directories: named after their owner, removed by it, and swept up after
a killed one.

Each directory made here (the embedded run's private socket, a temporary journal, the
multiprocessing directory of a controller's fork server) is called
``cyclone-<kind>-<pid>-<random>`` in the temporary directory (``TMPDIR``), mode 0700, and holds
a file ``.owner`` with the owner's host name (not in the name: a socket goes in the directory,
and a socket's path is at most 107 bytes long).  Its owner removes it on every exit it lives
through (a normal end, an error, SIGINT, SIGTERM); a process killed with SIGKILL cannot, so
each new directory first sweeps away the ones whose owner is gone: of this user, of this host
(a ``TMPDIR`` on a shared file system is shared by several nodes), and whose pid no longer
runs.  Nothing else in the directory is touched.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import socket
import tempfile
from pathlib import Path

__all__ = ("keep", "make", "sweep")

log = logging.getLogger("cyclone.tempdirs")

#: The kinds of directories, each a word in the name.
KINDS = ("run", "journal", "mp")

#: The longest path of a Unix socket (``sun_path`` less its terminating NUL).
SOCKET_PATH_MAX = 107
#: Where a directory for a socket goes when the temporary directory's path is too long.
_SHORT_ROOT = "/tmp"  # noqa: S108  (a fallback of last resort, made with mkdtemp: private, 0700)

_NAME = re.compile(r"cyclone-(?P<kind>[a-z]+)-(?P<pid>[0-9]+)-[a-z0-9_]{8}")
_OWNER = ".owner"


def _host() -> str:
    return socket.gethostname()


def make(kind: str, *, socket_name: int = 0) -> str:
    """A fresh directory of ``kind`` (one of :data:`KINDS`) owned by this process, after
    sweeping the ones killed processes left; returns its path.  ``socket_name``: the length of
    the name of a socket to be made in it; where the temporary directory's path is too long for
    that socket, the directory is made in ``/tmp`` instead (as Python 3.12's multiprocessing
    does)."""
    assert kind in KINDS, kind
    root = tempfile.gettempdir()
    prefix = f"cyclone-{kind}-{os.getpid()}-"
    if socket_name and len(root) + len(prefix) + 8 + 2 + socket_name > SOCKET_PATH_MAX and os.path.isdir(_SHORT_ROOT):
        root = _SHORT_ROOT
    sweep(root)
    path = tempfile.mkdtemp(prefix=prefix, dir=root)
    Path(path, _OWNER).write_text(_host() + "\n", encoding="utf-8")
    return path


def _running(pid: int) -> bool:
    """Whether ``pid`` runs: a zombie (killed, not yet reaped) does not."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
    except OSError:  # no /proc: ask the kernel
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True  # another user's process
        return True


def sweep(directory: str | None = None) -> list[str]:
    """Remove the directories of :func:`make` in ``directory`` (the temporary directory by
    default) that belong to this user and host and whose process is gone; returns their paths."""
    root = Path(directory or tempfile.gettempdir())
    host, uid = _host(), os.geteuid()
    removed: list[str] = []
    try:
        entries = list(os.scandir(root))
    except OSError:
        return removed
    for entry in entries:
        match = _NAME.fullmatch(entry.name)
        if match is None or match["kind"] not in KINDS:
            continue
        try:
            info = entry.stat(follow_symlinks=False)
            if not entry.is_dir(follow_symlinks=False) or info.st_uid != uid:
                continue
            # Without the file (being made, or not ours), or of another host: left alone.
            owner = Path(entry.path, _OWNER).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError):
            continue
        if owner != host or _running(int(match["pid"])):
            continue
        with contextlib.suppress(OSError):
            shutil.rmtree(entry.path)
            removed.append(entry.path)
            log.info("removed %s, left by process %s that was killed", entry.path, match["pid"])
    return removed


def keep(path: str) -> str:
    """Rename a directory of :func:`make` so that no sweep removes it (a temporary journal that
    still holds undelivered results); returns its new path."""
    kept = Path(path)
    kept = kept.with_name(re.sub(r"^(cyclone-[a-z]+-)", r"\1kept-", kept.name))
    try:
        os.rename(path, kept)
    except OSError:
        return path
    return str(kept)
