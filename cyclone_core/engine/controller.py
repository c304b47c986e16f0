"""The controller: runs the master's tasks on a pool of worker processes.

A node runs one controller or several, each with its own id.  A controller connects a ZeroMQ
DEALER socket to the master's ROUTER, registers with Hello, and then works in one thread and
one loop that sleeps in a single poll over the master's socket and the workers' sockets:

- the tasks of each Dispatch go to the :class:`~cyclone_core.engine.workers.WorkerPool`;
- everything that ended since the last turn of the loop goes back in one Results message, with
  the credit it frees; each result is kept until the master acknowledges it, and re-sent after
  a reconnect, a Rehello, or when no Ack came for two heartbeat intervals (after a new Hello,
  which also resets the master's count of this controller's credit);
- a Heartbeat every heartbeat interval lists every task the controller holds;
- a master silent for ``master_timeout`` means reconnect: the socket is closed, and after a delay
  growing from ``reconnect_interval`` to ``reconnect_max`` a new one sends Hello again; the
  tasks keep running meanwhile.  After ``max_reconnects`` in a row (0: never) it gives up;
- Shutdown from the master, SIGTERM, SIGINT, SIGHUP or the ``stop`` event make it drain: it
  takes no new task, hands back those not started, lets the running ones finish for up to
  ``drain_timeout`` seconds (then kills them and hands them back too: they were cut short by
  the shutdown, not by a fault of their own, so no attempt is counted against them), waits up
  to ``master_timeout`` for the Acks of its results, says Goodbye and exits.  A second signal
  stops it at once.

Credit.  The controller holds about as many tasks as keep each worker busy for
:data:`HOLD_BUDGET` seconds, judged by a moving average of task durations, between
:data:`MIN_PREFETCH` and :data:`MAX_PREFETCH` tasks per worker: no-op tasks flow in windows large
enough to cover the round trip to the master, while slow tasks are not hoarded by one
controller while another idles.  The credit it grants is that target less the tasks it holds and
the credit the master has not used yet.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import signal
import socket
import threading
import time
from types import FrameType
from typing import Any

import zmq

from cyclone_core import __version__
from cyclone_core.config import ControllerSettings
from cyclone_core.engine.pidfile import PidFile
from cyclone_core.engine.protocol import (
    MAX_FRAME_BYTES,
    Ack,
    Dispatch,
    Goodbye,
    Handback,
    Heartbeat,
    Hello,
    Message,
    Ping,
    ProtocolError,
    Refuse,
    Rehello,
    Shutdown,
    TaskEnvelope,
    Welcome,
    decode,
    encode,
    encode_results,
)
from cyclone_core.engine.workers import WorkerPool
from cyclone_core.errors import ConfigError, CycloneError
from cyclone_core.plugins import get_plugins

__all__ = ("HOLD_BUDGET", "INITIAL_PREFETCH", "MAX_PREFETCH", "MIN_PREFETCH", "Controller", "run_controller")

log = logging.getLogger("cyclone.controller")

#: Tasks per worker asked for before any task has ended.
INITIAL_PREFETCH = 4
#: Tasks per worker held at least: one running and one ready, so no worker waits for the master.
MIN_PREFETCH = 2
#: Tasks per worker held at most.
MAX_PREFETCH = 64
#: Seconds of expected work per worker the controller holds.
HOLD_BUDGET = 0.25
#: Messages read from the master in one turn of the loop at most (the workers get a turn too).
_MESSAGES_PER_TURN = 256
#: Seconds between two log lines about garbage from the master.
_COMPLAIN_EVERY = 10.0
#: Longest sleep when a ``stop`` event must be watched (it cannot wake the poll).
_STOP_POLL = 0.1
#: Milliseconds the last messages (Goodbye) may take to leave when the controller exits.
_LINGER_MS = 2000


def run_controller(settings: ControllerSettings, *, stop: threading.Event | None = None) -> int:
    """Run a controller until it is told to stop; returns the process exit code.

    0: drained and said goodbye; 1: gave up on the master, lost results, or could not run
    workers; 2: refused by the master, or bad settings.  Problems are logged as one line each.
    SIGTERM, SIGINT and SIGHUP are handled when called from the main thread; ``stop`` (set
    from another thread) drains it the same way.
    """
    try:
        with PidFile(settings.pid_file) if settings.pid_file else contextlib.nullcontext():
            return Controller(settings, stop=stop).run()
    except CycloneError as exc:
        log.error("%s", exc)
        return exc.exit_code


class Controller:
    """One controller: its connection to the master, its worker pool and its results.

    :param settings: the ``[controller]`` settings.
    :param stop: drain and exit once this event is set.
    """

    def __init__(self, settings: ControllerSettings, *, stop: threading.Event | None = None) -> None:
        self.settings = settings
        self.stop = stop
        self.host = socket.gethostname()
        self.id = settings.id or f"{self.host}-{os.getpid()}"
        self.workers = settings.workers or len(os.sched_getaffinity(0))
        self.task_types = sorted(get_plugins().task_types())
        self.pool = WorkerPool(self.workers, controller_id=self.id)
        #: Result rows not acknowledged yet, by task id, with when they were last sent (oldest
        #: first).  Rows as the workers made them: the controller never builds result objects.
        self.unacked: dict[str, tuple[list[Any], float]] = {}
        self._context: zmq.Context[zmq.Socket[bytes]] | None = None
        self._socket: zmq.Socket[bytes] | None = None
        self._welcomed = False
        self._master_id: str | None = None
        self._hello_at = -math.inf
        self._heard_at = 0.0
        self._reconnects = 0
        self._reconnect_at = 0.0
        self._heartbeat_interval = settings.heartbeat_interval
        self._heartbeat_at = math.inf
        # Credit granted to the master that it has not used yet.
        self._outstanding = 0
        # Handbacks waiting for a welcomed connection: (task ids, reason).
        self._handbacks: list[tuple[list[str], str]] = []
        self._draining = False
        self._drain_deadline = math.inf
        self._acks_deadline = math.inf
        self._signals: _Signals | None = None
        self._signals_seen = 0
        self._complained_at = -math.inf
        self._garbage = 0
        self._exit: int | None = None

    # -- the loop ----------------------------------------------------------------------------

    def run(self) -> int:
        """Connect, work, drain; returns the exit code."""
        if threading.current_thread() is threading.main_thread():
            self._signals = _Signals()
        self._context = zmq.Context()
        try:
            self._open_socket(time.monotonic())  # a bad endpoint fails before any worker starts
            self.pool.start()
            self._send_hello(time.monotonic())
            log.info(
                "controller %s started: %d workers, task types %s, master %s",
                self.id,
                self.workers,
                ", ".join(self.task_types),
                self.settings.master,
            )
            while self._exit is None:
                self._turn()
            return self._exit
        finally:
            if self._signals is not None:
                self._signals.restore()
            self.pool.close()
            self._close_socket(linger_ms=_LINGER_MS)
            self._context.term()

    def _turn(self) -> None:
        items: list[tuple[Any, int]] = [*self.pool.poll_items()]
        if self._socket is not None:
            items.append((self._socket, zmq.POLLIN))
        if self._signals is not None:
            items.append((self._signals.fd, zmq.POLLIN))
        ready = zmq.zmq_poll(items, self._wait_ms(time.monotonic()))
        for item, _ in ready:
            if item is self._socket:
                self._receive()
            elif self._signals is not None and item == self._signals.fd:
                self._signals.clear()
        if self._exit is not None:
            return
        self.pool.handle(ready)
        now = time.monotonic()
        self._check_stop(now)
        self._check_master(now)
        self._check_drain(now)
        self._flush(now)

    def _wait_ms(self, now: float) -> int:
        """Milliseconds the poll may sleep: until the earliest timer, or forever (-1)."""
        due = [self._drain_deadline if self.pool.busy else self._acks_deadline]
        pool_due = self.pool.next_deadline()
        if pool_due is not None:
            due.append(pool_due)
        if self._socket is None:
            due.append(self._reconnect_at)
        else:
            due.append(self._heard_at + self.settings.master_timeout)
            if self._welcomed:
                due.append(self._heartbeat_at)
                if self.unacked:
                    due.append(self._oldest_unacked() + self._resend_after)
        if self.stop is not None:
            due.append(now + _STOP_POLL)
        wake = min(due)
        if wake == math.inf:
            return -1
        return max(0, math.ceil((wake - now) * 1000))

    @property
    def _resend_after(self) -> float:
        return 2 * self._heartbeat_interval

    def _oldest_unacked(self) -> float:
        return next(iter(self.unacked.values()))[1]

    # -- the master's messages ---------------------------------------------------------------

    def _receive(self) -> None:
        sock = self._socket
        assert sock is not None
        for _ in range(_MESSAGES_PER_TURN):
            try:
                frames = sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            if len(frames) != 1:
                self._complain(f"a message of {len(frames)} frames instead of one")
                continue
            try:
                message = decode(frames[0])
            except ProtocolError as exc:
                self._complain(str(exc))
                continue
            now = time.monotonic()
            self._heard_at = now
            self._reconnects = 0
            self._on_message(message, now)
            if self._socket is not sock or self._exit is not None:
                return

    def _on_message(self, message: Message, now: float) -> None:
        if type(message) is Dispatch:
            self._on_dispatch(message.tasks)
        elif type(message) is Ack:
            unacked = self.unacked
            for task_id in message.task_ids:
                unacked.pop(task_id, None)
        elif type(message) is Ping:
            pass
        elif type(message) is Welcome:
            self._on_welcome(message, now)
        elif type(message) is Rehello:
            # Several may arrive for messages sent before the Hello; one Hello answers them.
            if self._welcomed or now - self._hello_at >= self._heartbeat_interval:
                log.info("the master asks this controller to register again: %s", message.reason)
                self._send_hello(now)
        elif type(message) is Shutdown:
            self._start_drain(f"the master asks it to stop: {message.reason}", now)
        elif type(message) is Refuse:
            log.error("master refused this controller: %s", message.reason)
            self._exit = 2
        else:
            self._complain(f"unexpected {message.tag} message")

    def _on_dispatch(self, tasks: list[TaskEnvelope]) -> None:
        self._outstanding = max(0, self._outstanding - len(tasks))
        if self._draining:
            self._handbacks.append(([task.id for task in tasks], "draining"))
            return
        duplicates = self.pool.submit(tasks)
        if duplicates:
            log.debug("ignored %d tasks dispatched again while held: %s", len(duplicates), duplicates[0].id)

    def _on_welcome(self, welcome: Welcome, now: float) -> None:
        again = self._master_id is not None
        self._welcomed = True
        self._master_id = welcome.master_id
        # A master expecting heartbeats more often than configured gets them as often.
        if welcome.heartbeat_interval > 0:
            self._heartbeat_interval = min(self.settings.heartbeat_interval, welcome.heartbeat_interval)
        log.info(
            "%s with master %s (run %s)",
            "registered again" if again else "registered",
            welcome.master_id,
            welcome.run_id,
        )
        self._send_heartbeat(now)
        if self.unacked:
            log.info("re-sending %d unacknowledged results", len(self.unacked))
            rows = [row for row, _ in self.unacked.values()]
            self.unacked = {row[0]: (row, now) for row in rows}
            self._send_results(rows)

    def _complain(self, problem: str) -> None:
        """Garbage from the master's address: counted and logged now and then, never fatal."""
        self._garbage += 1
        now = time.monotonic()
        if now - self._complained_at >= _COMPLAIN_EVERY:
            self._complained_at = now
            log.warning("ignored a bad message from the master: %s (%d so far)", problem, self._garbage)

    # -- timers ------------------------------------------------------------------------------

    def _check_stop(self, now: float) -> None:
        signals = self._signals.count if self._signals is not None else 0
        if signals > self._signals_seen:
            self._signals_seen = signals
            if self._draining:
                log.warning("signal received again: stopping now")
                self._stop_now(now)
            else:
                self._start_drain("signal received", now)
        if self.stop is not None and self.stop.is_set():
            self._start_drain("asked to stop", now)

    def _check_master(self, now: float) -> None:
        settings = self.settings
        if self._socket is None:
            if now >= self._reconnect_at:
                self._open_socket(now)
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
                    len(self.pool.state.jobs),
                    len(self.unacked),
                )
                self._exit = 1
                return
            delay = min(settings.reconnect_interval * 2 ** (self._reconnects - 1), settings.reconnect_max)
            log.warning("master %s silent for %.1f s; reconnecting in %.1f s", settings.master, silent, delay)
            self._close_socket()
            self._reconnect_at = now + delay
            return
        if not self._welcomed:
            return
        if now >= self._heartbeat_at:
            self._send_heartbeat(now)
        if self.unacked and now - self._oldest_unacked() >= self._resend_after:
            # A lost message: register again (which also resets the master's count of this
            # controller's credit, should a lost Results have carried some), then re-send.
            log.warning(
                "%d results unacknowledged for %.1f s; registering again", len(self.unacked), self._resend_after
            )
            self._send_hello(now)

    # -- draining ----------------------------------------------------------------------------

    def _start_drain(self, why: str, now: float) -> None:
        if self._draining:
            return
        self._draining = True
        log.info("draining (%s): %d tasks held", why, len(self.pool.state.jobs))
        self.pool.drain()
        self._drain_deadline = now + self.settings.drain_timeout
        if self._welcomed:
            self._send_heartbeat(now)  # draining=True: the master sends no more tasks

    def _stop_now(self, now: float) -> None:
        self._drain_deadline = now
        self._acks_deadline = now
        self._check_drain(now)

    def _check_drain(self, now: float) -> None:
        if not self._draining or self._exit is not None:
            return
        if self.pool.busy:
            if now < self._drain_deadline:
                return
            killed = self.pool.abort()
            if killed:
                timeout = self.settings.drain_timeout
                log.warning("drain timeout: killed %d running tasks and handing them back", len(killed))
                self._handbacks.append((killed, f"killed when the controller stopped (drain timeout {timeout} s)"))
        if self._acks_deadline == math.inf:
            self._acks_deadline = now + self.settings.master_timeout
        self._flush(now)
        if self.unacked and now < self._acks_deadline:
            return
        if self.unacked:
            log.error("exiting with %d results the master did not acknowledge", len(self.unacked))
        self._send(Goodbye("shutdown"))
        log.info("controller %s stopped", self.id)
        self._exit = 1 if self.unacked else 0

    # -- sending -----------------------------------------------------------------------------

    def _flush(self, now: float) -> None:
        """Send what the pool produced: handbacks, then results with the credit they free."""
        pool = self.pool
        if pool.handed_back:
            self._handbacks.append((pool.handed_back, "draining"))
            pool.handed_back = []
        fresh = pool.results
        if fresh:
            pool.results = []
            unacked = self.unacked
            for row in fresh:
                unacked[row[0]] = (row, now)
        if not self._welcomed:
            return  # kept: sent once welcomed
        for task_ids, reason in self._handbacks:
            self._send(Handback(task_ids, reason))
        self._handbacks.clear()
        if fresh or self._credit() > 0:
            self._send_results(fresh)

    def _send_results(self, rows: list[list[Any]]) -> None:
        """Send the result ``rows`` with the credit free now, in one message or, should that
        exceed the frame limit, in halves."""
        credit = self._credit()
        self._outstanding += credit
        self._send_frames(rows, credit)

    def _send_frames(self, rows: list[list[Any]], credit: int) -> None:
        frame = encode_results(rows, credit)
        if len(frame) > MAX_FRAME_BYTES and len(rows) > 1:
            half = len(rows) // 2
            self._send_frames(rows[:half], credit)
            self._send_frames(rows[half:], 0)
        else:
            self._send_frame(frame, "results")

    def _credit(self) -> int:
        """Slots to grant now: the target less what is held and what the master may still send."""
        if self._draining:
            return 0
        mean = self.pool.state.mean_duration
        if mean is None:
            per_worker = INITIAL_PREFETCH
        else:
            per_worker = max(MIN_PREFETCH, min(MAX_PREFETCH, int(HOLD_BUDGET / max(mean, 1e-9))))
        return max(0, self.workers * per_worker - len(self.pool.state.jobs) - self._outstanding)

    def _send_hello(self, now: float) -> None:
        self._outstanding = 0
        credit = self._credit()
        self._outstanding = credit
        self._welcomed = False
        self._hello_at = now
        self._send(
            Hello(
                controller_id=self.id,
                host=self.host,
                pid=os.getpid(),
                workers=self.workers,
                credit=credit,
                task_types=self.task_types,
                version=__version__,
            )
        )

    def _send_heartbeat(self, now: float) -> None:
        self._heartbeat_at = now + self._heartbeat_interval
        self._send(Heartbeat(running=self.pool.held_ids(), draining=self._draining))

    def _send(self, message: Message) -> None:
        self._send_frame(encode(message), message.tag)

    def _send_frame(self, frame: bytes, tag: str) -> None:
        if self._socket is None:
            return
        try:
            self._socket.send(frame, zmq.NOBLOCK)
        except zmq.Again:
            # The queue to an unreachable master is full; what matters is re-sent later.
            log.debug("dropped a %s message: the master is not taking messages", tag)

    # -- the socket --------------------------------------------------------------------------

    def _open_socket(self, now: float) -> None:
        assert self._context is not None
        sock = self._context.socket(zmq.DEALER)
        sock.setsockopt(zmq.ROUTING_ID, self.id.encode())
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.MAXMSGSIZE, MAX_FRAME_BYTES)
        try:
            sock.connect(self.settings.master)
        except zmq.ZMQError as exc:
            sock.close()
            problem = zmq.strerror(exc.errno) if exc.errno else str(exc)
            raise ConfigError(f"controller.master: cannot connect to {self.settings.master!r}: {problem}") from None
        self._socket = sock
        self._heard_at = now

    def _close_socket(self, linger_ms: int = 0) -> None:
        if self._socket is not None:
            self._socket.close(linger=linger_ms)
            self._socket = None
        self._welcomed = False


class _Signals:
    """Counts SIGTERM, SIGINT and SIGHUP, and wakes the loop's poll through a pipe."""

    _HANDLED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)

    def __init__(self) -> None:
        self.count = 0
        self.fd, self._write_fd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._previous = {signum: signal.signal(signum, self._handle) for signum in self._HANDLED}
        self._previous_wakeup = signal.set_wakeup_fd(self._write_fd)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.count += 1

    def clear(self) -> None:
        """Empty the wake-up pipe."""
        with contextlib.suppress(BlockingIOError):
            while os.read(self.fd, 512):
                pass

    def restore(self) -> None:
        """Put the previous handlers back."""
        signal.set_wakeup_fd(self._previous_wakeup)
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        os.close(self.fd)
        os.close(self._write_fd)
