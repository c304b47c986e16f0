"""The controller: runs the master's tasks on a pool of worker processes.

A node runs one controller or several, each with its own id.  A controller connects a ZeroMQ
DEALER socket to the master's ROUTER, registers with Hello, and then works in one thread and
one loop that sleeps in a single poll over the master's socket, the workers' sockets and a
signal pipe.  Every decision is the :class:`~cyclone_core.engine.controller_session.ControllerSession`'s
(credit, results kept until acknowledged, reconnects with backoff, Rehello, drain, exit codes,
distrust of the master; see there): this loop only moves messages, results, signals and time
into it and carries out its effects:

- the tasks of each accepted Dispatch go to the :class:`~cyclone_core.engine.workers.WorkerPool`;
- everything that ended since the last turn of the loop goes back in one Results message, with
  the credit it frees, split in halves should the frame exceed :data:`MAX_FRAME_BYTES`;
- SIGTERM, SIGINT, SIGHUP and the ``stop`` event make it drain; a second signal stops it at once;
- a master silent for ``master_timeout`` means a new socket, after a growing delay.

The socket is a CURVE client (:mod:`~cyclone_core.engine.curve`): the master's key pinned in
the key directory, the controller's own keypair, and a join token's enrollment first when one
is given.  A handshake that fails is seen on the socket's monitor and told to the session.
``controller.insecure`` connects in plaintext instead, and says so.
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
from collections.abc import Callable, Sequence
from types import FrameType
from typing import Any

import zmq
from zmq.utils.monitor import recv_monitor_message

from cyclone_core import __version__
from cyclone_core.config import ControllerSettings, controller_task_types
from cyclone_core.engine.controller_session import (
    HOLD_BUDGET,
    INITIAL_PREFETCH,
    MAX_PREFETCH,
    MIN_PREFETCH,
    AbortPool,
    Connect,
    ControllerSession,
    Disconnect,
    DrainPool,
    Effect,
    Exit,
    RecordEnrollment,
    ResumePool,
    Send,
    SendResults,
    Submit,
)
from cyclone_core.engine.curve import ControllerKeys, controller_keys, private_ipc
from cyclone_core.engine.pidfile import PidFile
from cyclone_core.engine.protocol import MAX_FRAME_BYTES, Hello, ProtocolError, decode, encode, encode_results
from cyclone_core.engine.sdnotify import SystemdNotifier
from cyclone_core.engine.workers import WorkerPool
from cyclone_core.errors import ConfigError, CycloneError
from cyclone_core.plural import plural

__all__ = ("HOLD_BUDGET", "INITIAL_PREFETCH", "MAX_PREFETCH", "MIN_PREFETCH", "Controller", "run_controller")

log = logging.getLogger("cyclone.controller")

#: Messages read from the master in one turn of the loop at most (the workers get a turn too).
_MESSAGES_PER_TURN = 256
#: Longest sleep when a ``stop`` event must be watched (it cannot wake the poll).
_STOP_POLL = 0.1
#: Milliseconds the last messages (Goodbye) may take to leave when the controller exits.
_LINGER_MS = 2000
#: Handshake failures the socket's monitor reports, and whether each means the key was refused.
_HANDSHAKE_EVENTS: dict[int, bool] = {
    zmq.EVENT_HANDSHAKE_FAILED_AUTH: True,
    zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL: False,
    zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL: False,
}


def run_controller(settings: ControllerSettings, *, stop: threading.Event | None = None) -> int:
    """Run a controller until it is told to stop; returns the process exit code.

    0: drained and said goodbye; 1: gave up on the master, lost results, or could not run
    workers; 2: refused by the master (its key, its enrollment), or bad settings or keys.
    Problems are logged as one line each.
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
    """One controller: its socket to the master, its worker pool, its signals, and the
    :class:`~cyclone_core.engine.controller_session.ControllerSession` that decides.

    :param settings: the ``[controller]`` settings.
    :param stop: drain and exit once this event is set.
    """

    def __init__(self, settings: ControllerSettings, *, stop: threading.Event | None = None) -> None:
        self.settings = settings
        self.stop = stop
        self.host = socket.gethostname()
        self.id = settings.id or f"{self.host}-{os.getpid()}"
        self._connections = 0  # sockets opened so far (each has a routing id of its own)
        self.workers = settings.workers or len(os.sched_getaffinity(0))
        # Only the types it is configured to run, their local settings checked: a mistake ends
        # the start with one line.
        self.task_types = controller_task_types(settings)
        self.pool = WorkerPool(self.workers, controller_id=self.id, task_types=self.task_types, local=settings.local)
        hello = Hello(
            controller_id=self.id,
            host=self.host,
            pid=os.getpid(),
            workers=self.workers,
            credit=0,
            task_types=self.task_types,
            version=__version__,
        )
        #: The socket's keys, and the enrollment due (``None``: plaintext).
        self.keys: ControllerKeys | None = None
        if settings.insecure:
            if settings.token:
                raise ConfigError("controller.token needs keys: it cannot be used with controller.insecure = true")
        else:
            self.keys = controller_keys(settings)
        self.session = ControllerSession(
            settings,
            hello,
            self.pool.state,
            enroll=self.keys.enroll if self.keys else None,
            key_dir=self.keys.client.directory if self.keys else None,
        )
        self._context: zmq.Context[zmq.Socket[bytes]] | None = None
        self._socket: zmq.Socket[bytes] | None = None
        self._monitor: zmq.Socket[bytes] | None = None
        self._sockets_opened = 0
        self._signals: _Signals | None = None
        self._signals_seen = 0
        self._exit: int | None = None
        #: systemd's notifications (``Type=notify`` units), taken from the environment in :meth:`run`.
        self._notify = SystemdNotifier({})
        self._registered = False  # once registered, a lost master is "reconnecting"
        self._carry_out: dict[type[Any], Callable[[Any, float], None]] = {
            Send: self._do_send,
            SendResults: self._do_send_results,
            Submit: self._do_submit,
            Connect: self._do_connect,
            Disconnect: self._do_disconnect,
            DrainPool: self._do_drain,
            ResumePool: self._do_resume,
            AbortPool: self._do_abort,
            Exit: self._do_exit,
            RecordEnrollment: self._do_record_enrollment,
        }

    # -- the loop ----------------------------------------------------------------------------

    def run(self) -> int:
        """Connect, work, drain; returns the exit code."""
        if threading.current_thread() is threading.main_thread():
            self._signals = _Signals()
        self._context = zmq.Context()
        try:
            self._open_socket()  # a bad endpoint fails before any worker starts
            if self.keys is None and not private_ipc(self.settings.master):
                log.warning(
                    "controller.insecure: connecting to %s in plaintext, without keys; anyone on the network "
                    "can read this controller's tasks and results and pose as its master",
                    self.settings.master,
                )
            self._notify = SystemdNotifier(unset=True)  # before the workers start: not theirs
            self.pool.start()
            self._apply(self.session.start(time.monotonic()), time.monotonic())
            # Ready once it works on its own: it may start long before its master (a unit
            # waiting for registration would fail its start); STATUS= says when it registers.
            self._notify.ready(self._status_line(), time.monotonic())
            log.info(
                "controller %s started: %s, task types %s, master %s",
                self.id,
                plural(self.workers, "worker"),
                ", ".join(self.task_types),
                self.settings.master,
            )
            while self._exit is None:
                self._turn()
            return self._exit
        finally:
            self._notify.close()
            if self._signals is not None:
                self._signals.restore()
            self.pool.close()
            self._close_socket(linger_ms=_LINGER_MS)
            self._context.term()

    def _turn(self) -> None:
        pool, session = self.pool, self.session
        items: list[tuple[Any, int]] = [*pool.poll_items()]
        if self._socket is not None:
            items.append((self._socket, zmq.POLLIN))
        if self._monitor is not None:
            items.append((self._monitor, zmq.POLLIN))
        if self._signals is not None:
            items.append((self._signals.fd, zmq.POLLIN))
        ready = zmq.zmq_poll(items, self._wait_ms(time.monotonic()))
        for item, _ in ready:
            if item is self._socket:
                self._receive()
            elif item is self._monitor:
                self._handshakes()
            elif self._signals is not None and item == self._signals.fd:
                self._signals.clear()
        if self._exit is not None:
            return
        pool.handle(ready)
        now = time.monotonic()
        self._check_stop(now)
        results, handed_back = pool.results, pool.handed_back
        if results or handed_back:
            pool.results, pool.handed_back = [], []
            session.produced(results, handed_back, now)
        self._apply(session.tick(now), now)
        self._notify.tick(now, self._status_line, stopping=self._stopping())

    def _stopping(self) -> bool:
        """Draining to exit (not, with ``stay``, at the end of a run to wait for the next)."""
        told = self._signals_seen > 0 or (self.stop is not None and self.stop.is_set())
        return self.session.draining and (told or not self.settings.stay)

    def _status_line(self) -> str:
        """The state in one line, for systemd's ``STATUS=``."""
        master = self.settings.master
        if self.session.draining:
            return f"draining: {plural(len(self.pool.held_ids()), 'task')} held, master {master}"
        if self.session.welcomed:
            self._registered = True
            running = len(self.pool.running_ids())
            return f"registered with {master}: {plural(self.workers, 'worker')}, {running:,} running"
        return f"{'reconnecting' if self._registered else 'connecting'} to {master}"

    def _wait_ms(self, now: float) -> int:
        """Milliseconds the poll may sleep: until the earliest timer, or forever (-1)."""
        wake = self.session.deadline()
        pool_due = self.pool.next_deadline()
        if pool_due is not None:
            wake = min(wake, pool_due)
        if self.stop is not None:
            wake = min(wake, now + _STOP_POLL)
        wake = min(wake, self._notify.deadline())  # the watchdog's pings
        if wake == math.inf:
            return -1
        return 0 if wake <= now else math.ceil((wake - now) * 1000)

    def _receive(self) -> None:
        sock = self._socket
        assert sock is not None
        session = self.session
        for _ in range(_MESSAGES_PER_TURN):
            try:
                frames = sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            now = time.monotonic()
            if len(frames) != 1:
                session.bad_frame(f"a message of {len(frames)} frames instead of one", now)
                continue
            try:
                message = decode(frames[0])
            except ProtocolError as exc:
                session.bad_frame(str(exc), now)
                continue
            self._apply(session.receive(message, now), now)
            if self._socket is not sock or self._exit is not None:
                return

    def _handshakes(self) -> None:
        """Tell the session of the handshakes and connections that failed, as the socket's
        monitor reports them."""
        monitor = self._monitor
        while monitor is not None and self._exit is None:
            try:
                event = recv_monitor_message(monitor, zmq.NOBLOCK)
            except zmq.Again:
                return
            kind = int(event["event"])
            refused = _HANDSHAKE_EVENTS.get(kind)
            now = time.monotonic()
            if refused is not None:
                self._apply(self.session.handshake_failed(refused, now), now)
            elif kind == zmq.EVENT_CONNECT_RETRIED:
                self._apply(self.session.unreachable(now), now)
            monitor = self._monitor  # an effect may have closed it

    def _check_stop(self, now: float) -> None:
        signals = self._signals.count if self._signals is not None else 0
        while self._signals_seen < signals and self._exit is None:
            self._signals_seen += 1
            self._apply(self.session.signal(now), now)
        if self.stop is not None and self.stop.is_set() and self._exit is None:
            self._apply(self.session.stop_requested(now), now)

    # -- carrying out the session's effects --------------------------------------------------

    def _apply(self, effects: Sequence[Effect], now: float) -> None:
        carry_out = self._carry_out
        for effect in effects:
            carry_out[type(effect)](effect, now)

    def _do_send(self, effect: Send, now: float) -> None:
        self._send_frame(encode(effect.message), effect.message.tag)

    def _do_send_results(self, effect: SendResults, now: float) -> None:
        self._send_results(effect.rows, effect.credit)

    def _send_results(self, rows: list[list[Any]], credit: int) -> None:
        """One Results message or, should that exceed the frame limit, halves (the first with
        the credit)."""
        frame = encode_results(rows, credit)
        if len(frame) > MAX_FRAME_BYTES and len(rows) > 1:
            half = len(rows) // 2
            self._send_results(rows[:half], credit)
            self._send_results(rows[half:], 0)
        else:
            self._send_frame(frame, "results")

    def _do_submit(self, effect: Submit, now: float) -> None:
        duplicates = self.pool.submit(effect.tasks)
        if duplicates:
            log.debug("ignored %d tasks dispatched again while held: %s", len(duplicates), duplicates[0].id)

    def _do_connect(self, effect: Connect, now: float) -> None:
        self._open_socket()

    def _do_disconnect(self, effect: Disconnect, now: float) -> None:
        self._close_socket()

    def _do_drain(self, effect: DrainPool, now: float) -> None:
        self.pool.drain()

    def _do_resume(self, effect: ResumePool, now: float) -> None:
        self.pool.resume()

    def _do_abort(self, effect: AbortPool, now: float) -> None:
        self.session.aborted(self.pool.abort(), now)

    def _do_exit(self, effect: Exit, now: float) -> None:
        self._exit = effect.code

    def _do_record_enrollment(self, effect: RecordEnrollment, now: float) -> None:
        assert self.keys is not None
        try:
            path = self.keys.record_enrollment(effect.name, effect.ids)
        except OSError as exc:  # enrolled all the same; only a restart with the token would try again
            log.warning("could not record the enrollment in %s: %s", self.keys.client.directory, exc.strerror)
        else:
            log.info("recorded the enrollment in %s: the token is not needed any more", path)

    # -- the socket --------------------------------------------------------------------------

    def _send_frame(self, frame: bytes, tag: str) -> None:
        if self._socket is None:
            return
        try:
            self._socket.send(frame, zmq.NOBLOCK)
        except zmq.Again:
            # The queue to an unreachable master is full; what matters is re-sent later.
            log.debug("dropped a %s message: the master is not taking messages", tag)

    def _open_socket(self) -> None:
        assert self._context is not None
        sock = self._context.socket(zmq.DEALER)
        # A routing id of its own for each connection: the master turns away a connection under
        # a routing id it still has (no handover), and may still have the last one for a while
        # (a half-open TCP connection); the controller id travels in Hello.
        self._connections += 1
        sock.setsockopt(zmq.ROUTING_ID, f"{self.id}.{self._connections}".encode())
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.MAXMSGSIZE, MAX_FRAME_BYTES)
        if self.keys is not None:
            self.keys.client.apply(sock)
        self._sockets_opened += 1
        events = zmq.EVENT_CONNECT_RETRIED
        for event in _HANDSHAKE_EVENTS:
            events |= event
        address = f"inproc://cyclone-controller-monitor-{self._sockets_opened}"
        self._monitor = sock.get_monitor_socket(events, address)
        try:
            sock.connect(self.settings.master)
        except zmq.ZMQError as exc:
            self._socket = sock
            self._close_socket()
            problem = zmq.strerror(exc.errno) if exc.errno else str(exc)
            raise ConfigError(f"controller.master: cannot connect to {self.settings.master!r}: {problem}") from None
        self._socket = sock

    def _close_socket(self, linger_ms: int = 0) -> None:
        if self._socket is not None:
            if self._monitor is not None:
                self._socket.disable_monitor()
                self._monitor.close(linger=0)
                self._monitor = None
            self._socket.close(linger=linger_ms)
            self._socket = None


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
