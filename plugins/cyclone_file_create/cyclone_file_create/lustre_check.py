"""The Lustre file-creation check of one (MDT, OST) pair.

Inside MDT ``j``'s directory, create a file whose one object is asked for on OST ``i``
(``lfs setstripe -c 1 -i i``), read back where the object went (``lfs getstripe -y``), and
delete the file.  The MDS allocator starts at the OST asked for but moves on past one that is
inactive, full or failing, so a misplaced object is how a sick OST shows up even when every
command succeeds.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from pathlib import Path

import attrs
from cyclone_lustre_ost.lustre import LustreError, LustreTools, ost_label

from cyclone_file_create.check import Budget, CheckError, CheckReport, CheckStatus, CheckTimeout
from cyclone_file_create.plain_check import scratch_name

__all__ = ("LustreCheck",)


@attrs.define(kw_only=True)
class LustreCheck:
    """One check; :meth:`run` does it (inside :func:`~cyclone_file_create.check.run_within`)."""

    path: Path
    mdt_index: int
    ost_index: int
    mdt_dir_prefix: str
    create_dirs: bool
    lfs_bin: str
    lctl_bin: str
    sudo: bool
    budget: Budget

    def run(self) -> CheckReport:
        """Create, confirm and delete the file; raise :class:`CheckError` if a step fails."""
        directory = self.path / f"{self.mdt_dir_prefix}{self.mdt_index}"
        self._ensure_directory(directory)
        file = directory / scratch_name(f"ost{self.ost_index}")
        try:
            with self._lfs(f"lfs setstripe -c 1 -i {self.ost_index} {file}") as tools:
                started = time.perf_counter()
                tools.setstripe(str(file), self.ost_index, count=1)
                seconds = time.perf_counter() - started
            with self._lfs(f"lfs getstripe -y {file}") as tools:
                placed = tools.stripe_index(str(file))
        finally:
            # Always, even after a timeout: a killed setstripe may still have created the file.
            with self.budget.step(f"delete {file}", cleanup=True), contextlib.suppress(FileNotFoundError):
                os.unlink(file)
        details = {"file": str(file), "placed_ost_index": placed}
        if placed != self.ost_index:
            return CheckReport(
                CheckStatus.FAILED,
                error=(
                    f"object asked for on {ost_label(self.ost_index)} (index {self.ost_index}) "
                    f"was placed on {ost_label(placed)} (index {placed})"
                ),
                seconds=seconds,
                details=details,
            )
        return CheckReport(CheckStatus.OK, seconds=seconds, details=details)

    def _ensure_directory(self, directory: Path) -> None:
        with self.budget.step(f"stat {directory}"):
            if directory.is_dir():
                return
        if not self.create_dirs:
            raise CheckError(
                f'MDT directory {directory} does not exist; create it with "lfs mkdir -i {self.mdt_index} '
                f'{directory}" or set create_dirs'
            )
        try:
            with self._lfs(f"lfs mkdir -i {self.mdt_index} {directory}") as tools:
                tools.mkdir_on_mdt(str(directory), self.mdt_index)
        except CheckTimeout:
            raise
        except CheckError:
            # The checks of the other OSTs on this MDT run at the same time and race to create it.
            if not directory.is_dir():
                raise

    @contextlib.contextmanager
    def _lfs(self, what: str) -> Iterator[LustreTools]:
        """A step that runs ``lfs``, with the budget's remaining time as the command's timeout."""
        with self.budget.step(what) as remaining:
            try:
                yield LustreTools(lfs_bin=self.lfs_bin, lctl_bin=self.lctl_bin, sudo=self.sudo, timeout=remaining)
            except LustreError as exc:
                # The command's timeout is the time left, so a killed command means time is up.
                if self.budget.remaining() <= 0:
                    raise CheckTimeout(self.budget.expired_message()) from exc
                raise CheckError(str(exc)) from exc
