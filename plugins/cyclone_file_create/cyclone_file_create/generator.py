"""The ``file-create`` generator: rounds of file-creation checks over MDTs x OSTs, or of one
directory's file-create latency.

Every ``interval`` seconds a round starts: the file system is examined once (in a thread, so
:meth:`FileCreateGenerator.tasks` never blocks; it yields ``None`` meanwhile), then one task per
(MDT, OST) pair is handed out (one task per round for a plain directory).  A pair whose check
from an earlier round has not settled yet is not handed out again.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Generator, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ClassVar

import attrs
from cyclone_core import CycloneError, Result, TaskGenerator, TaskSpec
from cyclone_lustre_ost.discovery import MODES, check_rangeset

from cyclone_file_create.discovery import DiscoveryError, Plan, Target, discover
from cyclone_file_create.task import FileCreateTask
from cyclone_file_create.validators import at_least, one_of

__all__ = ("ENGINE_GRACE", "FileCreateGenerator")

log = logging.getLogger("cyclone.file_create")

#: Seconds added to ``timeout_ms`` for the engine's own timeout of a task.  The task reports a
#: timeout itself; the engine's timeout is there for a worker that is wedged beyond that, and
#: keeps a shorter run-wide default timeout from cutting checks short.
ENGINE_GRACE = 5.0


def _absolute(value: str) -> str:
    # Tasks run on other nodes with another working directory: send them an absolute path.
    if not value:
        raise ValueError("path: must not be empty")
    return os.path.abspath(os.path.expanduser(value))


def _dir_prefix(_: Any, attribute: attrs.Attribute[Any], value: str) -> None:
    if not value or "/" in value:
        raise ValueError(f"{attribute.name}: must be a non-empty directory name prefix without '/', got {value!r}")


@attrs.define(kw_only=True)
class FileCreateGenerator(TaskGenerator):
    """Periodic file-creation checks of a Lustre file system, or of any directory.

    :param path: the directory checked: a Lustre mount (or a directory in it) holding one
        sub-directory per MDT, or any directory on another file system.
    :param lfs_bin: the ``lfs`` command the master runs to examine the file system; the checks
        run the controllers' own (``[controller.local.lustre]``).
    :param lctl_bin: the ``lctl`` command the master runs.
    :param sudo: run the master's Lustre commands through ``sudo -n``.
    :param osts: OST indexes to check, a ClusterShell RangeSet of decimal indexes (``0-11,20``);
        empty means all.
    :param mdts: MDT indexes to check, likewise; empty means all.
    :param interval: seconds from the start of one round to the start of the next.
    :param rounds: rounds to run; 0 runs until stopped, 1 is a one-shot check.
    :param timeout_ms: milliseconds one check may take from start to end, deletion included.
    :param mode: ``auto`` (Lustre if ``path`` is on Lustre, else plain), ``lustre`` or ``plain``.
    :param create_dirs: create a missing per-MDT directory with ``lfs mkdir -i``.
    :param mdt_dir_prefix: MDT ``j`` is checked in ``<path>/<mdt_dir_prefix><j>``.
    :param count: files created per check of a plain directory.
    """

    name: ClassVar[str] = "file-create"
    # A monitoring loop: after a restart it simply starts a fresh round.
    deterministic: ClassVar[bool] = False

    path: str = attrs.field(converter=_absolute)
    lfs_bin: str = "lfs"
    lctl_bin: str = "lctl"
    sudo: bool = False
    osts: str = attrs.field(default="", validator=check_rangeset)
    mdts: str = attrs.field(default="", validator=check_rangeset)
    interval: float = attrs.field(default=60.0, validator=at_least(0))
    rounds: int = attrs.field(default=0, validator=at_least(0))
    timeout_ms: int = attrs.field(default=10_000, validator=at_least(1))
    mode: str = attrs.field(default="auto", validator=one_of(*MODES))
    create_dirs: bool = True
    mdt_dir_prefix: str = attrs.field(default="mdt", validator=_dir_prefix)
    count: int = attrs.field(default=10, validator=at_least(1))

    _in_flight: set[str] = attrs.field(factory=set, init=False, repr=False)
    _plan: Plan | None = attrs.field(default=None, init=False, repr=False)
    _executor: ThreadPoolExecutor | None = attrs.field(default=None, init=False, repr=False)

    def tasks(self) -> Iterator[TaskSpec | None]:
        """Run the rounds; see the module docstring."""
        started = 0
        next_round = time.monotonic()
        while self.rounds == 0 or started < self.rounds:
            while time.monotonic() < next_round:
                yield None
            round_start = time.monotonic()
            plan = yield from self._examine()
            started += 1
            yield from self._hand_out(plan, started)
            next_round = round_start + self.interval

    def on_result(self, result: Result) -> None:
        """A check settled: its pair may be handed out again."""
        if result.key is not None:
            self._in_flight.discard(result.key)

    def close(self) -> None:
        """Stop the examination thread (a running one is left to finish on its own)."""
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None

    def _examine(self) -> Generator[None, None, Plan]:
        """Examine the file system in a thread, yielding ``None`` until done; returns the plan.

        The first examination failing ends the run with its error: nothing has been checked
        yet, so it is almost certainly a configuration mistake.  A later one is logged and the
        previous round's plan is used again, so a monitoring loop outlives a hiccup and its
        checks report what is wrong with the file system.
        """
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="file-create-examine")
        future = self._executor.submit(discover, self)
        while not future.done():
            yield None
        try:
            plan = future.result()
        except DiscoveryError as exc:
            if self._plan is None:
                raise CycloneError(str(exc)) from exc
            log.warning("file-create: %s; checking the targets of the previous round again", exc)
            return self._plan
        if self._plan is None and plan.mode == "plain" and (self.osts or self.mdts):
            log.warning("file-create: %s is not on Lustre; the osts and mdts options are ignored", self.path)
        self._plan = plan
        return plan

    def _hand_out(self, plan: Plan, number: int) -> Iterator[TaskSpec]:
        skipped = 0
        for target in plan.targets:
            if target.key in self._in_flight:
                skipped += 1
                continue
            self._in_flight.add(target.key)
            yield TaskSpec(task=self._task(plan, target), key=target.key, timeout=self.timeout_ms / 1000 + ENGINE_GRACE)
        log.info(
            "file-create round %d: %d checks of %s (%s)%s",
            number,
            len(plan.targets) - skipped,
            self.path,
            plan.mode,
            f", {skipped} not repeated because their previous check is still running" if skipped else "",
        )

    def _task(self, plan: Plan, target: Target) -> FileCreateTask:
        return FileCreateTask(
            path=self.path,
            mode=plan.mode,
            fsname=plan.fsname,
            mdt_index=target.mdt_index,
            ost_index=target.ost_index,
            ost_active=target.active,
            mdt_dir_prefix=self.mdt_dir_prefix,
            create_dirs=self.create_dirs,
            timeout_ms=self.timeout_ms,
            count=self.count,
        )
