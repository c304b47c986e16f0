"""A controller's session with its master: credit, results until acknowledged, reconnects, drain.

This module is sans-I/O: no sockets, processes or clocks.  :class:`ControllerSession` is told
what happened (a message from the master, results from the worker pool, a signal, time passed,
each with the time ``now``) and answers with the effects to carry out, in order: send this
message, open or close the socket, give these tasks to the pool, drain or abort the pool, exit.
:class:`~cyclone_core.engine.controller.Controller` is the loop that moves bytes, signals and
time into it and carries its effects out.

What it keeps:

- **Credit.**  It holds about as many tasks as keep each worker busy for :data:`HOLD_BUDGET`
  seconds, judged by the pool's moving average of task durations, between :data:`MIN_PREFETCH`
  and :data:`MAX_PREFETCH` per worker (:data:`INITIAL_PREFETCH` before the first result).  The
  credit it grants is that target less the tasks held and the credit the master has not used
  yet.  A Dispatch beyond the credit granted is not run: the excess is handed back.
- **Results until acknowledged.**  Every result is kept until an Ack names it, and sent again
  after each Welcome (a reconnect, a Rehello).  When none is acknowledged for two heartbeat
  intervals it registers again (a new Hello also resets the master's count of its credit,
  should a lost Results have carried some) and re-sends them once welcomed.
- **Reconnects.**  A master silent for ``master_timeout`` means: close the socket, and open a
  new one after a delay doubling from ``reconnect_interval`` up to ``reconnect_max``; any
  message from the master resets the delay.  After ``max_reconnects`` in a row (0: never) it
  gives up, exit code 1.  A connection that fails (nothing listens at the endpoint) is said at
  once and then at the same doubling delays, while the socket keeps trying.
- **Drain.**  Shutdown, a signal or a stop request: no new task; the unstarted ones are handed
  back; running ones may finish for ``drain_timeout`` seconds, then are killed and handed back
  (cut short by the stop, not by a fault of their own); then up to ``master_timeout`` for the
  Acks of the last results; Goodbye; exit code 0, or 1 when results stayed unacknowledged.  A
  second signal skips the waiting.  Refuse means exit code 2 at once, but for an id still held
  by a process the master has not timed out yet (Refuse with ``retry_after``: a controller
  restarted at once after a kill): it connects again after that delay, up to
  :data:`IN_USE_TRIES` times in a row.
- **Run after run.**  With ``stay``, a Shutdown drains the same way, but after the Goodbye the
  controller disconnects and waits for a master again (a new connection after a delay doubling
  from ``reconnect_interval`` up to ``reconnect_max`` while the old master still says the run is
  over); a Welcome of another master starts the next run.  A signal still drains and exits.
  Without ``stay``, a controller whose run is over (it got Shutdown) gives up once its master
  has been silent for :data:`RUN_OVER_TIMEOUTS` times ``master_timeout``.
- **Distrust.**  Only messages a master sends are taken, each by its handler in
  :data:`_HANDLERS`; anything else is counted and logged now and then.  The numbers of a
  Welcome are kept within :data:`WELCOME_LIMITS`.
- **Keys.**  With a join token it enrolls its key first (Enroll, then Enrolled: recorded,
  then a new connection and Hello); a refused enrollment is exit code 2.  A CURVE handshake
  that fails is said once per connection: the master refused the key (while enrolling: exit
  code 2), or it is not the master whose key is pinned.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence, Sized
from pathlib import Path
from typing import Any, Protocol

import attrs

from cyclone_core.config import ControllerSettings
from cyclone_core.engine.protocol import (
    Ack,
    Dispatch,
    Enroll,
    Enrolled,
    Fetched,
    Goodbye,
    Handback,
    Heartbeat,
    Hello,
    Message,
    Ping,
    Refuse,
    Rehello,
    Sender,
    Shutdown,
    StatusReply,
    Submitted,
    TaskEnvelope,
    Welcome,
    handler_table,
)
from cyclone_core.keys import CONTROLLER_NAME, PINNED_MASTER_FILE

__all__ = (
    "HEARTBEATS_PER_TIMEOUT",
    "HOLD_BUDGET",
    "INITIAL_PREFETCH",
    "MAX_PREFETCH",
    "MIN_PREFETCH",
    "RUN_OVER_TIMEOUTS",
    "WELCOME_LIMITS",
    "AbortPool",
    "Connect",
    "ControllerSession",
    "Disconnect",
    "DrainPool",
    "Effect",
    "Exit",
    "HeldTasks",
    "RecordEnrollment",
    "ResumePool",
    "Send",
    "SendResults",
    "Submit",
)

log = logging.getLogger("cyclone.controller")

#: Tasks per worker asked for before any task has ended.
INITIAL_PREFETCH = 4
#: Tasks per worker held at least: one running and one ready, so no worker waits for the master.
MIN_PREFETCH = 2
#: Tasks per worker held at most.
MAX_PREFETCH = 64
#: Seconds of expected work per worker the controller holds.
HOLD_BUDGET = 0.25
#: Heartbeats sent at least within the master's ``controller_timeout``, so that a lost one or
#: two do not make the master declare this controller lost.
HEARTBEATS_PER_TIMEOUT = 4
#: The numbers of a Welcome the controller takes, in seconds: (floor, ceiling).  A number
#: outside is clamped; one that is not a positive finite number is ignored and the controller's
#: own settings apply.  Either way one log line says so.
WELCOME_LIMITS: dict[str, tuple[float, float]] = {
    "heartbeat_interval": (0.05, 3600.0),
    "controller_timeout": (0.05 * HEARTBEATS_PER_TIMEOUT, 86400.0),
}
#: A controller without ``stay`` whose run is over gives up once its master has been silent for
#: this many ``master_timeout``: it does not reconnect for ever to a master that finished.
RUN_OVER_TIMEOUTS = 2
#: Seconds between two log lines about bad messages from the master.
COMPLAIN_EVERY = 10.0
#: Refusals in a row for an id still in use (Refuse with ``retry_after``) before giving up:
#: another live process really holds the id.
IN_USE_TRIES = 5


# -- effects --------------------------------------------------------------------------------------
# Plain records rather than frozen ones: two are made per turn of the loop, and a frozen attrs
# class takes twice as long to make.


@attrs.define
class Send:
    """Send ``message`` to the master (dropped if no socket is open)."""

    message: Message


@attrs.define
class SendResults:
    """Send result ``rows`` (as the workers made them) with ``credit`` newly granted slots."""

    rows: list[list[Any]]
    credit: int


@attrs.define
class Connect:
    """Open a new socket to the master."""


@attrs.define
class Disconnect:
    """Close the socket to the master (unsent messages are dropped)."""


@attrs.define
class Submit:
    """Give ``tasks`` to the worker pool."""

    tasks: list[TaskEnvelope]


@attrs.define
class DrainPool:
    """Make the pool start no more tasks and hand back the unstarted ones."""


@attrs.define
class ResumePool:
    """Make the pool start tasks again after a drain (the controller stays for the next run)."""


@attrs.define
class AbortPool:
    """Kill the workers running tasks; report the ids of those tasks to
    :meth:`ControllerSession.aborted`."""


@attrs.define
class Exit:
    """Stop the controller with exit ``code``."""

    code: int


@attrs.define
class RecordEnrollment:
    """The master enrolled this controller's key as grant ``name`` for controller ids ``ids``:
    record it in the key directory, so that a restart does not enroll again."""

    name: str
    ids: str


Effect = (
    Send | SendResults | Connect | Disconnect | Submit | DrainPool | ResumePool | AbortPool | Exit | RecordEnrollment
)
_NOTHING: tuple[Effect, ...] = ()

_CONNECT, _DISCONNECT, _DRAIN_POOL, _ABORT_POOL = Connect(), Disconnect(), DrainPool(), AbortPool()
_RESUME_POOL = ResumePool()


class HeldTasks(Protocol):
    """What the session reads of the worker pool's books
    (:class:`~cyclone_core.engine.pool_state.PoolState`)."""

    @property
    def jobs(self) -> Sized:
        """Every task held, waiting or assigned to a worker."""

    @property
    def mean_duration(self) -> float | None:
        """Moving average of task durations in seconds; ``None`` before the first result."""

    def held_ids(self) -> list[str]:
        """Ids of every task held."""


# -- the session ----------------------------------------------------------------------------------


class ControllerSession:
    """The controller's side of the conversation with its master, without I/O.

    Each event method takes the time ``now`` (seconds of a monotonic clock) and returns the
    effects to carry out in order; :meth:`deadline` says by when :meth:`tick` must be called
    again.  The owner opens the first socket before :meth:`start`.

    :param settings: the ``[controller]`` settings.
    :param hello: what to register with; its ``credit`` is set each time one is sent.
    :param pool: the pool's books, read for the credit and the heartbeats.
    :param enroll: a join token's one-time secret: the session enrolls its key with it (Enroll,
        then Enrolled) before it registers.
    :param key_dir: the key directory of a CURVE client (named in messages about keys);
        ``None`` in plaintext.
    """

    def __init__(
        self,
        settings: ControllerSettings,
        hello: Hello,
        pool: HeldTasks,
        *,
        enroll: str | None = None,
        key_dir: Path | None = None,
    ) -> None:
        self.settings = settings
        # A join token's secret while this controller's key is still to be enrolled.
        self._enroll = enroll
        self._key_dir = key_dir
        # Whether a failed handshake was reported for the current socket already.
        self._handshake_said = False
        self._hello = hello
        self._pool = pool
        self._workers = hello.workers
        self._out: list[Effect] = []
        #: Result rows not acknowledged yet, by task id, with when they were last sent (oldest
        #: first).  Rows as the workers made them: the controller never builds result objects.
        self.unacked: dict[str, tuple[list[Any], float]] = {}
        #: The exit code once decided.
        self.exit_code: int | None = None
        self.heartbeat_interval = settings.heartbeat_interval
        self._master_timeout = settings.master_timeout
        self._connected = True
        self._welcomed = False
        self._master_id: str | None = None
        self._hello_at = -math.inf
        self._heard_at = 0.0
        # When the master last said anything, on any socket.
        self._last_heard = 0.0
        self._reconnects = 0
        self._reconnect_at = math.inf
        self._heartbeat_at = math.inf
        # Credit granted to the master that it has not used yet.
        self._outstanding = 0
        # Results not sent yet (they are in unacked too).
        self._fresh: list[list[Any]] = []
        # Handbacks waiting for a welcomed connection: (task ids, reason).
        self._handbacks: list[tuple[list[str], str]] = []
        self._draining = False
        # The drain under way ends by waiting for the next run, not by exiting (stay).
        self._stay_after_drain = False
        # The master said the run is over (Shutdown); ``_done_master`` is the one that said it.
        self._run_over = False
        self._done_master: str | None = None
        # Masters in a row that said the run is over since the last run began: the backoff.
        self._idle_rounds = 0
        self._aborted = False
        self._drain_deadline = math.inf
        self._acks_deadline = math.inf
        self._complained_at = -math.inf
        self._complaints = 0
        # Since when connections to the master fail (None: they do not), the reports made about
        # it and when the next one is due (see unreachable).
        self._unreachable_since: float | None = None
        self._unreachable_reports = 0
        self._unreachable_report_at = -math.inf
        # Refusals in a row for an id still in use by an older process.
        self._in_use_refusals = 0

    # -- reading -----------------------------------------------------------------------------

    @property
    def welcomed(self) -> bool:
        """True while registered with the master on the current socket."""
        return self._welcomed

    @property
    def draining(self) -> bool:
        """True once the controller stopped taking tasks."""
        return self._draining

    @property
    def outstanding(self) -> int:
        """Credit granted to the master that it has not used yet."""
        return self._outstanding

    def target(self) -> int:
        """Tasks the controller wants to hold: :data:`HOLD_BUDGET` seconds of work per worker."""
        mean = self._pool.mean_duration
        if mean is None:
            return self._workers * INITIAL_PREFETCH
        return self._workers * max(MIN_PREFETCH, min(MAX_PREFETCH, int(HOLD_BUDGET / max(mean, 1e-9))))

    def deadline(self) -> float:
        """When :meth:`tick` must be called at the latest (``math.inf``: only on other events)."""
        if self.exit_code is not None:
            return math.inf
        due = math.inf
        if self._draining:
            # Waiting for running tasks (or, past it, going on after the pool was aborted), then acks.
            due = self._drain_deadline if self._acks_deadline == math.inf else self._acks_deadline
        if self._run_over and not self.settings.stay:
            due = min(due, self._last_heard + RUN_OVER_TIMEOUTS * self._master_timeout)
        if not self._connected:
            return min(due, self._reconnect_at)
        due = min(due, self._heard_at + self._master_timeout)
        if self._welcomed:
            due = min(due, self._heartbeat_at)
            if self.unacked:
                due = min(due, next(iter(self.unacked.values()))[1] + self._resend_after)
        return due

    # -- events ------------------------------------------------------------------------------

    def start(self, now: float) -> Sequence[Effect]:
        """The first socket is open: register."""
        self._heard_at = self._last_heard = now
        self._send_hello(now)
        return self._take()

    def receive(self, message: Message, now: float) -> Sequence[Effect]:
        """A message from the master (decoded, so well-formed; not trusted beyond that)."""
        if self.exit_code is not None:
            return _NOTHING
        handler = _HANDLERS.get(type(message))
        if handler is None:
            self._complain(f"unexpected {message.tag} message", now)
            return _NOTHING
        self._heard_at = self._last_heard = now
        self._reconnects = 0
        self._unreachable_since = None
        self._unreachable_report_at = -math.inf
        handler(self, message, now)
        return self._take()

    def bad_frame(self, problem: str, now: float) -> None:
        """A frame from the master's address that is not a message: counted, logged now and then."""
        self._complain(problem, now)

    def handshake_failed(self, refused: bool, now: float) -> Sequence[Effect]:
        """The CURVE handshake on the current socket failed: ``refused`` when the master
        refused this controller's key, else the master is not the one whose key is pinned (or
        runs without keys).  Said once per socket; the reconnect rules go on, but a refused
        enrollment ends the controller (exit code 2)."""
        if self.exit_code is not None:
            return _NOTHING
        master = self.settings.master
        if refused and self._enroll is not None:
            log.error(
                "the master at %s refused to enroll this controller: its join token expired, was used already, "
                "or is not the master's; ask for a new one",
                master,
            )
            self._exit(2)
        elif not self._handshake_said:
            self._handshake_said = True
            if refused:
                log.error(
                    "the master at %s does not admit this controller's key (%s): allow it there with "
                    "`cyclone keys allow`, or enroll with --token",
                    master,
                    self._key_file(f"{CONTROLLER_NAME}.public"),
                )
            else:
                log.error(
                    "the handshake with %s failed: it is not the master whose key is pinned in %s "
                    "(or it runs without keys)",
                    master,
                    self._key_file(PINNED_MASTER_FILE),
                )
        return self._take()

    def unreachable(self, now: float) -> Sequence[Effect]:
        """A connection to the master failed (nothing accepts connections at its endpoint, or
        it closed the connection); the socket keeps trying, so a master that starts is found at
        once.  Said at once, then again after delays doubling from ``reconnect_interval`` up to
        ``reconnect_max``, until the master answers: one line each, naming the next delay."""
        if self.exit_code is not None or self._handshake_said or now < self._unreachable_report_at:
            return _NOTHING  # a failed handshake was said already, and better
        settings = self.settings
        if self._unreachable_since is None:
            self._unreachable_since = now
            self._unreachable_reports = 0
        delay = _backoff(settings, self._unreachable_reports)
        level = logging.DEBUG if self._run_over else logging.WARNING  # between runs this is expected
        if self._unreachable_reports == 0:
            log.log(
                level,
                "cannot connect to master %s (is it running and listening there?); retrying, next report in %.1f s",
                settings.master,
                delay,
            )
        else:
            log.log(
                level,
                "still cannot connect to master %s after %.1f s; retrying, next report in %.1f s",
                settings.master,
                now - self._unreachable_since,
                delay,
            )
        self._unreachable_reports += 1
        self._unreachable_report_at = now + delay
        return _NOTHING

    def _key_file(self, name: str) -> Path:
        return (self._key_dir or Path()) / name

    def produced(self, results: list[list[Any]], handed_back: list[str], now: float) -> None:
        """The pool's new result rows and the ids of tasks it gave up unstarted; sent at the
        next :meth:`tick`."""
        if handed_back:
            self._handbacks.append((handed_back, "draining"))
        if results:
            unacked = self.unacked
            for row in results:
                unacked[row[0]] = (row, now)
            if self._fresh:
                self._fresh += results
            else:
                self._fresh = results  # the owner hands the list over

    def aborted(self, killed: list[str], now: float) -> None:
        """The pool killed the workers running ``killed`` (after :class:`AbortPool`)."""
        if killed:
            timeout = self.settings.drain_timeout
            log.warning("drain timeout: killed %d running tasks and handing them back", len(killed))
            self._handbacks.append((killed, f"killed when the controller stopped (drain timeout {timeout} s)"))

    def signal(self, now: float) -> Sequence[Effect]:
        """SIGTERM, SIGINT or SIGHUP: drain; when draining already, stop now."""
        if self.exit_code is not None:
            return _NOTHING
        if self._stay_after_drain:
            self._stay_after_drain = False
            log.info("signal received: exiting once drained")
        elif self._draining:
            log.warning("signal received again: stopping now")
            self._drain_deadline = self._acks_deadline = now
            self._check_drain(now)
        else:
            self._start_drain("signal received", now)
        return self._take()

    def stop_requested(self, now: float) -> Sequence[Effect]:
        """Asked to stop (the ``stop`` event of :func:`~cyclone_core.engine.controller.run_controller`)."""
        if self.exit_code is None:
            self._stay_after_drain = False
            self._start_drain("asked to stop", now)
        return self._take()

    def tick(self, now: float) -> Sequence[Effect]:
        """Time passed: check the timers, then send what the pool produced with the credit free."""
        if self.exit_code is not None:
            return _NOTHING
        self._check_master(now)
        self._check_drain(now)
        if self.exit_code is None:
            self._flush(now)
        return self._take()

    # -- the master's messages ---------------------------------------------------------------

    def _on_dispatch(self, message: Dispatch, now: float) -> None:
        tasks = message.tasks
        granted = self._outstanding
        if len(tasks) > granted:
            self._complain(f"a Dispatch of {len(tasks)} tasks, {granted} granted: the excess is handed back", now)
            self._handbacks.append(([task.id for task in tasks[granted:]], "over the credit granted"))
            tasks = tasks[:granted]
        self._outstanding = granted - len(tasks)
        if not tasks:
            return
        if self._draining:
            self._handbacks.append(([task.id for task in tasks], "draining"))
        else:
            self._out.append(Submit(tasks))

    def _on_ack(self, message: Ack, now: float) -> None:
        unacked = self.unacked
        for task_id in message.task_ids:
            unacked.pop(task_id, None)

    def _on_ping(self, message: Ping, now: float) -> None:
        pass  # heard: that is all a Ping says

    def _on_welcome(self, message: Welcome, now: float) -> None:
        if self._welcomed:
            log.debug("ignored a Welcome while registered (one per Hello crossing)")
            return
        again = self._master_id is not None
        if self._run_over and message.master_id != self._done_master:
            log.info("a new run: master %s (run %s)", message.master_id, message.run_id)
            self._run_over, self._idle_rounds, again = False, 0, False
        self._welcomed = True
        self._in_use_refusals = 0
        self._master_id = message.master_id
        self.heartbeat_interval = self._heartbeat_for(message)
        log.log(
            logging.DEBUG if self._run_over else logging.INFO,  # the finished run's master, again
            "%s with master %s (run %s)",
            "registered again" if again else "registered",
            message.master_id,
            message.run_id,
        )
        # Results before the heartbeat: a master whose earlier connection to this controller
        # was replaced takes the tasks it sent there and that the heartbeat does not list back
        # at once, and those whose results are on their way must be settled by then.
        if self.unacked:
            log.info("re-sending %d unacknowledged results", len(self.unacked))
            rows = [row for row, _ in self.unacked.values()]
            self.unacked = {row[0]: (row, now) for row in rows}
            self._fresh = []
            self._send_results(rows)
        self._send_heartbeat(now)

    def _on_rehello(self, message: Rehello, now: float) -> None:
        # Several may arrive for messages sent before the Hello; one Hello answers them.
        if self._welcomed or now - self._hello_at >= self.heartbeat_interval:
            log.info("the master asks this controller to register again: %s", message.reason)
            self._send_hello(now)

    def _on_shutdown(self, message: Shutdown, now: float) -> None:
        self._run_over = True
        self._done_master = self._master_id
        if self._draining:
            return
        if self.settings.stay:
            self._stay_after_drain = True
            self._start_drain(f"the run is over: {message.reason}; staying for the next one", now)
        else:
            self._start_drain(f"the master asks it to stop: {message.reason}", now)

    def _on_enrolled(self, message: Enrolled, now: float) -> None:
        if self._enroll is None:
            return  # not asked for: nothing to do
        log.info("enrolled with the master as %s (controller ids %s); connecting again", message.name, message.ids)
        self._enroll = None
        # The connection was admitted only to enroll: a new one is admitted for the key.
        self._out += [RecordEnrollment(message.name, message.ids), _DISCONNECT, _CONNECT]
        self._handshake_said = False
        self._heard_at = now
        self._send_hello(now)

    def _on_refuse(self, message: Refuse, now: float) -> None:
        if message.retry_after > 0 and self._enroll is None and self._in_use_refusals < IN_USE_TRIES:
            self._in_use_refusals += 1
            log.warning("master refused this controller for now: %s; trying again in %.1f s", message.reason,
                        message.retry_after)  # fmt: skip
            self._connected = self._welcomed = False
            self._reconnect_at = now + message.retry_after
            self._out.append(_DISCONNECT)
            return
        if self._enroll is not None:
            log.error("master refused to enroll this controller with its join token: %s", message.reason)
        else:
            log.error("master refused this controller: %s", message.reason)
        self._exit(2)

    def _heartbeat_for(self, welcome: Welcome) -> float:
        """The heartbeat interval under ``welcome``: the controller's own, or shorter when the
        master expects heartbeats more often (within :data:`WELCOME_LIMITS`)."""
        interval = self.settings.heartbeat_interval
        problems = []
        for field, (floor, ceiling) in WELCOME_LIMITS.items():
            value = getattr(welcome, field)
            if type(value) not in (int, float) or not 0 < value < math.inf:
                problems.append(f"{field}={value!r:.40} ignored (not a positive finite number)")
                continue
            if not floor <= value <= ceiling:
                problems.append(f"{field}={value:g} outside {floor:g}..{ceiling:g} s")
                value = min(max(value, floor), ceiling)
            if field == "controller_timeout":
                value /= HEARTBEATS_PER_TIMEOUT
            interval = min(interval, value)
        if problems:
            log.warning("master %s sent %s: heartbeat every %g s", welcome.master_id, ", ".join(problems), interval)
        return interval

    def _complain(self, problem: str, now: float) -> None:
        self._complaints += 1
        if now - self._complained_at >= COMPLAIN_EVERY:
            self._complained_at = now
            log.warning("ignored a bad message from the master: %s (%d so far)", problem, self._complaints)

    # -- timers ------------------------------------------------------------------------------

    def _check_master(self, now: float) -> None:
        settings = self.settings
        if self._run_over and not settings.stay:
            silent = now - self._last_heard
            if silent >= RUN_OVER_TIMEOUTS * settings.master_timeout:
                log.error(
                    "the run is over and master %s has been silent for %.1f s; exiting (%d tasks held and %d "
                    "results unacknowledged are abandoned)",
                    settings.master,
                    silent,
                    len(self._pool.jobs),
                    len(self.unacked),
                )
                self._exit(1 if self._pool.jobs or self.unacked else 0)
                return
        if not self._connected:
            if now >= self._reconnect_at:
                self._connected = True
                self._heard_at = now
                self._handshake_said = False
                self._out.append(_CONNECT)
                self._send_hello(now)
            return
        silent = now - self._heard_at
        if silent >= settings.master_timeout:
            self._reconnects += 1
            if settings.max_reconnects and self._reconnects > settings.max_reconnects:
                log.error(
                    "master %s did not answer after %d reconnects; giving up (%d tasks held and %d results "
                    "unacknowledged are abandoned)",
                    settings.master,
                    settings.max_reconnects,
                    len(self._pool.jobs),
                    len(self.unacked),
                )
                self._exit(1)
                return
            delay = _backoff(settings, self._reconnects - 1)
            if self._unreachable_since is not None:  # said already, and again at its own pace
                log.debug("master %s unreachable for %.1f s; new connection in %.1f s", settings.master, silent, delay)
            elif self._master_id is None and self._key_dir is not None:  # never heard on any socket
                log.warning(
                    "no answer from master %s: is it running, and is its key the one pinned in %s? "
                    "reconnecting in %.1f s",
                    settings.master,
                    self._key_file(PINNED_MASTER_FILE),
                    delay,
                )
            else:
                # Between runs a silent master is what a controller that stays waits through.
                log.log(
                    logging.DEBUG if self._run_over else logging.WARNING,
                    "master %s silent for %.1f s; reconnecting in %.1f s",
                    settings.master,
                    silent,
                    delay,
                )
            self._connected = self._welcomed = False
            self._reconnect_at = now + delay
            self._out.append(_DISCONNECT)
            return
        if not self._welcomed:
            return
        if now >= self._heartbeat_at:
            self._send_heartbeat(now)
        unacked = self.unacked
        if unacked and now - next(iter(unacked.values()))[1] >= self._resend_after:
            log.warning(
                "%d results unacknowledged for %.1f s; registering again", len(self.unacked), self._resend_after
            )
            self._send_hello(now)

    @property
    def _resend_after(self) -> float:
        return 2 * self.heartbeat_interval

    # -- draining ----------------------------------------------------------------------------

    def _start_drain(self, why: str, now: float) -> None:
        if self._draining:
            return
        self._draining = True
        log.info("draining (%s): %d tasks held", why, len(self._pool.jobs))
        self._out.append(_DRAIN_POOL)
        self._drain_deadline = now + self.settings.drain_timeout
        if self._welcomed:
            self._send_heartbeat(now)  # draining=True: the master sends no more tasks

    def _check_drain(self, now: float) -> None:
        if not self._draining or self.exit_code is not None:
            return
        if self._pool.jobs and not self._aborted:
            if now < self._drain_deadline:
                return
            self._aborted = True
            self._out.append(_ABORT_POOL)  # goes on at the next tick, with what the pool returned
            return
        if self._acks_deadline == math.inf:
            self._acks_deadline = now + self.settings.master_timeout
        self._flush(now)
        if self.unacked and now < self._acks_deadline:
            return
        if self.unacked:
            log.error(
                "%s with %d results the master did not acknowledge",
                "waiting for the next run" if self._stay_after_drain else "exiting",
                len(self.unacked),
            )
        self._out.append(Send(Goodbye("shutdown")))
        if self._stay_after_drain:
            self._wait_for_next_run(now)
            return
        log.info("controller %s stopped", self._hello.controller_id)
        self._exit(1 if self.unacked else 0)

    def _wait_for_next_run(self, now: float) -> None:
        """The drain after a run is over: disconnect, take tasks again, connect after a delay
        that doubles while masters say the run is over."""
        settings = self.settings
        delay = _backoff(settings, self._idle_rounds)
        log.log(
            logging.INFO if self._idle_rounds == 0 else logging.DEBUG,
            "drained; waiting for the next run (connecting again in %.1f s)",
            delay,
        )
        self._idle_rounds += 1
        self.unacked.clear()  # results of a run that is over: no master will take them
        self._fresh, self._handbacks = [], []
        self._draining = self._aborted = self._stay_after_drain = False
        self._drain_deadline = self._acks_deadline = math.inf
        self._connected = self._welcomed = False
        self._outstanding = 0
        self._reconnect_at = now + delay
        self._out += [_RESUME_POOL, _DISCONNECT]

    def _exit(self, code: int) -> None:
        self.exit_code = code
        self._out.append(Exit(code))

    # -- sending -----------------------------------------------------------------------------

    def _flush(self, now: float) -> None:
        """Send the handbacks and the results not sent yet, with the credit free now."""
        fresh = self._fresh
        if fresh:
            self._fresh = []
        if not self._welcomed:
            return  # kept: the results are sent again once welcomed, with the handbacks
        out = self._out
        if self._handbacks:
            for task_ids, reason in self._handbacks:
                out.append(Send(Handback(task_ids, reason)))
            self._handbacks.clear()
        if fresh or self._credit() > 0:
            self._send_results(fresh)

    def _send_results(self, rows: list[list[Any]]) -> None:
        credit = self._credit()
        self._outstanding += credit
        self._out.append(SendResults(rows, credit))

    def _credit(self) -> int:
        """Slots to grant now: the target less what is held and what the master may still send."""
        if self._draining:
            return 0
        credit = self.target() - len(self._pool.jobs) - self._outstanding
        return credit if credit > 0 else 0

    def _send_hello(self, now: float) -> None:
        if self._enroll is not None:  # a key the master does not know yet: enroll it first
            self._hello_at = now
            self._welcomed = False
            self._out.append(Send(Enroll(self._enroll)))
            return
        self._outstanding = 0
        credit = self._credit()
        self._outstanding = credit
        self._welcomed = False
        self._hello_at = now
        self._out.append(Send(attrs.evolve(self._hello, credit=credit)))

    def _send_heartbeat(self, now: float) -> None:
        self._heartbeat_at = now + self.heartbeat_interval
        self._out.append(Send(Heartbeat(running=self._pool.held_ids(), draining=self._draining)))

    def _take(self) -> Sequence[Effect]:
        out = self._out
        if not out:
            return _NOTHING
        self._out = []
        return out


def _backoff(settings: ControllerSettings, rounds: int) -> float:
    """The delay before a new connection after ``rounds`` in a row: ``reconnect_interval``
    doubled each round, up to ``reconnect_max`` (the exponent is capped: a controller may
    reconnect for days, and 2.0 ** 1024 overflows)."""
    return min(settings.reconnect_interval * 2.0 ** min(rounds, 64), settings.reconnect_max)


_Handler = Callable[[ControllerSession, Any, float], None]
#: The handler of each message a master sends (checked against the protocol at import); None:
#: not for a controller.  Any other message is ignored, and does not count as the master answering.
_HANDLERS: dict[type[Any], _Handler | None] = handler_table(
    "the controller",
    [Sender.MASTER],
    {
        Dispatch: ControllerSession._on_dispatch,
        Ack: ControllerSession._on_ack,
        Ping: ControllerSession._on_ping,
        Welcome: ControllerSession._on_welcome,
        Rehello: ControllerSession._on_rehello,
        Shutdown: ControllerSession._on_shutdown,
        Refuse: ControllerSession._on_refuse,
        Enrolled: ControllerSession._on_enrolled,
        StatusReply: None,  # the answers to a status client
        Submitted: None,
        Fetched: None,
    },
)
