"""The Lustre file-creation check of one (MDT, OST) pair.

Each pair has its own directory, ``<path>/<prefix><j>/ost<i>``, made once with ``lfs mkdir -i
j`` and given the default layout ``lfs setstripe -c 1 -i i``: every file created in it is
asked for on OST ``i``.  A check then

1. confirms that the MDT directory and the pair's directory live on MDT ``j`` (``lfs
   getdirstripe -m``): a directory created with a plain ``mkdir`` may have been placed on
   another MDT (DNE space balancing), and the check would measure the wrong one;
2. times the creation itself, in this process: ``open(O_CREAT | O_EXCL)`` and ``close``, so
   the latency is the MDS's and not the start-up of an ``lfs`` or ``sudo`` process;
3. reads back where the object went (``lfs getstripe -y``): the MDS allocator starts at the
   OST asked for but moves past one that is inactive, full or failing, so a misplaced object is
   how a sick OST shows up even when every call succeeds;
4. deletes the file, always.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from pathlib import Path

import attrs
from cyclone_lustre_ost.local import LustreLocal
from cyclone_lustre_ost.lustre import LustreError, LustreTools, ost_label

from cyclone_file_create.check import Budget, CheckError, CheckReport, CheckStatus, CheckTimeout
from cyclone_file_create.plain_check import scratch_name

__all__ = ("LustreCheck", "ost_dir_name")


def ost_dir_name(ost_index: int) -> str:
    """The directory of OST ``i``'s checks inside an MDT directory: ``ost10`` (decimal)."""
    return f"ost{ost_index}"


@attrs.define(kw_only=True)
class LustreCheck:
    """One check; :meth:`run` does it (inside :func:`~cyclone_file_create.check.run_within`)."""

    path: Path
    mdt_index: int
    ost_index: int
    mdt_dir_prefix: str
    create_dirs: bool
    #: The controller's Lustre tools.
    local: LustreLocal
    budget: Budget

    def run(self) -> CheckReport:
        """Create, confirm and delete the file; raise :class:`CheckError` if a step fails."""
        mdt_dir = self.path / f"{self.mdt_dir_prefix}{self.mdt_index}"
        ost_dir = mdt_dir / ost_dir_name(self.ost_index)
        self._ensure_directory(mdt_dir, f'"lfs mkdir -i {self.mdt_index} {mdt_dir}"')
        self._ensure_directory(ost_dir, f"the check's own directory {ost_dir}", pin_to_ost=True)
        self._confirm_mdt(mdt_dir, ost_dir)
        file = ost_dir / scratch_name("check")
        try:
            with self.budget.step(f"create {file}"):
                started = time.perf_counter()
                os.close(os.open(file, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
                seconds = time.perf_counter() - started
            with self._lfs(f"lfs getstripe -y {file}") as tools:
                placed = tools.stripe_index(str(file))
        finally:
            # Always, even after a timeout: the file may exist although the step did not finish.
            with self.budget.step(f"delete {file}", cleanup=True), contextlib.suppress(FileNotFoundError):
                os.unlink(file)
        details = {"file": str(file), "placed_ost_index": placed}
        if placed != self.ost_index:
            where = f"{ost_label(placed)} (index {placed})" if placed is not None else "no OST"
            return CheckReport(
                CheckStatus.FAILED,
                error=f"object asked for on {ost_label(self.ost_index)} (index {self.ost_index}) was placed on {where}",
                seconds=seconds,
                details=details,
            )
        return CheckReport(CheckStatus.OK, seconds=seconds, details=details)

    def _ensure_directory(self, directory: Path, how: str, *, pin_to_ost: bool = False) -> None:
        """Create ``directory`` on this MDT if it is missing (and ``create_dirs`` is set); the
        per-OST one also gets its default layout, once."""
        with self.budget.step(f"stat {directory}"):
            if directory.is_dir():
                return
        if not self.create_dirs:
            raise CheckError(f"directory {directory} does not exist; create it with {how} or set create_dirs")
        try:
            with self._lfs(f"lfs mkdir -i {self.mdt_index} {directory}") as tools:
                tools.mkdir_on_mdt(str(directory), self.mdt_index)
        except CheckTimeout:
            raise
        except CheckError:
            # The checks of the other OSTs on this MDT run at the same time and race to create it.
            if not directory.is_dir():
                raise
            return
        if pin_to_ost:
            with self._lfs(f"lfs setstripe -c 1 -i {self.ost_index} {directory}") as tools:
                tools.setstripe(str(directory), self.ost_index)

    def _confirm_mdt(self, *directories: Path) -> None:
        shown = " ".join(str(d) for d in directories)
        with self._lfs(f"lfs getdirstripe -m {shown}") as tools:
            mdts = tools.dir_mdts(*(str(d) for d in directories))
        for directory, mdt in zip(directories, mdts, strict=True):
            if mdt != self.mdt_index:
                raise CheckError(
                    f"directory {directory} is on MDT {mdt}, not MDT {self.mdt_index}; move it with "
                    f'"lfs migrate -m {self.mdt_index} {directory}" or remove it to have it recreated'
                )

    @contextlib.contextmanager
    def _lfs(self, what: str) -> Iterator[LustreTools]:
        """A step that runs ``lfs``, with the budget's remaining time as the command's timeout."""
        with self.budget.step(what) as remaining:
            try:
                yield self.local.tools(remaining)
            except LustreError as exc:
                # The command's timeout is the time left, so a killed command means time is up.
                if self.budget.remaining() <= 0:
                    raise CheckTimeout(self.budget.expired_message()) from exc
                raise CheckError(str(exc)) from exc
