"""OST data migration: the ``lustre-ost-migrate`` generator and task.

Input
    Files named ``*.input`` in ``input_dir`` hold one ``<ost> <path>`` line per file to move
    off OST ``<ost>`` (decimal index; blank lines and ``#`` comments are ignored).  A loaded
    file is renamed to ``*.done``; a bad line is logged with ``file:line`` and skipped.

Planning (:class:`MigrationPlanner`, pure state, no I/O)
    Files wait in one FIFO queue per source OST (Cyclone 2.x popped them LIFO, by mistake).
    Per OST the state is derived from the last ``lfs df`` (refreshed every
    ``refresh_interval``) and the migrations in flight, which each occupy their source *and*
    their target:

    * a **source** is ready while its fill is at least ``source_threshold`` percent and fewer
      than ``max_per_ost`` migrations occupy it;
    * a **target** (an OST in the ``targets`` RangeSet) is ready while it is active, its fill
      is below ``target_threshold`` and fewer than ``max_per_ost`` migrations occupy it;
    * everything else is blocked until a result frees it or the next refresh changes its fill.

    Sources are served round-robin, and so are the targets, so the work spreads out.

Outcomes (the task's payload ``outcome`` and metric label)
    ``success``, ``skipped`` (a Data-on-MDT layout, always: the migration would flatten it; a
    striped or composite file with ``skip_striped``), ``ignored`` (not on the
    source OST, or already on the target), ``displaced`` (migrated, but the data landed on
    another OST: the allocator skipped the target) with status ok; ``failed`` (the tool's
    error) with status failed.
"""

from __future__ import annotations

import collections
import logging
import os
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar

import attrs

from cyclone_core import CycloneError, Metric, Outcome, Result, Status, Task, TaskContext, TaskGenerator, TaskSpec
from cyclone_lustre_ost.discovery import check_rangeset, format_indexes, parse_rangeset
from cyclone_lustre_ost.legacy import legacy_bool, legacy_task_properties, translate
from cyclone_lustre_ost.local import SECTION, LustreLocal
from cyclone_lustre_ost.lustre import Layout, LustreError, LustreTools, Ost, ost_label
from cyclone_lustre_ost.metrics import target_labels, target_name
from cyclone_lustre_ost.options import between, positive

__all__ = ("LustreOstMigrateGenerator", "LustreOstMigrateTask", "MigrationEntry", "MigrationPlanner", "read_input")

log = logging.getLogger("cyclone.lustre_ost")

_LINE = re.compile(r"^(?P<ost>\S+)\s+(?P<path>\S.*?)\s*$")

OUTCOMES = ("success", "skipped", "ignored", "displaced", "failed")


# -- the task ---------------------------------------------------------------------------------


@attrs.define(kw_only=True)
class LustreOstMigrateTask(Task):
    """Move ``file`` from OST ``source`` to OST ``target`` with ``lfs migrate``.

    :param file: the file to move.
    :param source: the OST it is expected on.
    :param target: the OST to move it to.
    :param fsname: file system name, for the ``fs`` label.
    :param block: block other access during the copy (``--block``), else ``--non-block``.
    :param direct_io: copy with O_DIRECT; ``False`` adds ``--non-direct``.
    :param skip_striped: leave files with more than one stripe or component alone (files with a
        Data-on-MDT component are always left alone).
    :param tool_timeout: seconds each ``lfs`` call may take (the copy included).

    The ``lfs`` program and ``sudo`` come from the controller's ``[controller.local.lustre]``,
    and ``file`` must be under its ``roots``.
    """

    name: ClassVar[str] = "lustre-ost-migrate"
    local_section: ClassVar[str] = SECTION
    local_settings: ClassVar[type[Any] | None] = LustreLocal

    file: str
    source: int = attrs.field(validator=attrs.validators.ge(0))
    target: int = attrs.field(validator=attrs.validators.ge(0))
    fsname: str = ""
    block: bool = True
    direct_io: bool = True
    skip_striped: bool = True
    tool_timeout: float = attrs.field(default=3600.0, validator=positive)

    def execute(self, ctx: TaskContext) -> Outcome:
        """Check the layout, migrate, check again; see the module documentation."""
        local = LustreLocal.of(ctx)
        start = time.perf_counter()
        refusal = local.refusal(self.file)
        if refusal is not None:
            return self._outcome("failed", refusal, start=start)
        tools = local.tools(self.tool_timeout)
        try:
            before = tools.getstripe(self.file)
            verdict = self._verdict(before)
            if verdict is not None:
                return self._outcome(*verdict, start=start)
            tools.migrate(
                self.file,
                self.target,
                block=self.block,
                direct_io=self.direct_io,
                stripe_count=max(before.stripe_count, 1),
            )
            after = tools.getstripe(self.file)
        except LustreError as exc:
            return self._outcome("failed", str(exc), start=start)
        if after.stripe_offset != self.target:
            return self._outcome("displaced", f"migrated to {after.describe()}, not {self._target}", start=start)
        return self._outcome("success", None, start=start)

    @property
    def _source(self) -> str:
        return ost_label(self.source)

    @property
    def _target(self) -> str:
        return ost_label(self.target)

    def _verdict(self, layout: Layout) -> tuple[str, str] | None:
        on = layout.describe()
        if layout.dom:  # "lfs migrate -c N -i M" would turn it into a plain layout on one OST
            return "skipped", f"Data-on-MDT layout ({on}) is never flattened by a migration"
        if (layout.striped or layout.composite) and self.skip_striped:
            return "skipped", f"striped over {on}" if layout.striped else f"composite layout on {on}"
        if self.target in layout.osts:
            return "ignored", f"already on {self._target}"
        if self.source not in layout.osts:
            return "ignored", f"not on {self._source} (on {on})"
        return None

    def _outcome(self, outcome: str, detail: str | None, *, start: float) -> Outcome:
        seconds = time.perf_counter() - start
        # The exporters' labels name the OST the file leaves; "destination" the one it goes to.
        labels = {
            **target_labels(self.fsname, "ost", self.source),
            "destination": target_name(self.fsname, "ost", self.target),
            "outcome": outcome,
        }
        payload: dict[str, Any] = {
            "file": self.file,
            "source": self._source,
            "target": self._target,
            "outcome": outcome,
            "seconds": seconds,
        }
        if detail:
            payload["detail"] = detail
        metrics = [Metric("cyclone_lustre_ost_migrate_seconds", seconds, "s", labels)]
        try:
            size = os.stat(self.file).st_size
        except OSError:
            size = None
        if size is not None:
            payload["bytes"] = size
            if outcome in ("success", "displaced"):
                metrics.append(Metric("cyclone_lustre_ost_migrate_bytes", float(size), "bytes", labels))
        failed = outcome == "failed"
        return Outcome(
            metrics=metrics,
            payload=payload,
            status=Status.FAILED if failed else Status.OK,
            error=detail if failed else None,
        )


# -- input files --------------------------------------------------------------------------------


@attrs.frozen
class MigrationEntry:
    """One file to move: its path, the OST it is on, and where the request came from."""

    path: str
    source: int
    origin: str = ""


def read_input(file: Path, root: str, known: Iterable[int] | None = None) -> list[MigrationEntry]:
    """Parse one input file; bad lines are logged as ``file:line: problem`` and skipped.

    :param root: the file system path every listed file must be under.
    :param known: the file system's OST indexes, to reject lines naming another one.
    """
    indexes = set(known) if known is not None else None
    root = os.path.normpath(root)
    entries = []
    for number, raw in enumerate(file.read_text(errors="replace").splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        where = f"{file}:{number}"
        match = _LINE.match(line)
        problem = None
        if match is None or not match["ost"].isdigit():
            problem = f"expected '<ost index> <path>', got {line!r}"
        elif not os.path.isabs(match["path"]) or not os.path.normpath(match["path"]).startswith(root + os.sep):
            problem = f"{match['path']!r} is not a path under {root}"
        elif indexes is not None and int(match["ost"]) not in indexes:
            problem = f"no OST {match['ost']} in the file system (its OSTs are {format_indexes(indexes)})"
        if problem:
            log.warning("%s: %s; line skipped", where, problem)
            continue
        assert match is not None
        entries.append(MigrationEntry(path=os.path.normpath(match["path"]), source=int(match["ost"]), origin=where))
    return entries


# -- the state machine --------------------------------------------------------------------------


@attrs.define
class MigrationPlanner:
    """Which file to move next, from where to where; pure bookkeeping, driven by results.

    :param source_threshold: a source is ready at or above this fill (percent).
    :param target_threshold: a target is ready below this fill (percent).
    :param targets: allowed target OSTs; ``None``: every OST.
    :param max_per_ost: migrations that may occupy one OST at a time (as source or target).
    """

    source_threshold: float
    target_threshold: float
    targets: list[int] | None = None
    max_per_ost: int = 1
    queues: dict[int, collections.deque[MigrationEntry]] = attrs.field(factory=dict)
    #: index -> fill percent of the OSTs that are active, from the last refresh
    fill: dict[int, float] = attrs.field(factory=dict)
    busy: collections.Counter[int] = attrs.field(factory=collections.Counter)
    _last_source: int = -1
    _last_target: int = -1

    def add(self, entries: Iterable[MigrationEntry]) -> None:
        """Queue files behind those already waiting on the same source."""
        for entry in entries:
            self.queues.setdefault(entry.source, collections.deque()).append(entry)

    def update(self, osts: Iterable[Ost]) -> None:
        """Take fill levels from a fresh ``lfs df``; inactive OSTs are neither source nor target."""
        self.fill = {o.index: o.fill_percent for o in osts if o.active and o.fill_percent is not None}

    def waiting(self) -> int:
        """Files queued and not handed out yet."""
        return sum(len(queue) for queue in self.queues.values())

    def source_ready(self, index: int) -> bool:
        """Whether OST ``index`` can give up a file now."""
        fill = self.fill.get(index)
        return fill is not None and fill >= self.source_threshold and self.busy[index] < self.max_per_ost

    def target_ready(self, index: int) -> bool:
        """Whether OST ``index`` can take a file now."""
        fill = self.fill.get(index)
        allowed = self.targets is None or index in self.targets
        return allowed and fill is not None and fill < self.target_threshold and self.busy[index] < self.max_per_ost

    def next(self) -> tuple[MigrationEntry, int] | None:
        """The next (file, target) to start, with both OSTs marked busy; ``None`` if blocked."""
        for source in _after(sorted(i for i, q in self.queues.items() if q), self._last_source):
            if not self.source_ready(source):
                continue
            target = next(
                (t for t in _after(sorted(self.fill), self._last_target) if t != source and self.target_ready(t)),
                None,
            )
            if target is None:
                return None  # no target takes anything: no other source can proceed either
            entry = self.queues[source].popleft()
            self._last_source, self._last_target = source, target
            self.busy[source] += 1
            self.busy[target] += 1
            return entry, target
        return None

    def release(self, source: int, target: int) -> None:
        """A migration settled: its OSTs are free again."""
        for index in (source, target):
            self.busy[index] -= 1
            if self.busy[index] <= 0:
                del self.busy[index]


def _after(indexes: list[int], last: int) -> list[int]:
    """``indexes`` rotated to start after ``last`` (round-robin)."""
    position = next((n for n, i in enumerate(indexes) if i > last), 0)
    return indexes[position:] + indexes[:position]


# -- the generator ----------------------------------------------------------------------------


@attrs.define(kw_only=True)
class LustreOstMigrateGenerator(TaskGenerator):
    """Drain files listed in ``input_dir`` off full OSTs into emptier ones.

    :param path: the Lustre file system (mount point or any directory on it); listed files
        must be under it.
    :param input_dir: directory scanned for ``*.input`` files.
    :param lfs_bin: the ``lfs`` program the master runs (``lfs df``, for the fill levels); the
        migrations run the controllers' own (``[controller.local.lustre]``).
    :param sudo: run the master's ``lfs`` with ``sudo -n``.
    :param source_threshold: migrate off an OST only while it is at least this full (percent).
    :param target_threshold: migrate onto an OST only while it is less full than this.
    :param targets: RangeSet of OSTs that may receive files; empty: all.
    :param max_per_ost: migrations one OST may take part in at a time.
    :param refresh_interval: seconds between ``lfs df`` refreshes of the fill levels.
    :param scan_interval: seconds between scans of ``input_dir``.
    :param timeout: seconds one migration may run.
    :param block: ``lfs migrate --block`` (else ``--non-block``).
    :param direct_io: copy with O_DIRECT (else ``--non-direct``).
    :param skip_striped: leave striped files alone.
    :param until_done: return once every listed file was handed out, or nothing more can move
        (a one-shot run); by default the generator runs forever, like a daemon.
    """

    name: ClassVar[str] = "lustre-ost-migrate"
    deterministic: ClassVar[bool] = False
    legacy_class: ClassVar[str] = "LustreOstMigrationTaskGenerator"

    path: str
    input_dir: str
    lfs_bin: str = "lfs"
    sudo: bool = False
    source_threshold: float = attrs.field(default=0.0, validator=between(0, 100))
    target_threshold: float = attrs.field(default=80.0, validator=between(0, 100))
    targets: str = attrs.field(default="", validator=check_rangeset)
    max_per_ost: int = attrs.field(default=1, validator=attrs.validators.ge(1))
    refresh_interval: float = attrs.field(default=300.0, validator=positive)
    scan_interval: float = attrs.field(default=10.0, validator=positive)
    timeout: float = attrs.field(default=3600.0, validator=positive)
    block: bool = True
    direct_io: bool = True
    skip_striped: bool = True
    until_done: bool = False

    #: The clock refreshes are scheduled by; tests replace it.
    clock: Callable[[], float] = attrs.field(default=time.monotonic, init=False, repr=False)
    planner: MigrationPlanner = attrs.field(init=False)
    #: outcome -> count, over the results received
    outcomes: collections.Counter[str] = attrs.field(factory=collections.Counter, init=False)
    _fsname: str = attrs.field(default="", init=False, repr=False)
    _osts: set[int] | None = attrs.field(default=None, init=False, repr=False)
    _in_flight: dict[str, tuple[int, int]] = attrs.field(factory=dict, init=False, repr=False)
    _issued: int = attrs.field(default=0, init=False, repr=False)
    _next_refresh: float = attrs.field(default=0.0, init=False, repr=False)
    _next_scan: float = attrs.field(default=0.0, init=False, repr=False)
    _stale: bool = attrs.field(default=False, init=False, repr=False)

    def __attrs_post_init__(self) -> None:
        # After the validators, so that a bad ``targets`` is reported by them.
        self.planner = MigrationPlanner(
            source_threshold=self.source_threshold,
            target_threshold=self.target_threshold,
            targets=parse_rangeset(self.targets),
            max_per_ost=self.max_per_ost,
        )

    @property
    def tools(self) -> LustreTools:
        """The Lustre tools as configured; ``lfs df`` is bounded by five minutes."""
        return LustreTools(lfs_bin=self.lfs_bin, sudo=self.sudo, timeout=min(self.timeout, 300.0))

    def in_flight(self) -> dict[str, tuple[int, int]]:
        """Key -> (source, target) of the migrations handed out and not settled."""
        return dict(self._in_flight)

    def tasks(self) -> Iterator[TaskSpec | None]:
        """Hand out migrations as OSTs become ready; ``None`` while everything is blocked."""
        while True:
            now = self.clock()
            if now >= self._next_refresh:
                self._refresh(now)
            if now >= self._next_scan:
                self._scan(now)
            pick = self.planner.next()
            if pick is not None:
                yield self._spec(*pick)
                continue
            if self.until_done and not self._in_flight:
                if self.planner.waiting() == 0:
                    return
                if self._stale:  # results arrived since the last refresh: look again first
                    self._next_refresh = now
                    continue
                log.warning("%d file(s) left: no ready source/target pair", self.planner.waiting())
                return
            yield None

    def on_result(self, result: Result) -> None:
        """A migration settled (any status): free its OSTs and count its outcome."""
        pair = self._in_flight.pop(result.key or "", None)
        if pair is None:
            return
        self.planner.release(*pair)
        self._stale = True
        outcome = (result.payload or {}).get("outcome") or str(result.status)
        self.outcomes[outcome] += 1
        if outcome in ("failed", "displaced") or not result.ok:
            log.warning(
                "migration %s: %s %s", result.key, outcome, result.error or (result.payload or {}).get("detail")
            )

    def close(self) -> None:
        """Log what happened."""
        if self.outcomes or self.planner.waiting():
            summary = ", ".join(f"{k} {v}" for k, v in sorted(self.outcomes.items())) or "nothing settled"
            log.info("migration: %s; %d file(s) still queued", summary, self.planner.waiting())

    # -- steps --------------------------------------------------------------------------

    def _spec(self, entry: MigrationEntry, target: int) -> TaskSpec:
        self._issued += 1
        key = f"{ost_label(entry.source)}->{ost_label(target)}#{self._issued}"
        self._in_flight[key] = (entry.source, target)
        task = LustreOstMigrateTask(
            file=entry.path,
            source=entry.source,
            target=target,
            fsname=self._fsname,
            block=self.block,
            direct_io=self.direct_io,
            skip_striped=self.skip_striped,
            tool_timeout=self.timeout,
        )
        return TaskSpec(task=task, key=key, timeout=self.timeout)

    def _refresh(self, now: float) -> None:
        self._next_refresh = now + self.refresh_interval
        try:
            osts = self.tools.df(self.path)
        except LustreError as exc:
            if self._osts is None:
                raise CycloneError(f"generator '{self.name}': {exc}") from None
            log.warning("keeping the old fill levels: %s", exc)
            return
        first = self._osts is None
        self._osts = {o.index for o in osts}
        self._fsname = next((o.fsname for o in osts if o.fsname), self._fsname)
        self.planner.update(osts)
        self._stale = False
        if first:
            unknown = set(self.planner.targets or ()) - self._osts
            if unknown:
                raise CycloneError(
                    f"generator '{self.name}': targets: no OST {format_indexes(unknown)} in file system "
                    f"'{self._fsname}' (its OSTs are {format_indexes(self._osts)})"
                )

    def _scan(self, now: float) -> None:
        self._next_scan = now + self.scan_interval
        directory = Path(self.input_dir)
        try:
            files = sorted(directory.glob("*.input"), key=lambda p: (p.stat().st_mtime, p.name))
        except OSError as exc:
            log.warning("cannot scan %s: %s", directory, exc)
            return
        if not directory.is_dir():
            raise CycloneError(f"generator '{self.name}': input_dir {directory} is not a directory")
        for file in files:
            try:
                entries = read_input(file, self.path, self._osts)
                os.replace(file, file.with_suffix(".done"))
            except OSError as exc:
                log.warning("cannot load %s: %s", file, exc)
                continue
            self.planner.add(entries)
            log.info("loaded %d file(s) to migrate from %s", len(entries), file)

    # -- Cyclone 2.x configuration ---------------------------------------------------------

    @classmethod
    def legacy_options(cls, sections: Mapping[str, Mapping[str, str]]) -> dict[str, Any]:
        """Translate a 2.x ``LustreOstMigrationTaskGenerator`` config file.

        ``[migration] input_dir``, ``ost_fill_level_threshold_source``/``_target`` ->
        ``source_threshold``/``target_threshold``, ``ost_targets`` -> ``targets``;
        ``[lustre] fs_path`` -> ``path``; ``[control.threshold] update_fill_level`` ->
        ``refresh_interval``, ``reload_files`` -> ``scan_interval``; from the XML task
        template: ``direct_io``, ``block``, ``skip`` -> ``skip_striped``.  2.x ran ``lfs``
        with sudo, so ``sudo`` is set (for the master's ``lfs df``; the controllers that migrate
        need ``sudo = true`` in their ``[controller.local.lustre]``).  ``local_mode`` has no equivalent and is refused.
        """
        control, timers = sections.get("control", {}), sections.get("control.threshold", {})
        migration, lustre, task = (sections.get(name, {}) for name in ("migration", "lustre", "task"))
        if legacy_bool(control.get("local_mode", "off"), "[control] local_mode"):
            raise ValueError("[control] local_mode: simulated OSTs are not supported; use the stand-in lfs instead")
        options: dict[str, Any] = {"sudo": True}
        options |= translate(
            migration,
            {
                "input_dir": "input_dir",
                "ost_fill_level_threshold_source": "source_threshold",
                "ost_fill_level_threshold_target": "target_threshold",
                "ost_targets": "targets",
            },
        )
        options |= translate(lustre, {"fs_path": "path"})
        options |= translate(timers, {"update_fill_level": "refresh_interval", "reload_files": "scan_interval"})
        if task.get("task_file", "").strip():
            properties = legacy_task_properties(task["task_file"], task.get("task_name", ""))
            for old, new in (("direct_io", "direct_io"), ("block", "block"), ("skip", "skip_striped")):
                if properties.get(old, "").strip():
                    options[new] = legacy_bool(properties[old], old)
        return options
