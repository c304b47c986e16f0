"""The ``lustre-ost-io`` generator: a round of I/O probes over the selected OSTs every interval.

Rounds
    The first round starts at once, the next ``interval`` seconds after the previous one
    started (a round that could not start on time is not made up later).  ``rounds`` = 0 runs
    forever (the daemon), 1 is a one-shot check.  The OSTs are discovered once per round, in the
    master, not in every task as Cyclone 2.x did with ``sudo lfs check osts``.

One probe per OST at a time
    An OST whose probe was handed out and has no result yet is not probed again.  The engine
    has no way to withdraw a task, so when a round starts while an OST's probe of an earlier
    round is still outstanding (queued in the master or running), that probe **is** the OST's
    probe for the new round too.  Tasks of an old round this generator has not handed out yet
    are dropped and replaced by the new round's.  The master pulls tasks lazily, so "not handed
    out" covers everything that is still waiting for a free worker.

Inactive OSTs
    A deactivated OST (or one whose statfs or ping failed) still gets a task, flagged
    ``active=False``: the worker reports it as a failed result (``OST000a is inactive: <why>``)
    without touching the file system, so every selected OST has a row in every round.

Drained and retired OSTs
    OSTs listed in ``drained`` (or flagged ``N`` by ``lfs df``) and ``retired`` were taken out
    of service on purpose: their tasks report that state with status ok and a metric value of
    their own, so no alarm fires for them every round.

Placement
    Where the client's ``lfs`` is Lustre 2.14 or later (``lustre_version``, by default asked
    from ``lfs --version`` once), probes create their file with ``lfs setstripe -o``, which
    fails with the reason when the OST cannot take it; older clients use ``-i`` and the
    placement check.
"""

from __future__ import annotations

import collections
import logging
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any, ClassVar

import attrs

from cyclone_core import ByteSize, CycloneError, Result, TaskGenerator, TaskSpec
from cyclone_lustre_ost.discovery import (
    MODES,
    SOURCES,
    admin_state,
    check_rangeset,
    discover,
    parse_rangeset,
    resolve_mode,
    select,
)
from cyclone_lustre_ost.legacy import legacy_bool, legacy_task_properties, translate
from cyclone_lustre_ost.lustre import LustreError, LustreTools, Ost, parse_version
from cyclone_lustre_ost.options import as_size, one_of, positive
from cyclone_lustre_ost.probe import LustreOstIoTask

__all__ = ("LustreOstIoGenerator",)

log = logging.getLogger("cyclone.lustre_ost")


#: The first Lustre release whose ``lfs setstripe -o`` is strict.
STRICT_PLACEMENT_SINCE = (2, 14)


def _non_empty(_instance: object, attribute: attrs.Attribute[str], value: str) -> None:
    if not value.strip():
        raise ValueError(f"{attribute.name} must name a directory")


def _version(_instance: object, attribute: attrs.Attribute[str], value: str) -> None:
    if value != "auto":
        try:
            parse_version(value)
        except ValueError:
            raise ValueError(
                f"{attribute.name} must be 'auto' or a Lustre release such as 2.15, got {value!r}"
            ) from None


@attrs.define(kw_only=True)
class LustreOstIoGenerator(TaskGenerator):
    """Probe every selected OST of the file system at ``path`` once per ``interval`` seconds.

    :param path: directory on the file system to measure; the probe files are created in it
        (each controller must have it under its ``[controller.local.lustre] roots``).
    :param lfs_bin: the ``lfs`` program the master runs for discovery; the probes run the
        controllers' own (``[controller.local.lustre]``).
    :param lctl_bin: the ``lctl`` program the master runs (``discovery = "lctl"``).
    :param sudo: run the master's Lustre tools with ``sudo -n``.
    :param osts: RangeSet of decimal OST indexes to probe (``"0-11,20"``); empty: all.
    :param discovery: where the OST list comes from: ``osts`` (``lfs osts``), ``df``
        (``lfs df -v``), ``lctl`` (``lov.*.target_obd``) or ``check`` (``lfs check osts``).
    :param interval: seconds between the starts of two rounds.
    :param rounds: how many rounds; 0 runs forever.
    :param timeout: seconds a probe may run before the engine kills it; also bounds each tool
        call.
    :param total_size: bytes written and read back per probe.
    :param block_size: bytes per write and read call.
    :param fsync: include ``fsync`` in the write time.
    :param mode: ``auto`` detects Lustre, ``lustre`` forces it, ``plain`` measures ``path`` as an
        ordinary directory (one probe per round, no OSTs).
    :param slow_threshold: seconds; slower writes or reads are flagged ``cyclone_lustre_ost_slow``.
    :param drained: RangeSet of OSTs drained on purpose (``max_create_count=0``): reported as
        ``drained``, not probed, no alarm.  OSTs ``lfs df`` flags ``N`` count as drained too.
    :param retired: RangeSet of OSTs deactivated for good: reported as ``retired``, no alarm.
    :param lustre_version: the clients' Lustre release (``2.12``, ``2.15``), or ``auto`` to ask
        ``lfs --version``; from 2.14 on the probes use the strict ``lfs setstripe -o``.
    """

    name: ClassVar[str] = "lustre-ost-io"
    deterministic: ClassVar[bool] = False
    legacy_class: ClassVar[str] = "LustreOstMonitoringTaskGenerator"

    path: str = attrs.field(validator=_non_empty)
    lfs_bin: str = "lfs"
    lctl_bin: str = "lctl"
    sudo: bool = False
    osts: str = attrs.field(default="", validator=check_rangeset)
    discovery: str = attrs.field(default="osts", validator=one_of(SOURCES))
    interval: float = attrs.field(default=60.0, validator=positive)
    rounds: int = attrs.field(default=0, validator=attrs.validators.ge(0))
    timeout: float = attrs.field(default=300.0, validator=positive)
    total_size: ByteSize = attrs.field(default=ByteSize(64 << 20), converter=as_size, validator=positive)
    block_size: ByteSize = attrs.field(default=ByteSize(1 << 20), converter=as_size, validator=positive)
    fsync: bool = True
    mode: str = attrs.field(default="auto", validator=one_of(MODES))
    slow_threshold: float | None = attrs.field(default=None, validator=positive)
    drained: str = attrs.field(default="", validator=check_rangeset)
    retired: str = attrs.field(default="", validator=check_rangeset)
    lustre_version: str = attrs.field(default="auto", validator=_version)

    #: The clock rounds are scheduled by; tests replace it.
    clock: Callable[[], float] = attrs.field(default=time.monotonic, init=False, repr=False)
    _resolved_mode: str = attrs.field(default="", init=False, repr=False)
    _fsname: str = attrs.field(default="", init=False, repr=False)
    _round: int = attrs.field(default=0, init=False, repr=False)
    _next_round_at: float = attrs.field(default=0.0, init=False, repr=False)
    _pending: collections.deque[Ost | None] = attrs.field(factory=collections.deque, init=False, repr=False)
    # key of an outstanding task -> the OST label it probes ("dir" in plain mode)
    _in_flight: dict[str, str] = attrs.field(factory=dict, init=False, repr=False)
    _busy: set[str] = attrs.field(factory=set, init=False, repr=False)
    _strict: bool | None = attrs.field(default=None, init=False, repr=False)

    @property
    def tools(self) -> LustreTools:
        """The Lustre tools as configured (discovery calls are bounded by ``timeout``)."""
        return LustreTools(lfs_bin=self.lfs_bin, lctl_bin=self.lctl_bin, sudo=self.sudo, timeout=self.timeout)

    @property
    def _drained(self) -> list[int]:
        return parse_rangeset(self.drained) or []

    @property
    def _retired(self) -> list[int]:
        return parse_rangeset(self.retired) or []

    @property
    def round(self) -> int:
        """The number of rounds started so far."""
        return self._round

    def in_flight(self) -> set[str]:
        """Labels (``OST000a``, or ``dir``) of the probes handed out and not yet settled."""
        return set(self._busy)

    def tasks(self) -> Iterator[TaskSpec | None]:
        """Hand out each round's probes; ``None`` while waiting for the next round."""
        self._resolved_mode = resolve_mode(self.mode, self.path, self.tools)
        self._next_round_at = self.clock()
        while True:
            more_rounds = not self.rounds or self._round < self.rounds
            # The clock is checked before every hand-out, so probes still pending when a round
            # is due are replaced rather than handed out late.
            if more_rounds and self.clock() >= self._next_round_at:
                self._begin_round(self.clock())
            if self._pending:
                spec = self._spec(self._pending.popleft())
                if spec is not None:
                    yield spec
            elif not more_rounds:
                return
            else:
                yield None

    def on_result(self, result: Result) -> None:
        """A probe settled: its OST may be probed again."""
        label = self._in_flight.pop(result.key or "", None)
        if label is not None:
            self._busy.discard(label)

    # -- rounds -----------------------------------------------------------------------

    def _begin_round(self, now: float) -> None:
        self._round += 1
        self._next_round_at += self.interval
        if self._next_round_at <= now:  # fell behind (slow discovery, paused master): no catch-up burst
            self._next_round_at = now + self.interval
        if self._pending:
            log.info("round %d: dropping %d probe(s) of the previous round", self._round, len(self._pending))
        targets: list[Ost | None] = [None] if self._resolved_mode == "plain" else list(self._discover())
        self._pending = collections.deque(targets)

    def _discover(self) -> list[Ost]:
        try:
            fs = discover(self.tools, self.path, self.discovery)
            self._fsname = fs.fsname
            if self._strict is None:
                self._strict = self._client_version() >= STRICT_PLACEMENT_SINCE
            return select(fs, self.osts)
        except (LustreError, CycloneError) as exc:
            if self._round == 1:  # nothing ever worked: a configuration problem, say so and stop
                raise CycloneError(f"generator '{self.name}': {exc}") from None
            log.warning("round %d skipped: OST discovery failed: %s", self._round, exc)
            return []

    def _client_version(self) -> tuple[int, int]:
        if self.lustre_version != "auto":
            return parse_version(self.lustre_version)
        try:
            return self.tools.version()
        except LustreError as exc:  # an lfs older than --version: certainly older than 2.14
            log.warning("Lustre release unknown (%s); probes use 'lfs setstripe -i'", exc)
            return (0, 0)

    def _spec(self, ost: Ost | None) -> TaskSpec | None:
        label = ost.label if ost is not None else "dir"
        if label in self._busy:
            log.debug("round %d: %s still has a probe outstanding; it counts for this round", self._round, label)
            return None
        key = f"{label}/r{self._round}"
        self._in_flight[key] = label
        self._busy.add(label)
        task = LustreOstIoTask(
            path=self.path,
            ost=ost.index if ost is not None else None,
            fsname=self._fsname,
            active=ost.active if ost is not None else True,
            inactive_reason=ost.error if ost is not None else "",
            admin_state=admin_state(ost, self._drained, self._retired) if ost is not None else "",
            strict_placement=bool(self._strict),
            total_size=self.total_size,
            block_size=self.block_size,
            fsync=self.fsync,
            slow_threshold=self.slow_threshold,
            tool_timeout=self.timeout,
        )
        return TaskSpec(task=task, key=key, timeout=self.timeout)

    # -- Cyclone 2.x configuration ---------------------------------------------------------

    @classmethod
    def legacy_options(cls, sections: Mapping[str, Mapping[str, str]]) -> dict[str, Any]:
        """Translate a 2.x ``LustreOstMonitoringTaskGenerator`` config file.

        ``[control] measure_interval`` -> ``interval``, ``local_mode = on`` -> ``mode = plain``;
        ``[lustre] lfs_bin``, ``ost_select_list`` -> ``osts``; from the XML task template named
        by ``[task] task_file``/``task_name``: ``target_dir`` -> ``path``,
        ``block_size_bytes``, ``total_size_bytes``, ``write_file_sync`` -> ``fsync`` and, for
        the alert task, ``mail_threshold`` -> ``slow_threshold`` (the mail itself is left to
        a sink or Alertmanager).  A 2.x monitor always measured Lustre, so ``mode`` is
        ``lustre``: a broken ``lfs`` is reported instead of falling back to a plain directory.
        2.x ran ``sudo lfs check osts`` in every task; the default discovery (``lfs osts``)
        needs neither root nor sudo.
        """
        control, lustre, task = (sections.get(name, {}) for name in ("control", "lustre", "task"))
        options: dict[str, Any] = {"mode": "lustre"}
        options |= translate(control, {"measure_interval": "interval"})
        options |= translate(lustre, {"lfs_bin": "lfs_bin", "ost_select_list": "osts"})
        if legacy_bool(control.get("local_mode", "off"), "[control] local_mode"):
            options["mode"] = "plain"
        if task.get("task_file", "").strip():
            properties = legacy_task_properties(task["task_file"], task.get("task_name", ""))
            options |= translate(
                properties,
                {
                    "target_dir": "path",
                    "block_size_bytes": "block_size",
                    "total_size_bytes": "total_size",
                    "lfs_bin": "lfs_bin",
                    "mail_threshold": "slow_threshold",
                },
            )
            if properties.get("write_file_sync", "").strip():
                options["fsync"] = legacy_bool(properties["write_file_sync"], "write_file_sync")
        return options
