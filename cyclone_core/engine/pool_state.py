"""Bookkeeping of a controller's worker pool: which task waits, which worker has which, in order.

This module is sans-I/O: no processes, sockets or clocks.
:class:`~cyclone_core.engine.workers.WorkerPool` tells a :class:`PoolState` what happened (tasks
arrived, a worker reported results or returned tasks, a worker process is gone) and carries out
what it decides (which tasks go to which worker).

Each worker runs the tasks assigned to it strictly in order and announces in shared memory the
``seq`` (assignment number) of each task as it starts it.  So for a worker's queue and the
``seq`` it announced last: queued jobs before that ``seq`` have ended (their results are on the
way), the job with that ``seq`` is running, and the ones after it have not started.

How many jobs a worker gets is driven by how long tasks take.  The pool keeps a moving average
of the duration of each task type.  A job is queued at a busy worker only while the work
expected ahead of it there stays within :attr:`PoolState.budget` seconds: tiny tasks travel in
batches of up to ``depth``, a task of a millisecond or two has the next one waiting at its worker
(no idle gap while the controller hands it over), and nothing is queued behind a slow task or
one of a type not seen yet, so no task waits behind one expected to be slow while another
worker idles.  A task far slower
than its type's average (a probe hanging on a dead server) still holds up the few queued behind
it until it ends, or until its timeout kills it and they are given to other workers.
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from collections.abc import Iterable

import attrs

from cyclone_core.engine.protocol import TaskEnvelope

__all__ = ("Job", "PoolState", "WorkerBook")

#: Weight of the newest duration in the moving averages.
_SMOOTHING = 0.1


@attrs.define(eq=False)
class Job:
    """A task the controller holds, waiting for a worker or assigned to one."""

    envelope: TaskEnvelope
    #: Assignment number, unique within the pool; 0 while the job waits for a worker.
    seq: int = 0
    #: Expected duration in seconds when it was assigned (infinite: not known).
    cost: float = 0.0


@attrs.define(eq=False)
class WorkerBook:
    """What the pool knows about one worker process."""

    name: str
    #: Assigned jobs in the order the worker runs them.
    queue: deque[Job] = attrs.field(factory=deque)


class PoolState:
    """The jobs a pool holds and their assignment to workers.

    :param depth: jobs a worker is given at most.
    :param budget: seconds of expected work a job may wait behind at a busy worker.
    """

    def __init__(self, depth: int, budget: float) -> None:
        if depth < 1:
            raise ValueError(f"depth must be at least 1, got {depth}")
        self.depth = depth
        self.budget = budget
        #: Every job held, by task id.
        self.jobs: dict[str, Job] = {}
        #: Jobs not assigned to a worker yet, oldest first.
        self.waiting: deque[Job] = deque()
        self.workers: list[WorkerBook] = []
        #: Set by :meth:`drain`: no job is assigned any more.
        self.draining = False
        #: Moving average of task durations per task type, seconds.
        self.durations: dict[str, float] = {}
        #: Moving average of all task durations, seconds; ``None`` before the first result.
        self.mean_duration: float | None = None
        self._seq = 0

    def add_worker(self, name: str) -> WorkerBook:
        """Start keeping books for a new worker process."""
        book = WorkerBook(name)
        self.workers.append(book)
        return book

    def add(self, envelopes: Iterable[TaskEnvelope]) -> list[TaskEnvelope]:
        """Hold new tasks until a worker is free; returns those already held, which are ignored
        (a task is never run twice at once on one controller)."""
        duplicates = []
        jobs, waiting = self.jobs, self.waiting
        for envelope in envelopes:
            if envelope.id in jobs:
                duplicates.append(envelope)
                continue
            job = Job(envelope)
            jobs[envelope.id] = job
            waiting.append(job)
        return duplicates

    def assign(self) -> list[tuple[WorkerBook, list[Job]]]:
        """Give waiting jobs, oldest first, each to the worker with the least expected work.

        Returns each worker's new jobs in the order it must run them; nothing while draining.
        When that worker has no room for the oldest job, no other has (they all expect at least
        as much work), and the job waits rather than being overtaken.
        """
        if self.draining or not self.waiting:
            return []
        depth, budget, durations, waiting = self.depth, self.budget, self.durations, self.waiting
        # (expected work, jobs queued, index) of every worker with room for a job.
        heap = [
            (sum(job.cost for job in book.queue), len(book.queue), index)
            for index, book in enumerate(self.workers)
            if len(book.queue) < depth
        ]
        heapq.heapify(heap)
        batches: dict[int, list[Job]] = {}
        while waiting and heap:
            load, queued, index = heap[0]
            job = waiting[0]
            if queued and load > budget:
                break
            cost = durations.get(job.envelope.type, math.inf)
            waiting.popleft()
            self._seq += 1
            job.seq, job.cost = self._seq, cost
            self.workers[index].queue.append(job)
            batches.setdefault(index, []).append(job)
            if queued + 1 < depth:
                heapq.heapreplace(heap, (load + cost, queued + 1, index))
            else:
                heapq.heappop(heap)
        return [(self.workers[index], jobs) for index, jobs in batches.items()]

    def running(self, book: WorkerBook, started_seq: int) -> Job | None:
        """The job ``book``'s worker is running, given the last ``seq`` it announced starting."""
        for job in book.queue:
            if job.seq >= started_seq:
                return job if job.seq == started_seq else None
        return None

    def done(self, book: WorkerBook, seq: int) -> Job:
        """The worker reported the job ``seq`` ended, or returned it unstarted: forget it.

        Workers report in the order they were given jobs; anything else is a :class:`ValueError`.
        """
        if not book.queue or book.queue[0].seq != seq:
            expected = book.queue[0].seq if book.queue else None
            raise ValueError(f"worker {book.name} reported task #{seq}, expected #{expected}")
        job = book.queue.popleft()
        del self.jobs[job.envelope.id]
        return job

    def learn(self, task_type: str, duration: float) -> None:
        """Take the duration of a task that ended into the moving averages."""
        known = self.durations.get(task_type)
        self.durations[task_type] = duration if known is None else known + _SMOOTHING * (duration - known)
        mean = self.mean_duration
        self.mean_duration = duration if mean is None else mean + _SMOOTHING * (duration - mean)

    def remove_worker(self, book: WorkerBook, started_seq: int) -> tuple[Job | None, list[Job]]:
        """The worker process is gone or being killed.

        Returns the job it was running (forgotten: the caller reports how it ended) and the
        jobs to hand back.  Every other job of the worker, unstarted or ended with its result
        lost with the process, goes back to the front of the waiting line, in order; while
        draining they are forgotten instead and returned for handing back.
        """
        self.workers.remove(book)
        running = self.running(book, started_seq)
        if running is not None:
            book.queue.remove(running)
            del self.jobs[running.envelope.id]
        others = list(book.queue)
        book.queue.clear()
        if self.draining:
            for job in others:
                del self.jobs[job.envelope.id]
            return running, others
        for job in reversed(others):
            job.seq = 0
            self.waiting.appendleft(job)
        return running, []

    def drain(self) -> list[Job]:
        """Assign nothing any more; forget the waiting jobs and return them for handing back."""
        self.draining = True
        waiting = list(self.waiting)
        self.waiting.clear()
        for job in waiting:
            del self.jobs[job.envelope.id]
        return waiting

    def resume(self) -> None:
        """Assign jobs again after a drain (a controller that stays for the next run)."""
        self.draining = False

    def held_ids(self) -> list[str]:
        """Ids of every job held, waiting or assigned."""
        return list(self.jobs)
