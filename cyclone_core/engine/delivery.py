"""Delivery of journaled results to the sinks: one thread per sink, the journal as outbox.

Each thread hands the sink batches of up to ``batch_size`` results (fewer once the oldest has
waited ``flush_interval``), and moves the sink's delivered mark in the journal when ``write``
returns.  The master hands each thread the results it has just committed (:meth:`offer`), so
that a sink keeping up never reads them back from SQLite; whatever is not in memory (results
from before a restart, or those of a sink that fell far behind) is read from the journal
through the thread's own connection.  The journal stays the durable record either way.

Before any of that, :func:`check_sinks` finds the sinks that cannot work at all (their
``check``), so that a wrong password or path stops the master before the run starts.  A sink
that fails (in ``open`` or ``write``) is retried with exponential backoff up to
:data:`BACKOFF_MAX` seconds; the failure is logged as one line and counted, and nothing else
waits for it: the master keeps dispatching and the results wait in the journal.  Anything else
that goes wrong in a delivery thread (reading the journal, say) is not the sink's failure and is
not retried: delivery to that sink stops, logged with its traceback and shown as its last error.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from cyclone_core.engine.journal import JOURNAL_RETRY, DeadLetter, JournalWriteError, Outbox, UnreadableResult
from cyclone_core.errors import ConfigError, CycloneError, ResultsRejected, one_line_error

if TYPE_CHECKING:
    from cyclone_core.engine.journal import Journal
    from cyclone_core.model import Result, ResultSink

__all__ = ("BACKOFF_MAX", "SinkDelivery", "check_sinks", "dead_letter_status")

log = logging.getLogger("cyclone.delivery")

#: Longest wait between two attempts to deliver to a failing sink, seconds.
BACKOFF_MAX = 30.0
_BACKOFF_FIRST = 0.5
#: Results a delivery thread keeps in memory at most; past that, new ones are read from the
#: journal when their turn comes (a sink that is down does not make the master grow).
MEMORY_RESULTS = 20_000
#: Results of a failed batch written one by one, all failing, before the sink is taken to be
#: down rather than rejecting those results.
ISOLATION_PROBES = 4
#: Dead letters shown in the master's status, the latest.
DEAD_LETTERS_SHOWN = 5


def check_sinks(sinks: Sequence[ResultSink]) -> None:
    """Call each sink's :meth:`~cyclone_core.model.ResultSink.check`; raise :class:`ConfigError`
    ``sink 'NAME': what is wrong`` for the first that cannot work at all."""
    for sink in sinks:
        try:
            sink.check()
        except Exception as exc:  # third-party code: whatever it raises means "cannot work"
            text = " ".join(str(exc).split()) if isinstance(exc, CycloneError) else one_line_error(exc)
            prefix = f"sink '{sink.name}'"
            raise ConfigError(text if text.startswith(prefix) else f"{prefix}: {text}") from exc


def dead_letter_status(deliveries: Sequence[SinkDelivery]) -> dict[str, Any]:
    """The dead letters of every sink as plain data (the master's status): how many, and the
    latest few."""
    # list(): a copy taken at once (under the GIL), while the delivery threads add to them.
    latest = sorted(
        (letter for d in deliveries for letter in list(d.latest_dead_letters)),
        key=lambda d: (d.at, d.number),
        reverse=True,
    )
    return {
        "count": sum(d.dead_letters for d in deliveries),
        "latest": [
            {"sink": d.sink, "task_id": d.task_id, "at": d.at, "error": d.error} for d in latest[:DEAD_LETTERS_SHOWN]
        ],
    }


class SinkDelivery:
    """Delivers the journal's outbox to one sink from a thread of its own.

    :param sink: the sink; ``open``, ``write`` and ``close`` are called from the thread only.
    :param journal: the master's journal; its ``last_result`` says how far the outbox goes.
    """

    def __init__(self, sink: ResultSink, journal: Journal, *, backoff_max: float = BACKOFF_MAX) -> None:
        self.sink = sink
        self.name = sink.name
        self._journal = journal
        self._backoff_max = backoff_max
        #: Id of the last result the sink has.
        self.mark = 0
        #: Results delivered by this thread, failures so far, the latest failure.
        self.delivered = 0
        #: Results a previous master journaled and this sink did not have when the thread
        #: started (a resumed run's backlog); delivered first, in order.
        self.backlog_at_start = 0
        self.errors = 0
        self.last_error: str | None = None
        self._stored: Result | None = None  # the last result the sink stored (also in the journal)
        #: Results the sink rejected (in the journal's dead letters), and the latest few.
        self.dead_letters = 0
        self.latest_dead_letters: deque[DeadLetter] = deque(maxlen=DEAD_LETTERS_SHOWN)
        #: True while the sink is failing (between a failure and the next success).
        self.failing = False
        self._wake = threading.Event()
        self._finish = threading.Event()
        self._abort = threading.Event()
        self._ready = threading.Event()
        self._oldest: tuple[int, float] = (-1, 0.0)
        #: Seconds to wait after the sink's latest failure (0 while it works).
        self._delay = 0.0
        # Committed results handed over by the master: (number of the first, when, results).
        self._fresh: deque[tuple[int, float, list[Result]]] = deque()
        self._fresh_count = 0
        self._fresh_lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name=f"cyclone-sink-{self.name}", daemon=True)

    @property
    def backlog(self) -> int:
        """Results in the journal this sink does not have yet."""
        return max(self._journal.last_result - self.mark, 0)

    @property
    def backlog_delivered(self) -> int:
        """How many of the results waiting when the thread started it has delivered."""
        return min(self.delivered, self.backlog_at_start)

    def start(self) -> None:
        """Start the thread; returns once it has read its delivered mark."""
        self._thread.start()
        self._ready.wait(30.0)

    def offer(self, first: int, at: float, results: list[Result]) -> None:
        """``results``, numbered from ``first``, were just committed to the journal at ``at``
        (seconds of the monotonic clock): keep them for the sink, unless too many wait already."""
        with self._fresh_lock:
            if self._fresh_count + len(results) <= MEMORY_RESULTS:
                self._fresh.append((first, at, results))
                self._fresh_count += len(results)
        # The thread needs waking when it had nothing to do (it then times the flush of these
        # itself) or when a whole batch waits; not on every commit in between.
        if first - 1 <= self.mark or first + len(results) - 1 - self.mark >= self.sink.batch_size:
            self._wake.set()

    def _take_fresh(self, mark: int, limit: int) -> tuple[int, list[Result]]:
        """Up to ``limit`` results from number ``mark + 1`` on, from memory (none when that
        result is not there), and the number of the last one."""
        taken: list[Result] = []
        with self._fresh_lock:
            fresh = self._fresh
            while fresh and len(taken) < limit:
                first, _, results = fresh[0]
                start = mark + 1 - first
                if start < 0:
                    break  # a gap (offers dropped while full): the journal has it
                if start >= len(results):
                    fresh.popleft()  # delivered already (from the journal)
                    self._fresh_count -= len(results)
                    continue
                take = results[start : start + limit - len(taken)]
                taken += take
                mark += len(take)
                if start + len(take) == len(results):
                    fresh.popleft()
                    self._fresh_count -= len(results)
        return mark, taken

    def _fresh_at(self, number: int) -> float | None:
        """When result ``number`` was committed, if it is in memory."""
        with self._fresh_lock:
            for first, at, results in self._fresh:
                if first <= number < first + len(results):
                    return at
        return None

    def finish(self) -> None:
        """Deliver everything committed so far, then stop (see :attr:`finished`)."""
        self._finish.set()
        self._wake.set()

    @property
    def finished(self) -> bool:
        """Whether the thread has stopped."""
        return not self._thread.is_alive()

    def stop(self, timeout: float = 0.0) -> None:
        """Stop now, waiting at most ``timeout`` seconds for a ``write`` in progress."""
        self._abort.set()
        self._wake.set()
        self._thread.join(timeout)

    def _run(self) -> None:
        # Only the sink's own calls are retried (see _call_sink).  An error anywhere else, in
        # this code or the journal, is not the sink failing: delivery stops, with a traceback.
        try:
            self._deliver()
        except Exception as exc:
            self.last_error = f"delivery stopped by an internal error: {one_line_error(exc)}"
            log.critical("sink '%s': %s", self.name, self.last_error, exc_info=True)

    def _deliver(self) -> None:
        try:
            outbox = Outbox(self._journal.path, self.name)
            self.mark = outbox.mark
            self._stored = outbox.stored
            self.dead_letters, latest = outbox.dead_letters(DEAD_LETTERS_SHOWN)
            self.latest_dead_letters.extend(latest)
            self.backlog_at_start = self.backlog
        finally:
            self._ready.set()
        opened = False
        try:
            while not self._abort.is_set():
                if not opened:
                    opened = self._call_sink(self.sink.open)
                    continue
                try:
                    batch = self._step(outbox)
                except UnreadableResult as bad:
                    self._record(outbox, bad.number, [bad.dead_letter(self.name)])
                    continue
                if batch is None:
                    break
                last, results = batch
                if results:
                    written = self._write(results, last)
                    if written is not None:
                        self._record(outbox, *written)
        finally:
            if opened:
                try:
                    self.sink.close()
                except Exception as exc:  # third-party code
                    log.warning("sink '%s' failed to close: %s", self.name, one_line_error(exc))
            outbox.close()

    def _record(self, outbox: Outbox, last: int, dead_letters: list[DeadLetter]) -> None:
        """Move the sink's delivered mark in the journal to ``last``, with the dead letters
        among those results and the last result it stored; while the journal cannot be
        written (a full disk), try again every :data:`JOURNAL_RETRY` seconds.  If stopped
        first, the sink is offered those results again later (it skips what it has, and
        rejects the rest again)."""
        while True:
            try:
                outbox.delivered(last, dead_letters, self._stored)
            except JournalWriteError as exc:
                self.last_error = str(exc)
                if self._abort.wait(JOURNAL_RETRY):
                    return
            else:
                break
        self.delivered += last - self.mark - len(dead_letters)
        self.mark = last
        if dead_letters:
            self.dead_letters += len(dead_letters)
            self.latest_dead_letters.extendleft(dead_letters)
            log.error(
                "sink '%s' cannot store %d results; kept as dead letters in the journal (cyclone results "
                "--dead-letters): %s: %s",
                self.name,
                len(dead_letters),
                dead_letters[0].task_id,
                dead_letters[0].error,
            )

    def _write(self, results: list[Result], last: int) -> tuple[int, list[DeadLetter]] | None:
        """Write ``results`` (numbered up to ``last``) to the sink.  Returns the number of
        the last result done with (stored, or rejected for good) and the rejected ones as dead
        letters; ``None`` after a failure of the sink as a whole, waited out with backoff.

        Results the sink names in :class:`ResultsRejected` are rejected.  When a batch fails
        otherwise, its results are written one by one: those that fail while others succeed
        (later, or the last result the sink stored, written again) are rejected; if none
        succeeds, the sink is down, and nothing is rejected.  The last result stored is kept in
        the journal, so that after a restart a result the sink cannot store, alone in the
        outbox, is rejected all the same.  A sink that has never stored a result cannot show
        that it works: while all the results it is given fail, it is taken to be down (retried
        with backoff, nothing rejected), as it may well be; the first result it stores then
        decides those before it."""
        first = last - len(results) + 1
        rejected: dict[int, str] = {}
        pending = list(range(len(results)))
        while pending:
            try:
                self.sink.write([results[i] for i in pending])
            except ResultsRejected as exc:
                named = {r.task_id for r in exc.results}
                hits = [i for i in pending if results[i].task_id in named]
                if hits:
                    rejected.update(dict.fromkeys(hits, exc.reason))
                    pending = [i for i in pending if i not in rejected]
                    continue
                error: Exception = exc
            except Exception as exc:  # third-party sink code: an outage, or some results it cannot store
                error = exc
            else:
                self._stored = results[pending[-1]]
                break
            done = self._isolate(results, pending, rejected)
            if not done:
                self._failed(error)
                return None
            self._worked()
            return self._decided(first, results, done, rejected)
        self._worked()
        return self._decided(first, results, len(results), rejected)

    def _decided(
        self, first: int, results: list[Result], done: int, rejected: dict[int, str]
    ) -> tuple[int, list[DeadLetter]]:
        """The outcome of a write: the first ``done`` results are stored or ``rejected``."""
        dead = [DeadLetter.of(self.name, first + i, results[i], why) for i, why in sorted(rejected.items()) if i < done]
        return first + done - 1, dead

    def _isolate(self, results: list[Result], pending: list[int], rejected: dict[int, str]) -> int:
        """Write the ``pending`` results one by one, adding to ``rejected`` those that fail
        while another one succeeds after them (or that the sink names); returns how many
        results from the first are done with (the rest are written again later): 0 when none
        was.  When the first :data:`ISOLATION_PROBES` fail, or the last ones, the sink must
        show that it works (:meth:`_works`), or it is taken to be down."""
        failures: dict[int, str] = {}
        undecided: list[int] = []  # failed since the last success
        answered = False  # the sink stored or named a result: it works

        def works() -> None:
            nonlocal answered
            answered = True
            for failed in undecided:
                rejected[failed] = failures[failed]
            undecided.clear()

        for index in pending:
            if not answered and len(failures) >= ISOLATION_PROBES:
                if not self._works():
                    return 0
                works()
            try:
                self.sink.write([results[index]])
            except ResultsRejected as exc:
                rejected[index] = exc.reason
                answered = True
                continue
            except Exception as exc:  # third-party sink code
                failures[index] = one_line_error(exc)
                undecided.append(index)
                continue
            self._stored = results[index]
            works()
        if undecided and self._works():
            works()
        return min(undecided, default=len(results)) if answered else 0

    def _works(self) -> bool:
        """Whether the sink works: it stores again the last result it stored, in this run or
        before a restart (a sink skips what it has, by result id); ``False`` if it has never
        stored one (a sink that is down, as far as can be told)."""
        if self._stored is None:
            return False
        try:
            self.sink.write([self._stored])
        except Exception:  # third-party sink code: it does not work
            return False
        return True

    def _call_sink(self, method: Callable[..., object], *args: Any) -> bool:
        """Call the sink's ``open`` or ``write``; returns whether it succeeded.  A failure is
        logged and counted, and waited out with exponential backoff (cut short only by
        :meth:`stop`: finishing keeps retrying until then)."""
        try:
            method(*args)
        except Exception as exc:  # any failure of third-party sink code is retried
            self._failed(exc)
            return False
        self._worked()
        return True

    def _failed(self, exc: Exception) -> None:
        """The sink failed: wait before the next attempt, longer each time in a row."""
        self._delay = min(max(self._delay * 2, _BACKOFF_FIRST), self._backoff_max)
        self._fail(exc, self._delay)
        self._abort.wait(self._delay)

    def _worked(self) -> None:
        """The sink worked: if it had failed, say that it recovered."""
        if self.failing:
            self.failing = False
            self._delay = 0.0
            log.warning("sink '%s' recovered (%d results waiting)", self.name, self.backlog)

    def _fail(self, exc: BaseException, delay: float) -> None:
        self.errors += 1
        self.failing = True
        self.last_error = one_line_error(exc)
        log.warning(
            "sink '%s' failed: %s; retrying in %.1f s (%d results waiting)",
            self.name,
            self.last_error,
            delay,
            self.backlog,
        )

    def _step(self, outbox: Outbox) -> tuple[int, list[Result]] | None:
        """The next batch for the sink and the number of its last result, or an empty one
        after waiting for results; ``None`` when finished and nothing is left."""
        waiting = self._journal.last_result - outbox.mark
        finishing = self._finish.is_set()
        if waiting <= 0:
            if finishing:
                return None
            self._wait(1.0)
            return outbox.mark, []
        batch_size = self.sink.batch_size
        if waiting < batch_size and not finishing:
            if self._oldest[0] != outbox.mark:  # the master wakes us often: look once per mark
                # When the master committed it (monotonic), or, read back from the journal after
                # a restart, now: waits never compare wall-clock times, which may be set back.
                at = self._fresh_at(outbox.mark + 1)
                self._oldest = (outbox.mark, at if at is not None else time.monotonic())
            left = self._oldest[1] + self.sink.flush_interval - time.monotonic()
            if left > 0:
                self._wait(left)
                return outbox.mark, []
        last, results = self._take_fresh(outbox.mark, batch_size)
        if not results:
            last, results = outbox.fetch(batch_size)
        return last, results

    def _wait(self, timeout: float) -> None:
        self._wake.wait(timeout)
        self._wake.clear()
