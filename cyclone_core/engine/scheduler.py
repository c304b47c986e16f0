"""The master's scheduling and lease bookkeeping, without any I/O.

Events go in as method calls (a controller registered, granted credit, sent results, a
heartbeat, a handback, a goodbye; time passed); what the master must do comes out of
:meth:`Scheduler.take` as :class:`Actions` (dispatch these tasks to that controller, journal
and deliver these terminal results, record these re-queued attempts, report these lost
controllers).  The master's I/O loop around it is thin, and every rule here is unit-tested
without sockets.

Rules:

- Pending tasks wait in FIFO order (one queue per task type, merged by ticket); a re-queued
  task goes to the front.  The window (pending + leased) never exceeds ``window``.
- First come, first served: controllers with free credit are filled in the order they granted
  it, in batches, only with task types they announced.
- Every dispatched task is leased to one controller.  A lease ends with the task's first
  terminal result, with a handback (not counted), when the controller leaves or is declared
  lost, when its heartbeat omits the task twice in a row, or at the task's timeout plus a
  grace (counted as lost).
- Each ended attempt is counted once: ``failed`` against ``max_failed_retries`` (then the
  failure is final), ``timeout``/``crashed`` against ``max_crash_retries`` and lost leases
  against ``max_lost_retries`` (then the task is quarantined with its attempt history).
"""

from __future__ import annotations

import bisect
import enum
import heapq
import math
from collections import deque
from collections.abc import Collection, Iterable, Sequence
from typing import Any

import attrs

from cyclone_core.engine.protocol import MAX_ERROR
from cyclone_core.engine.retry import ENDING_OF_STATUS, RETRY_POLICY, Ending, attempt_counters
from cyclone_core.model import Attempt, Result, Status
from cyclone_core.settings import MasterSettings

__all__ = (
    "Actions",
    "ControllerState",
    "Histogram",
    "LostController",
    "Scheduler",
    "Stats",
    "TaskRecord",
    "TaskState",
)


class TaskState(enum.Enum):
    """Where a task is in its life."""

    PENDING = "pending"
    LEASED = "leased"
    DONE = "done"


class TaskRecord:
    """One task in the window, with its counters and (while leased) its lease."""

    __slots__ = (
        "args",
        "attempt",
        "controller",
        "counted",
        "crashed",
        "deadline",
        "dispatched",
        "dispatched_at",
        "failed",
        "history",
        "id",
        "key",
        "lost",
        "missing_since",
        "seq",
        "state",
        "ticket",
        "timeout",
        "type",
    )

    def __init__(
        self,
        seq: int,
        id: str,
        type: str,
        args: dict[str, Any],
        *,
        key: str | None = None,
        timeout: float | None = None,
        failed: int = 0,
        crashed: int = 0,
        lost: int = 0,
        history: list[Attempt] | None = None,
    ) -> None:
        self.seq = seq
        self.id = id
        self.type = type
        self.args = args
        self.key = key
        self.timeout = timeout
        #: Attempts counted against each retry budget.
        self.failed = failed
        self.crashed = crashed
        self.lost = lost
        #: Every counted attempt that did not end the task.
        self.history: list[Attempt] = history if history is not None else []
        #: Attempt number of the latest dispatch; the next one is ``dispatched + 1``.
        self.dispatched = len(self.history)
        #: Highest attempt number whose ending has been counted (later copies are duplicates).
        self.counted = len(self.history)
        self.state = TaskState.PENDING
        #: Queue order while queued (negative: re-queued to the front); 0: not queued.
        self.ticket = 0
        # The lease, while state is LEASED.
        self.controller: ControllerState | None = None
        self.attempt = 0
        self.dispatched_at = 0.0
        self.deadline: float | None = None
        self.missing_since: float | None = None

    def __repr__(self) -> str:
        return f"TaskRecord({self.id!r}, {self.type!r}, {self.state.value})"


class ControllerState:
    """What the scheduler knows about one registered controller."""

    __slots__ = ("credit", "draining", "host", "id", "joined_at", "last_seen", "leases", "pid", "task_types", "workers")

    def __init__(
        self, id: str, *, host: str, pid: int, workers: int, credit: int, task_types: frozenset[str], now: float
    ) -> None:
        self.id = id
        self.host = host
        self.pid = pid
        self.workers = max(workers, 1)
        self.credit = credit
        self.task_types = task_types
        self.leases: dict[str, TaskRecord] = {}
        self.draining = False
        self.joined_at = now
        self.last_seen = now


@attrs.frozen
class LostController:
    """A controller that left (``reason`` is ``goodbye``) or was declared lost."""

    id: str
    reason: str
    requeued: int
    host: str = ""


@attrs.define
class Actions:
    """What the master must do after a batch of events."""

    #: controller id -> tasks now leased to it (each record's ``attempt`` is set).
    dispatch: dict[str, list[TaskRecord]] = attrs.field(factory=dict)
    #: Terminal results, with the record they end (journal, outbox, generator, plugins).
    settled: list[tuple[TaskRecord, Result]] = attrs.field(factory=list)
    #: Tasks whose counters or history changed and that wait in the queue again.
    requeued: list[TaskRecord] = attrs.field(factory=list)
    #: Controllers that left or were declared lost.
    lost: list[LostController] = attrs.field(factory=list)

    def __bool__(self) -> bool:
        return bool(self.dispatch or self.settled or self.requeued or self.lost)


class Histogram:
    """Counts of observations in fixed buckets; cheap to update, bounded in memory."""

    __slots__ = ("bounds", "count", "counts", "sum")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = list(bounds)
        self.counts = [0] * (len(self.bounds) + 1)  # the last bucket is +Inf
        self.count = 0
        self.sum = 0.0

    @classmethod
    def log_spaced(cls, low: float = 1e-5, high: float = 86400.0, ratio: float = 1.05) -> Histogram:
        """Buckets growing by ``ratio``: quantiles accurate to about ``(ratio - 1) / 2``."""
        steps = math.ceil(math.log(high / low) / math.log(ratio))
        return cls([low * ratio**i for i in range(steps + 1)])

    def observe(self, values: list[float]) -> None:
        """Count each of ``values`` (a batch at a time: one call per message, not per task)."""
        counts, bounds, bucket = self.counts, self.bounds, bisect.bisect_left
        for value in values:
            counts[bucket(bounds, value)] += 1
        self.count += len(values)
        self.sum += sum(values)

    def quantile(self, q: float) -> float | None:
        """Approximate ``q``-quantile (0..1); ``None`` without observations."""
        if not self.count:
            return None
        rank = q * self.count
        seen = 0
        for index, count in enumerate(self.counts):
            if count and seen + count >= rank:
                low = self.bounds[index - 1] if index else 0.0
                high = self.bounds[index] if index < len(self.bounds) else low
                return low + (high - low) * ((rank - seen) / count)
            seen += count
        return self.bounds[-1]

    def cumulative(self) -> list[tuple[float, int]]:
        """(upper bound, observations at or below it) pairs, ending with +Inf."""
        pairs, total = [], 0
        for bound, count in zip([*self.bounds, math.inf], self.counts, strict=True):
            total += count
            pairs.append((bound, total))
        return pairs


#: Bucket bounds of the task duration histogram (seconds), Prometheus style.
DURATION_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900)


@attrs.define
class Stats:
    """Counters of a run: terminal tasks, counted attempts, and two histograms."""

    #: Tasks taken from the generator.
    submitted: int = 0
    #: Terminal tasks by outcome.
    succeeded: int = 0
    failed: int = 0
    quarantined: int = 0
    #: Attempts that ended each way (a task may have several).
    timed_out: int = 0
    crashed: int = 0
    lost: int = 0
    retried: int = 0
    #: Results that came too late, twice, or for tasks this master does not hold.
    duplicates: int = 0
    #: Results refused: not from the controller holding the task's lease.
    refused: int = 0
    #: Dispatch-to-result round trip of attempts, seconds.
    latency: Histogram = attrs.field(factory=Histogram.log_spaced)
    #: Execution time reported by the controllers, seconds.
    duration: Histogram = attrs.field(factory=lambda: Histogram(DURATION_BUCKETS))

    @property
    def settled(self) -> int:
        """Tasks that reached a terminal result."""
        return self.succeeded + self.failed + self.quarantined

    def counts(self) -> dict[str, int]:
        """Every counter by name (what status, summary and metrics show)."""
        return {name: getattr(self, name) for name in _COUNTERS}


_COUNTERS = tuple(f.name for f in attrs.fields(Stats) if f.type in (int, "int"))
assert set(attempt_counters()) <= set(_COUNTERS), "every counter of the retry policy is a Stats field"


class Scheduler:
    """Task queue, leases, credits and retry budgets of one master.

    :param settings: window, retry budgets, heartbeat interval and controller timeout.
    :param known_types: task types the master can build; a controller must share one, and a
        task of another type fails at once.  ``None`` accepts any.
    :param wall_offset: added to the monotonic ``now`` of the events to get epoch seconds
        (for attempt histories).
    """

    def __init__(
        self, settings: MasterSettings, *, known_types: Collection[str] | None = None, wall_offset: float = 0.0
    ) -> None:
        self.settings = settings
        self.known_types = frozenset(known_types) if known_types is not None else None
        self.wall_offset = wall_offset
        #: Live tasks (pending or leased) by id: the window.
        self.tasks: dict[str, TaskRecord] = {}
        #: Registered controllers by id.
        self.controllers: dict[str, ControllerState] = {}
        self.stats = Stats()
        #: False while draining: no new dispatches.
        self.dispatching = True
        self._queues: dict[str, deque[TaskRecord]] = {}
        # The ticket of each non-empty queue's head, and a heap of (ticket, type) entries of which
        # those matching ``_heads`` are current (the others are skipped when they surface).
        self._heads: dict[str, int] = {}
        self._head_heap: list[tuple[int, str]] = []
        self._queued = 0
        self._back_ticket = 0
        self._front_ticket = 0
        # Controllers with free credit, in the order they granted it (first come, first served).
        self._ready: dict[str, None] = {}
        self._actions = Actions()
        self._next_sweep = 0.0
        self._grace = settings.controller_timeout

    # -- queries ---------------------------------------------------------------------------

    @property
    def room(self) -> int:
        """How many more tasks the window takes."""
        return self.settings.window - len(self.tasks)

    @property
    def queued(self) -> int:
        """Pending tasks waiting for a controller."""
        return self._queued

    @property
    def in_flight(self) -> int:
        """Leased tasks."""
        return len(self.tasks) - self._queued

    def knows(self, controller_id: str) -> bool:
        """Whether ``controller_id`` is registered."""
        return controller_id in self.controllers

    # -- events ----------------------------------------------------------------------------

    def submit(self, records: Iterable[TaskRecord]) -> None:
        """New tasks from the generator (or back from the journal), in order."""
        for record in records:
            self.stats.submitted += 1
            if self.known_types is not None and record.type not in self.known_types:
                error = f"task type '{record.type}' is not registered on the master"
                result = Result(record.id, record.type, Status.FAILED, key=record.key, error=error)
                self.tasks[record.id] = record
                self._settle(record, result)
                continue
            self.tasks[record.id] = record
            self._enqueue(record, front=False)

    def in_use_for(self, controller_id: str, host: str, pid: int, now: float) -> float:
        """Seconds until another process may take ``controller_id`` over from its holder (a
        process other than ``pid`` on ``host``), once that one has been silent for the
        controller timeout; 0 when the id is free or held by that very process."""
        old = self.controllers.get(controller_id)
        if old is None or (old.host, old.pid) == (host, pid):
            return 0.0
        return max(self.settings.controller_timeout - (now - old.last_seen), 0.0)

    def register(
        self,
        controller_id: str,
        *,
        host: str,
        pid: int,
        workers: int,
        credit: int,
        task_types: Iterable[str],
        now: float,
    ) -> str | None:
        """A Hello; returns why it is refused, or ``None`` when the controller is registered.

        A known id from the same host and pid is a reconnect: its leases stay (heartbeats
        reconcile them) and its credit is what it announces now.  A known id from another
        process is refused while the first one is alive, and replaces it once it is silent.
        """
        types = frozenset(task_types)
        credit = self._capped(credit, 0)
        if self.known_types is not None:
            types &= self.known_types
        if not types:
            return "this controller runs none of the task types the master knows"
        old = self.controllers.get(controller_id)
        if old is not None and (old.host, old.pid) != (host, pid):
            if self.in_use_for(controller_id, host, pid, now) > 0:
                return f"controller id '{controller_id}' is in use by pid {old.pid} on {old.host}"
            self._remove(old, "replaced by a new process with the same id")
            old = None
        if old is None:
            self.controllers[controller_id] = ControllerState(
                controller_id, host=host, pid=pid, workers=workers, credit=credit, task_types=types, now=now
            )
        else:
            old.workers, old.task_types, old.credit = max(workers, 1), types, self._capped(credit, len(old.leases))
            old.draining, old.last_seen = False, now
        self._ready.pop(controller_id, None)
        if credit > 0:
            self._ready[controller_id] = None
        return None

    def grant(self, controller_id: str, credit: int, now: float) -> None:
        """The controller has ``credit`` more free slots."""
        ctl = self.controllers.get(controller_id)
        if ctl is None:
            return
        ctl.last_seen = now
        if credit > 0:
            ctl.credit = self._capped(ctl.credit + credit, len(ctl.leases))
            if not ctl.draining:
                self._ready.setdefault(controller_id, None)

    def results(self, controller_id: str, results: Iterable[Result], now: float) -> None:
        """Terminal results of attempts from a registered controller.

        A result counts only from the controller holding the task's lease; or, for a task that
        this master has not leased yet (it was leased before a restart), from any registered
        controller.  Others (a lease held by another controller, one that ended, a stranger's
        guess at a task id) are counted as ``refused`` and change nothing.
        """
        ctl = self.controllers.get(controller_id)
        if ctl is None:
            return
        ctl.last_seen = now
        tasks = self.tasks
        stats = self.stats
        latencies: list[float] = []
        durations: list[float] = []
        leased = TaskState.LEASED
        for reported in results:
            record = tasks.get(reported.task_id)
            if record is None:
                stats.duplicates += 1
                continue
            if record.controller is not ctl and (record.state is leased or record.attempt):
                stats.refused += 1
                continue
            result = reported
            if result.task_type != record.type or result.key != record.key or result.controller != ctl.id:
                # The master says what the task is and who ran it; a peer reports only how it went.
                result = attrs.evolve(result, task_type=record.type, key=record.key, controller=ctl.id)
            current = record.state is TaskState.LEASED and record.attempt == result.attempt
            status = result.status
            final = status is Status.OK or status is Status.QUARANTINED
            if not (final or current) and result.attempt <= record.counted:
                stats.duplicates += 1  # an attempt already counted, re-sent
                continue
            if current:
                latencies.append(now - record.dispatched_at)
            durations.append(result.duration)
            if final:
                self._settle(record, result)
            else:
                self._attempt_ended(
                    record,
                    ENDING_OF_STATUS[status],
                    result.error,
                    now,
                    controller=ctl.id,
                    attempt=result.attempt,
                    result=result,
                    current=current,
                )
        stats.latency.observe(latencies)
        stats.duration.observe(durations)

    def heartbeat(self, controller_id: str, running: Collection[str], draining: bool, now: float) -> None:
        """The controller is alive and holds ``running``; leases it no longer holds end.

        A task may be missing from one heartbeat because the heartbeat crossed its dispatch;
        it is taken back when it is still missing a heartbeat interval later.
        """
        ctl = self.controllers.get(controller_id)
        if ctl is None:
            return
        ctl.last_seen = now
        if draining and not ctl.draining:
            ctl.draining = True
            self._ready.pop(controller_id, None)
        held = running if isinstance(running, set | frozenset) else set(running)
        gone = []
        for task_id, record in ctl.leases.items():
            if task_id in held:
                record.missing_since = None
            elif record.missing_since is None:
                record.missing_since = now
            elif now - record.missing_since >= self.settings.heartbeat_interval:
                gone.append(record)
        for record in gone:
            self._lease_lost(record, f"controller {ctl.id} no longer holds it", now)

    def connection_replaced(self, controller_id: str) -> None:
        """The controller's process speaks on a new connection: what was dispatched on the old
        one and is missing from the next heartbeat never reached it (no heartbeat on the new
        connection can cross those dispatches), so it is taken back then, not an interval later."""
        ctl = self.controllers.get(controller_id)
        if ctl is not None:
            for record in ctl.leases.values():
                record.missing_since = -math.inf

    def handback(self, controller_id: str, task_ids: Iterable[str], now: float) -> None:
        """A draining controller returns tasks it did not start; they are not counted as attempts."""
        ctl = self.controllers.get(controller_id)
        if ctl is None:
            return
        ctl.last_seen = now
        for task_id in task_ids:
            record = ctl.leases.get(task_id)
            if record is None:
                continue
            if record.dispatched == record.attempt:
                record.dispatched -= 1  # it never ran: the next dispatch reuses the number
            self._attempt_ended(record, Ending.HANDED_BACK, None, now, controller=ctl.id, attempt=record.attempt)

    def goodbye(self, controller_id: str, now: float) -> None:
        """The controller leaves cleanly; anything it still holds was abandoned (re-queued, at
        no cost to the tasks' budgets: handing back first was the controller's job)."""
        ctl = self.controllers.get(controller_id)
        if ctl is not None:
            self._remove(ctl, "goodbye", now, Ending.ABANDONED)

    def revoke(self, controller_id: str, reason: str, now: float) -> None:
        """The controller may no longer take part (its key was revoked): its leases end, at no
        cost to the tasks' budgets."""
        ctl = self.controllers.get(controller_id)
        if ctl is not None:
            self._remove(ctl, reason, now, Ending.REVOKED)

    def tick(self, now: float) -> None:
        """Time passed: declare silent controllers lost and end leases past their deadline."""
        if now < self._next_sweep:
            return
        self._next_sweep = now + min(1.0, self.settings.heartbeat_interval / 2)
        timeout = self.settings.controller_timeout
        for ctl in list(self.controllers.values()):
            silent = now - ctl.last_seen
            if silent > timeout:
                self._remove(ctl, f"silent for {silent:.0f} s", now)
                continue
            expired = [r for r in ctl.leases.values() if r.deadline is not None and now > r.deadline]
            for record in expired:
                error = f"no result from controller {ctl.id} {record.timeout:g} s after its timeout"
                self._lease_lost(record, error, now)

    def stop_dispatching(self) -> None:
        """Draining: hand out nothing more."""
        self.dispatching = False

    def take(self, now: float) -> Actions:
        """Fill free credit with pending tasks and return everything the master must do."""
        if self.dispatching and self._queued and self._ready:
            self._fill(now)
        actions, self._actions = self._actions, Actions()
        return actions

    # -- internals -------------------------------------------------------------------------

    def _capped(self, credit: int, held: int) -> int:
        """``credit`` within ``max_credit`` tasks held by one controller (credit hoarding)."""
        return max(0, min(credit, self.settings.max_credit - held))

    def _enqueue(self, record: TaskRecord, *, front: bool) -> None:
        record.state = TaskState.PENDING
        queue = self._queues.get(record.type)
        if queue is None:
            queue = self._queues[record.type] = deque()
        if front:
            self._front_ticket -= 1
            record.ticket = self._front_ticket
            queue.appendleft(record)
        else:
            self._back_ticket += 1
            record.ticket = self._back_ticket
            queue.append(record)
        self._queued += 1
        if front or len(queue) == 1:
            self._track_head(record.type, queue)

    def _track_head(self, type_: str, queue: deque[TaskRecord]) -> None:
        """Put the ticket of ``queue``'s first pending task on the heap of queue heads."""
        pending = TaskState.PENDING
        while queue and queue[0].state is not pending:
            queue.popleft()  # tasks that settled while queued
        if not queue:
            self._heads.pop(type_, None)
            return
        ticket = queue[0].ticket
        if self._heads.get(type_) != ticket:
            self._heads[type_] = ticket
            heapq.heappush(self._head_heap, (ticket, type_))

    def _fill(self, now: float) -> None:
        dispatch = self._actions.dispatch
        for controller_id in list(self._ready):
            ctl = self.controllers[controller_id]
            batch = self._pop(ctl.task_types, ctl.credit)
            if batch:
                self._lease(ctl, batch, now)
                dispatch.setdefault(controller_id, []).extend(batch)
            if ctl.credit <= 0:
                del self._ready[controller_id]
            if not self._queued:
                break

    def _pop(self, types: frozenset[str], count: int) -> list[TaskRecord]:
        """Up to ``count`` pending tasks of ``types``, oldest ticket first.

        The queue heads sit on a heap by ticket, so a batch costs O(log task types) per switch
        between queues, not a scan of every queue per task; heads of types this controller
        does not run are set aside for the batch and put back after it.
        """
        heap, heads, queues = self._head_heap, self._heads, self._queues
        pending = TaskState.PENDING
        batch: list[TaskRecord] = []
        aside: list[tuple[int, str]] = []
        while len(batch) < count and heap:
            entry = heapq.heappop(heap)
            ticket, type_ = entry
            if heads.get(type_) != ticket:
                continue  # stale: that queue's head changed since
            if type_ not in types:
                aside.append(entry)
                continue
            del heads[type_]
            queue = queues[type_]
            limit = heap[0][0] if heap else math.inf  # another queue's head comes first from there
            while queue and len(batch) < count:
                record = queue[0]
                if record.state is not pending:
                    queue.popleft()
                elif record.ticket > limit:
                    break
                else:
                    batch.append(queue.popleft())
            self._track_head(type_, queue)
        for entry in aside:
            heapq.heappush(heap, entry)
        self._queued -= len(batch)
        return batch

    def _lease(self, ctl: ControllerState, batch: list[TaskRecord], now: float) -> None:
        leases = ctl.leases
        workers = ctl.workers
        grace = self._grace
        leased = TaskState.LEASED
        for record in batch:
            record.state = leased
            record.controller = ctl
            record.dispatched += 1
            record.attempt = record.dispatched
            record.dispatched_at = now
            record.missing_since = None
            leases[record.id] = record
            timeout = record.timeout
            if timeout:
                # Tasks ahead of it in the controller's own queue may use their timeouts first.
                record.deadline = now + timeout * -(-len(leases) // workers) + grace
            else:
                record.deadline = None
        ctl.credit -= len(batch)

    def _end_lease(self, record: TaskRecord) -> None:
        ctl = record.controller
        if ctl is not None:
            ctl.leases.pop(record.id, None)
        record.controller = None
        record.deadline = None

    def _settle(self, record: TaskRecord, result: Result) -> None:
        if record.state is TaskState.LEASED:
            self._end_lease(record)
        elif record.ticket:
            self._queued -= 1  # its queue entry stays behind and is skipped when reached
        record.state = TaskState.DONE
        del self.tasks[record.id]
        if record.history and not result.history:
            result = attrs.evolve(result, history=list(record.history))
        status = result.status
        if status is Status.OK:
            self.stats.succeeded += 1
        elif status is Status.QUARANTINED:
            self.stats.quarantined += 1
        else:
            self.stats.failed += 1
        self._actions.settled.append((record, result))

    def _attempt_ended(
        self,
        record: TaskRecord,
        ending: Ending,
        error: str | None,
        now: float,
        *,
        controller: str | None,
        attempt: int,
        result: Result | None = None,
        current: bool = True,
    ) -> None:
        """Count one attempt that ended without settling its task, by :data:`RETRY_POLICY`, and
        decide: retry, or the verdict of a spent budget.  ``current`` says the attempt is the
        one the task is leased for (its lease ends); otherwise a later attempt carries on."""
        rule = RETRY_POLICY[ending]
        stats = self.stats
        if rule.counter is not None:
            setattr(stats, rule.counter, getattr(stats, rule.counter) + 1)
        error = f"{rule.prefix}{error}" if rule.prefix else error
        ran = rule.recorded_as is not None
        if ran:
            record.counted = max(record.counted, attempt)
        budget = rule.budget
        spent = 0
        if budget is not None:
            spent = getattr(record, budget.counter) + 1
            setattr(record, budget.counter, spent)
            if spent > getattr(self.settings, budget.setting) and rule.when_spent is Status.FAILED and result:
                self._settle(record, result)  # the failure beyond its budget is the task's result
                return
        if rule.recorded_as is not None:
            record.history.append(Attempt(attempt, rule.recorded_as, error, controller, now + self.wall_offset))
        if budget is not None and spent > getattr(self.settings, budget.setting):
            self._quarantine(
                record,
                f"{budget.spent} {spent} times",
                error=error,
                controller=controller,
                attempt=attempt,
                result=result,
            )
            return
        if ran:
            stats.retried += 1
            self._actions.requeued.append(record)
        if current and record.state is TaskState.LEASED:
            self._end_lease(record)
            self._enqueue(record, front=True)

    def _quarantine(
        self,
        record: TaskRecord,
        why: str,
        *,
        error: str | None,
        controller: str | None,
        attempt: int,
        result: Result | None,
    ) -> None:
        quarantined = Result(
            record.id,
            record.type,
            Status.QUARANTINED,
            key=record.key,
            attempt=attempt,
            started_at=result.started_at if result is not None else 0.0,
            duration=result.duration if result is not None else 0.0,
            # Cut to what a result may carry: the journal and the sinks take it back as such.
            error=f"quarantined after {len(record.history)} attempts ({why}); last: {error}"[:MAX_ERROR],
            controller=controller,
            history=list(record.history),
        )
        self._settle(record, quarantined)

    def _lease_lost(self, record: TaskRecord, error: str, now: float, ending: Ending = Ending.LOST) -> None:
        ctl = record.controller
        self._attempt_ended(record, ending, error, now, controller=ctl.id if ctl else None, attempt=record.attempt)

    def _remove(
        self, ctl: ControllerState, reason: str, now: float | None = None, ending: Ending = Ending.LOST
    ) -> None:
        del self.controllers[ctl.id]
        self._ready.pop(ctl.id, None)
        leases = list(ctl.leases.values())
        when = ctl.last_seen if now is None else now
        for record in leases:
            self._lease_lost(record, f"controller {ctl.id} {reason}", when, ending)
        self._actions.lost.append(LostController(ctl.id, reason, len(leases), ctl.host))

    def snapshot(self) -> dict[str, Any]:
        """Counters and controllers as plain data (the master adds sinks and rates)."""
        stats = self.stats
        return {
            "controllers": [
                {
                    "id": ctl.id,
                    "host": ctl.host,
                    "pid": ctl.pid,
                    "workers": ctl.workers,
                    "in_flight": len(ctl.leases),
                    "credit": ctl.credit,
                    "draining": ctl.draining,
                    "last_seen": ctl.last_seen + self.wall_offset,
                    "joined_at": ctl.joined_at + self.wall_offset,
                }
                for ctl in self.controllers.values()
            ],
            "queued": self._queued,
            "in_flight": self.in_flight,
            **stats.counts(),
        }
