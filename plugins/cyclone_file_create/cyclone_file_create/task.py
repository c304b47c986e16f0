"""The ``file-create`` task: one file-creation check, reported as an outcome with metrics.

Statuses: the fine-grained :class:`~cyclone_file_create.check.CheckStatus` goes into the
payload (``check``) and the latency metric's ``check`` label; the result's status is ``ok`` for
``ok`` and ``failed`` for everything else (``failed``, ``error``, ``timeout``, ``inactive``),
with the one-line error.  A task reports ``ok`` or ``failed`` only; the result status
``timeout`` comes from the engine, when it had to kill a worker that did not return at all.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, ClassVar

import attrs
from cyclone_core import Metric, Outcome, Status, Task, TaskContext
from cyclone_lustre_ost.local import SECTION, LustreLocal
from cyclone_lustre_ost.lustre import ost_label
from cyclone_lustre_ost.metrics import mdt_label, target_labels

from cyclone_file_create.check import Budget, CheckReport, CheckStatus, run_within
from cyclone_file_create.lustre_check import LustreCheck
from cyclone_file_create.plain_check import check_plain
from cyclone_file_create.validators import at_least, one_of

__all__ = (
    "CHECK_METRIC",
    "ERROR_METRIC",
    "LUSTRE_SECONDS_METRIC",
    "LUSTRE_TIMESTAMP_METRIC",
    "PLAIN_MAX_SECONDS_METRIC",
    "PLAIN_SECONDS_METRIC",
    "FileCreateTask",
)

#: Creation latency of one Lustre check: ``open(O_CREAT | O_EXCL)`` and ``close`` of the file.
LUSTRE_SECONDS_METRIC = "cyclone_lustre_file_creation_seconds"
#: When the pair was last checked (epoch seconds), whatever the outcome: for freshness.
LUSTRE_TIMESTAMP_METRIC = "cyclone_lustre_file_creation_timestamp_seconds"
#: 1 when the object landed on the OST asked for, 0 when elsewhere (Cyclone 2.x name).
CHECK_METRIC = "cyclone_lustre_file_creation_check"
#: 1 when the check errored or timed out, else 0 (Cyclone 2.x name).
ERROR_METRIC = "cyclone_lustre_file_creation_error"
#: Mean latency of creating a file durably in a plain directory.
PLAIN_SECONDS_METRIC = "cyclone_file_creation_seconds"
#: Longest of those creations.
PLAIN_MAX_SECONDS_METRIC = "cyclone_file_creation_max_seconds"


@attrs.define(kw_only=True)
class FileCreateTask(Task):
    """Create a file, confirm it, delete it, and time it.

    In ``lustre`` mode: inside ``<path>/<mdt_dir_prefix><mdt_index>/ost<ost_index>``, whose
    default layout asks for OST ``ost_index``, create a file (timed, in-process), confirm the
    placement (``lfs getstripe -y``) and delete the file; see
    :mod:`cyclone_file_create.lustre_check`.  In ``plain`` mode: create ``count`` files in ``path``
    (each made durable with an ``fsync`` of the directory), stat and delete each.

    The whole check must finish within ``timeout_ms`` milliseconds; a command still running
    then is killed and the check reports ``timeout``.

    :param path: the Lustre directory holding the per-MDT directories, or the plain directory.
    :param mode: ``lustre`` or ``plain``.
    :param fsname: the file system name (the ``target`` label of the Cyclone 2.x series).
    :param mdt_index: the MDT whose directory the file is created in (Lustre).
    :param ost_index: the OST the file's object is asked for on (Lustre).
    :param ost_active: ``False`` when the OST was found inactive: the task only reports that.
    :param mdt_dir_prefix: prefix of the per-MDT directory names.
    :param create_dirs: create a missing per-MDT directory with ``lfs mkdir -i``.
    :param timeout_ms: milliseconds the whole check may take.
    :param count: files created in plain mode.

    The ``lfs`` program and ``sudo`` come from the controller's ``[controller.local.lustre]``,
    and ``path`` must be under its ``roots``: a check elsewhere is refused untouched.
    """

    name: ClassVar[str] = "file-create"
    local_section: ClassVar[str] = SECTION
    local_settings: ClassVar[type[Any] | None] = LustreLocal

    path: str
    mode: str = attrs.field(default="plain", validator=one_of("lustre", "plain"))
    fsname: str = ""
    mdt_index: int | None = None
    ost_index: int | None = None
    ost_active: bool = True
    mdt_dir_prefix: str = "mdt"
    create_dirs: bool = True
    timeout_ms: int = attrs.field(default=10_000, validator=at_least(1))
    count: int = attrs.field(default=10, validator=at_least(1))

    def execute(self, ctx: TaskContext) -> Outcome:
        """Run the check within ``timeout_ms`` and report it."""
        budget = Budget(self.timeout_ms)
        local = LustreLocal.of(ctx)
        # A path outside the controller's roots is an error of the check: nothing is touched.
        refusal = local.refusal(self.path)
        refused = CheckReport(CheckStatus.ERROR, error=refusal) if refusal is not None else None
        if self.mode == "plain":
            report = refused or run_within(lambda: check_plain(Path(self.path), self.count, budget), budget)
            return self._plain_outcome(report)
        if self.mdt_index is None or self.ost_index is None or not self.fsname:
            raise ValueError("a Lustre file-create check needs fsname, mdt_index and ost_index")
        if refused is not None:
            report = refused
        elif not self.ost_active:
            report = CheckReport(
                CheckStatus.INACTIVE, error=f"{ost_label(self.ost_index)} is inactive; file creation not checked"
            )
        else:
            check = LustreCheck(
                path=Path(self.path),
                mdt_index=self.mdt_index,
                ost_index=self.ost_index,
                mdt_dir_prefix=self.mdt_dir_prefix,
                create_dirs=self.create_dirs,
                local=local,
                budget=budget,
            )
            report = run_within(check.run, budget)
        return self._lustre_outcome(report, self.mdt_index, self.ost_index)

    def _plain_outcome(self, report: CheckReport) -> Outcome:
        labels = {"path": self.path}
        metrics = []
        if report.seconds is not None:
            metrics = [
                Metric(PLAIN_SECONDS_METRIC, report.seconds, "s", labels),
                Metric(PLAIN_MAX_SECONDS_METRIC, report.details["create_seconds"]["max"], "s", labels),
            ]
        payload = {"check": str(report.status), "mode": "plain", "path": self.path, **report.details}
        return _outcome(report, metrics, payload)

    def _lustre_outcome(self, report: CheckReport, mdt: int, ost: int) -> Outcome:
        # The Cyclone 2.x series keep their labels (target = the file system) for old dashboards;
        # the others carry the exporters' component and target, plus the MDT.
        legacy = {"target": self.fsname, "mdt_index": str(mdt), "ost_index": str(ost)}
        labels = {**target_labels(self.fsname, "ost", ost), "mdt": mdt_label(self.fsname, mdt)}
        metrics = [Metric(LUSTRE_TIMESTAMP_METRIC, time.time(), "s", labels)]
        if report.seconds is not None:
            metrics.append(Metric(LUSTRE_SECONDS_METRIC, report.seconds, "s", {**labels, "check": str(report.status)}))
        if report.status in (CheckStatus.OK, CheckStatus.FAILED):
            metrics.append(Metric(CHECK_METRIC, float(report.status is CheckStatus.OK), "1", legacy))
        failed_to_check = report.status in (CheckStatus.ERROR, CheckStatus.TIMEOUT)
        metrics.append(Metric(ERROR_METRIC, float(failed_to_check), "1", legacy))
        payload = {
            "check": str(report.status),
            "mode": "lustre",
            "target": self.fsname,
            "mdt_index": mdt,
            "ost_index": ost,
            "ost": ost_label(ost),
            **report.details,
        }
        return _outcome(report, metrics, payload)


def _outcome(report: CheckReport, metrics: list[Metric], payload: dict[str, Any]) -> Outcome:
    if report.seconds is not None:
        payload["seconds"] = report.seconds
    status = Status.OK if report.status is CheckStatus.OK else Status.FAILED
    return Outcome(metrics=metrics, payload=payload, status=status, error=report.error)
