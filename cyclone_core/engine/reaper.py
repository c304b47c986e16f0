"""No process outlives its task: worker processes are child subreapers, and a task's whole
process tree is killed when the task ends or is killed.

A task's subprocesses may leave its process group (``setsid``, a daemon's double fork), so
killing the worker's process group is not enough.  Each worker marks itself a *child
subreaper* (``prctl(PR_SET_CHILD_SUBREAPER)``): a process the task started that loses its
parent is re-parented to the worker rather than to init, so it stays a descendant of the worker
and can be found.  Then:

- after each task, the worker kills and reaps whatever is left (:func:`end_leftovers`; when
  the worker has no child, which is the rule, this costs one ``waitpid`` call);
- the controller, before it kills a worker (a task past its timeout, an abort), kills the
  worker's descendants (:func:`kill_descendants`), while the worker lives to hold them;
- a worker whose controller is gone kills its descendants before it exits.

Descendants are found from ``/proc`` (every process's parent), Linux only; elsewhere these
functions do nothing.  A worker killed by something else (the out-of-memory killer, a
``kill -9`` from outside) leaves its task's processes to init.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import time

__all__ = ("become_subreaper", "descendants", "end_leftovers", "kill_descendants")

_PR_SET_CHILD_SUBREAPER = 36
#: Rounds of "find the descendants, kill them": a process may fork between two rounds.
_KILL_ROUNDS = 50
#: Seconds a worker waits for its killed leftovers to be reaped.
_REAP_WAIT = 5.0


def become_subreaper() -> bool:
    """Make this process a child subreaper; False where that is not possible (not Linux)."""
    try:
        return ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _parents() -> dict[int, list[int]]:
    """Parent pid -> pids of its live children (zombies left out: they are dead already)."""
    children: dict[int, list[int]] = {}
    try:
        entries = os.listdir("/proc")
    except OSError:
        return children
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as stat:
                # "pid (comm) state ppid ...": comm may hold spaces and parentheses.
                fields = stat.read().rpartition(b")")[2].split()
        except OSError:
            continue  # it ended meanwhile
        if len(fields) > 1 and fields[0] != b"Z":
            children.setdefault(int(fields[1]), []).append(int(entry))
    return children


def descendants(pid: int) -> list[int]:
    """Pids of every live descendant of ``pid``, parents before their children."""
    children = _parents()
    found: list[int] = []
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), ()):
            found.append(child)
            todo.append(child)
    return found


def kill_descendants(pid: int) -> int:
    """SIGKILL every descendant of ``pid`` (not ``pid`` itself), again until none is left:
    one may fork between a look and the kill.  Returns how many were killed.

    ``pid`` should be a subreaper, alive until this returns: the orphans of the killed
    processes are then re-parented to it and found in the next round.
    """
    killed = 0
    for _ in range(_KILL_ROUNDS):
        found = descendants(pid)
        if not found:
            break
        for child in found:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(child, signal.SIGKILL)
                killed += 1
    return killed


def end_leftovers() -> int:
    """In a subreaper worker after a task: kill every process the task left behind and reap
    them.  Returns how many processes were killed."""
    try:
        pid, _ = os.waitpid(-1, os.WNOHANG)
    except ChildProcessError:
        return 0  # no child at all: the rule
    killed = kill_descendants(os.getpid())
    deadline = time.monotonic() + _REAP_WAIT
    while time.monotonic() < deadline:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            break
        if pid == 0:
            time.sleep(0.001)  # killed, not yet reaped by the kernel
    return killed
