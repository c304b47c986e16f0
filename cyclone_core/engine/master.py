"""The master: a thin ZeroMQ ROUTER loop around the :class:`~cyclone_core.engine.master_core.MasterCore`.

Every decision — registration and identities, scheduling and leases, retries, when to pull
the generator, the phases of stopping — is the core's, which is pure.  This loop owns what
the core must not: the socket, the journal, the generator (a plugin's code), the delivery
threads and the clock.  Each turn receives every waiting frame (up to a bound) and hands it to
the core, lets time pass, tops the window up from the generator, then applies the core's
effects: journal the turn in one transaction, and only then send what depends on it
(acknowledgements, dispatches, pings); terminal results then go to the generator's
``on_result`` and the ``cyclone_results`` hook, and the delivery threads are woken.

Attached clients (:class:`cyclone_core.api.Client`, with an admin key) submit tasks to a
generator that takes them (``queue``) and fetch results from a ring of the latest ones, kept
in memory only while a client may want them: with such a generator, or once a client asked.
A master that a client fetches from waits, when stopping, until the client has all results
(at most ``delivery_timeout``).

Stopping (:meth:`Master.request_stop`, or a finite generator whose tasks have all settled):
no more dispatches, Shutdown to every controller, then results, handbacks and goodbyes are
taken in for at most ``drain_timeout`` seconds; the journal is flushed, and the sinks get at
most ``delivery_timeout`` seconds to catch up.
"""

from __future__ import annotations

import base64
import binascii
import ctypes
import gc
import itertools
import logging
import math
import os
import re
import shutil
import socket
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import msgpack
import zmq
import zmq.utils.monitor
from zmq.utils import z85

from cyclone_core import keys
from cyclone_core.convert import structure, unstructure
from cyclone_core.dashboard.server import Dashboard
from cyclone_core.engine import protocol, tempdirs
from cyclone_core.engine.curve import private_ipc
from cyclone_core.engine.delivery import SinkDelivery, check_sinks, dead_letter_status
from cyclone_core.engine.journal import Journal, JournalHealth, JournalWriteError
from cyclone_core.engine.master_core import Effects, EnrollRequest, MasterCore, Phase, peer_name
from cyclone_core.engine.metrics import MetricsServer
from cyclone_core.engine.protocol import Enrolled, Fetch, Fetched, Refuse, StatusReply, Submit, Submitted
from cyclone_core.engine.scheduler import LostController, Scheduler, TaskRecord
from cyclone_core.engine.sdnotify import SystemdNotifier
from cyclone_core.errors import ConfigError, CycloneError, one_line_error
from cyclone_core.model import Result, ResultSink, Status, Task, TaskGenerator, TaskSpec
from cyclone_core.plugins import Plugins, get_plugins
from cyclone_core.plural import plural
from cyclone_core.settings import MasterSettings

__all__ = ("Master",)

log = logging.getLogger("cyclone.master")


def _heap_trimmer() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim``, if this is glibc."""
    try:
        return ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return None


#: Called after each compaction: the memory of the results and messages freed since goes back
#: to the system instead of staying in the allocator's free lists (which otherwise grow slowly
#: with the run, a few bytes a task).
_trim_heap = _heap_trimmer()

#: Frames handled per loop turn at most, so timers and commits keep their pace under load.
_MAX_FRAMES_PER_TURN = 2000
#: Longest poll: timers (heartbeats, leases, stopping) are checked at least this often.
_MAX_POLL = 0.05
#: Seconds between status/metrics refreshes, and between journal compactions at the latest.
_HOUSEKEEPING_EVERY = 1.0
_COMPACT_EVERY = 10.0
#: Seconds of history behind ``tasks_per_second``.
_RATE_WINDOW = 10.0
#: Where libzmq asks for the authentication of every new connection (RFC 27, ZAP).
_ZAP_ENDPOINT = "inproc://zeromq.zap.01"
#: Messages queued to and from one peer at most: a peer that does not read loses messages
#: (heartbeats and re-sent results reconcile them) rather than growing the master's memory.  A
#: live controller gets at most a Dispatch and an Ack per turn of the loop.
_PEER_QUEUE = 100
#: Monitor events of connections that failed their handshake before ZAP (which counts its own).
_HANDSHAKE_FAILED = zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
#: Enrollments handled per loop turn at most (each reads and writes the key files).
_ENROLLMENTS_PER_TURN = 8
#: Latest terminal results kept for attached clients at most.
_RING_SIZE = 100_000
#: Bytes of results in one Fetched reply, roughly (one result alone may be larger).
_FETCH_BYTES = 8 * 1024 * 1024
#: Characters of a Refuse's reason at most (the protocol's bound, with room to spare).
_REASON_CHARS = 1000
#: Lost controllers the status remembers at most (the latest; one that comes back is forgotten).
_LOST_KEPT = 1000

_pack = msgpack.Packer().pack


class _GeneratorFailed(Exception):
    """The generator's own code raised (the one-line reason is the message)."""


class Master:
    """One master: binds ``settings.bind``, pulls ``generator``, delivers to ``sinks``.

    :param settings: the ``[master]`` settings (journal, bind, metrics port, budgets ...).
    :param generator: where tasks come from.
    :param sinks: where terminal results go (each from its own delivery thread).
    :param plugins: the plugin registry (task types the master accepts, lifecycle hooks).
    :param drain_timeout: seconds to wait for controllers when stopping.
    :param delivery_timeout: seconds the sinks get to catch up when stopping.
    :param progress: called from the loop about five times a second with :meth:`status`.

    Call :meth:`open` (binds, resumes the journal, starts delivery), then :meth:`run`, then
    :meth:`close`; or use it as a context manager around :meth:`run`.
    """

    def __init__(
        self,
        settings: MasterSettings,
        generator: TaskGenerator,
        sinks: Sequence[ResultSink],
        *,
        plugins: Plugins | None = None,
        drain_timeout: float = 60.0,
        delivery_timeout: float = 30.0,
        progress: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self.settings = settings
        self.generator = generator
        self.sinks = list(sinks)
        self.plugins = plugins or get_plugins()
        self.drain_timeout = drain_timeout
        self.delivery_timeout = delivery_timeout
        self.progress = progress
        #: Unique per master process: controllers see a restart by a new id.
        self.master_id = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        #: The endpoint actually bound (``tcp://127.0.0.1:*`` gets its port here).
        self.endpoint = ""
        self.journal: Journal | None = None
        self.core: MasterCore | None = None
        self.deliveries: list[SinkDelivery] = []
        self.metrics: MetricsServer | None = None
        #: The web dashboard, with ``http_port`` (docs/dashboard.md).
        self.dashboard: Dashboard | None = None
        #: Why the generator stopped early, if it failed.
        self.generator_error: str | None = None
        #: Results left undelivered in the journal when the master stopped.
        self.undelivered = 0
        #: The run's id (from the journal), once open.
        self.run_id = ""
        self.started_at = 0.0
        self.finished_at = 0.0
        self._temp_dir: str | None = None
        self._context: zmq.Context[zmq.Socket[bytes]] | None = None
        self._sock: zmq.Socket[bytes] | None = None
        self._tasks: Iterator[Task | TaskSpec | None] | None = None
        self._seq = 0
        self._total: int | None = None
        self._stop_requests = 0
        self._stops_seen = 0
        self._rates: deque[tuple[float, int]] = deque()
        self._callback_errors = 0
        self._next_housekeeping = self._next_progress = self._next_compaction = 0.0
        self._key_dir: Path | None = None
        self._allowlist: keys.Allowlist | None = None
        self._zap: zmq.Socket[bytes] | None = None
        self._monitor: zmq.Socket[bytes] | None = None
        self._enrolling = False
        #: The latest terminal results, for attached clients (``None``: nobody asked).
        self._ring: deque[Result] | None = None
        self._fetched = False  # a client fetched results
        self._caught_up = False  # a client was told it has every result
        #: Whether the journal takes writes, and the free space under it, once open.
        self.journal_health: JournalHealth | None = None
        self._unjournaled: list[Result] = []  # terminal results waiting for a journal that takes writes
        #: systemd's notifications (``Type=notify`` units), taken from the environment in :meth:`open`.
        self._notify = SystemdNotifier({})
        #: The controllers lost (not left) since they registered, for the status.
        self._lost: dict[str, dict[str, Any]] = {}

    @property
    def scheduler(self) -> Scheduler | None:
        """The core's scheduler (its counters and window), once open."""
        return self.core.scheduler if self.core is not None else None

    @property
    def interrupted(self) -> bool:
        """Whether the run stopped before its generator was done (a stop request)."""
        return self.core is not None and self.core.interrupted

    @property
    def protocol_errors(self) -> int:
        """Frames that were not valid messages."""
        return self.core.protocol_errors if self.core is not None else 0

    # -- life cycle ------------------------------------------------------------------------

    def open(self) -> str:
        """Check the sinks, open the journal (resuming it), bind, start delivery and metrics;
        returns the endpoint bound."""
        try:
            self._open()
        except BaseException:
            self.close()
            raise
        return self.endpoint

    def _open(self) -> None:
        settings = self.settings
        check_sinks(self.sinks)  # a sink that cannot work at all stops the master before the run
        path = settings.journal
        if not path:
            self._temp_dir = tempdirs.make("journal")
            path = os.path.join(self._temp_dir, "journal.sqlite")
        self.journal = journal = Journal(path)
        self.journal_health = JournalHealth(journal.path, settings.journal_min_free_mb)
        self.run_id = journal.run_id
        resuming = not journal.fresh
        gen_type = type(self.generator)
        journal.bind_run(self.generator.name, unstructure(self.generator), deterministic=gen_type.deterministic)
        pair = self._load_keys()
        self.core = core = MasterCore(
            settings,
            master_id=self.master_id,
            run_id=journal.run_id,
            known_types=self.plugins.task_types(),
            wall_offset=time.time() - time.monotonic(),
            drain_timeout=self.drain_timeout,
            delivery_timeout=self.delivery_timeout,
            grants=self._allowlist.lookup if self._allowlist is not None else None,
            master_key=pair.public if pair is not None else None,
            resumed=resuming,
        )
        self._tasks = iter(self.generator.tasks())
        if hasattr(self.generator, "accept"):  # its tasks come from clients: they want results
            self._ring = deque(maxlen=_RING_SIZE)
        self._total = self._generator_total()
        self._seq = journal.high_water
        if resuming:
            pending = journal.pending()
            core.resume(pending)
            skipped = self._fast_forward(journal.high_water) if gen_type.deterministic else 0
            log.info(
                "resuming run %s from %s: %d tasks back in the queue%s",
                journal.run_id,
                journal.path,
                len(pending),
                f", generator fast-forwarded past {skipped} tasks" if skipped else "",
            )
        self._sock = sock = self._bind(pair)
        self.endpoint = sock.getsockopt_string(zmq.LAST_ENDPOINT)
        journal.register_sinks([s.name for s in self.sinks])
        for sink in self.sinks:
            delivery = SinkDelivery(sink, journal)
            delivery.start()
            self.deliveries.append(delivery)
        if settings.metrics_port:
            self.metrics = MetricsServer(settings.metrics_port, settings.metrics_bind)
            self.metrics.publish(self.status(), core.scheduler.stats.duration)
        if settings.http_port:
            self.dashboard = Dashboard(
                settings.http_port,
                settings.http_bind,
                panels=self.plugins.dashboard_panels(),
                token_file=settings.http_token_file,
            )
            # Its state hears of results and departed controllers through the lifecycle hooks.
            self.plugins.register(self.dashboard.state, name=f"cyclone-dashboard-{id(self.dashboard)}")
            self.dashboard.publish(self.status(), core.scheduler.stats.latency)
            log.info("dashboard at %s", self.dashboard.url)
        log.info("master %s listening on %s (run %s)", self.master_id, self.endpoint, journal.run_id)
        # Taken (and unset) before cyclone run starts its controllers: systemd hears the master only.
        self._notify = SystemdNotifier(unset=True)

    def _bind(self, pair: keys.Keypair | None) -> zmq.Socket[bytes]:
        """The master's ROUTER socket, bound: a CURVE server with its ZAP handler unless
        ``pair`` is ``None`` (plaintext)."""
        settings = self.settings
        self._context = zmq.Context()
        sock = self._context.socket(zmq.ROUTER)
        # No handover: a connection with a routing id in use is turned away, so nobody can cut
        # a controller off by connecting under its id.
        sock.setsockopt(zmq.ROUTER_HANDOVER, 0)
        sock.setsockopt(zmq.LINGER, 1000)
        sock.setsockopt(zmq.SNDHWM, _PEER_QUEUE)
        sock.setsockopt(zmq.RCVHWM, _PEER_QUEUE)
        sock.setsockopt(zmq.MAXMSGSIZE, protocol.MAX_FRAME_BYTES)
        # A connection that went silent (a partition, a host gone) is dropped by the kernel,
        # so the controller's next connection under the same routing id is not turned away
        # for the dead one: data unacknowledged for the controller timeout (the master pings
        # every controller each heartbeat interval) or, on an idle connection, keepalive
        # probes unanswered.  Not ZMTP heartbeats: libzmq cancels a timer by a linear search
        # of all its timers, once per message after each heartbeat, which made the I/O
        # thread's cost grow with the square of the controllers (21% of a core at 5,000).
        timeout = max(1, math.ceil(settings.controller_timeout))
        sock.setsockopt(zmq.TCP_MAXRT, timeout * 1000)
        sock.setsockopt(zmq.TCP_KEEPALIVE, 1)
        sock.setsockopt(zmq.TCP_KEEPALIVE_IDLE, timeout)
        sock.setsockopt(zmq.TCP_KEEPALIVE_INTVL, max(1, timeout // 4))
        sock.setsockopt(zmq.TCP_KEEPALIVE_CNT, 4)
        if pair is not None:
            # The ZAP handler must be bound before the first connection, or libzmq admits all.
            self._zap = self._context.socket(zmq.REP)
            self._zap.bind(_ZAP_ENDPOINT)
            sock.curve_server = True
            sock.curve_secretkey = pair.secret.encode()
            sock.curve_publickey = pair.public.encode()
            sock.zap_domain = b"cyclone"
            # Handshakes that fail before ZAP is asked (plaintext, or the wrong master key).
            self._monitor = sock.get_monitor_socket(_HANDSHAKE_FAILED)
        try:
            sock.bind(settings.bind)
        except zmq.ZMQError as exc:
            sock.close(0)
            raise ConfigError(f"master cannot bind {settings.bind}: {exc.strerror}") from None
        return sock

    def _load_keys(self) -> keys.Keypair | None:
        """The master's keypair and allowlist (``None`` on a plaintext master)."""
        settings = self.settings
        if settings.insecure:
            if private_ipc(settings.bind):
                return None  # cyclone run's own endpoint: nobody else can reach it
            log.warning(
                "master.insecure is set: no encryption and no keys; anyone who can reach %s can register a "
                "controller, receive tasks and send results",
                settings.bind,
            )
            return None
        self._key_dir = key_dir = Path(settings.keys) if settings.keys else keys.default_key_dir()
        secret = key_dir / f"{keys.MASTER_NAME}.secret"
        if not os.path.lexists(secret):
            raise ConfigError(f"no master key in {key_dir}: run `cyclone keys init`, or set master.insecure = true")
        pair = keys.load_keypair(secret)
        self._allowlist = keys.Allowlist.load(key_dir / keys.ALLOWLIST_FILE)
        self._check_tokens()
        return pair

    def _generator_total(self) -> int | None:
        """The generator's own count of its tasks, if it knows one (for progress only)."""
        try:
            total = self.generator.total()
        except Exception as exc:  # third-party generator code
            log.warning("generator '%s' cannot tell its total: %s", self.generator.name, one_line_error(exc))
            return None
        if total is None or (type(total) is int and total >= 0):
            return total
        log.warning("generator '%s' gave an invalid total %r; ignored", self.generator.name, total)
        return None

    def _fast_forward(self, count: int) -> int:
        """Skip the first ``count`` tasks of a deterministic generator (already handed out)."""
        assert self.core is not None
        skipped = 0
        while skipped < count:
            try:
                item = self._next_item()
            except StopIteration:
                self.core.generator_ended()
                break
            if item is not None:
                skipped += 1
        return skipped

    def __enter__(self) -> Master:
        self.open()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def stopping(self) -> bool:
        """Whether the master is draining (asked to stop, or every task is done)."""
        return self.core is not None and self.core.phase is not Phase.RUNNING

    def request_stop(self) -> None:
        """Stop gracefully (safe from signal handlers and other threads); a second request
        stops without waiting for controllers."""
        self._stop_requests += 1

    def run(self) -> int:
        """Serve until the run is done or a stop is requested; returns the exit code (0, or 1
        when the generator failed or results could not all be delivered)."""
        if self._sock is None:
            self.open()
        assert self._sock is not None
        assert self.core is not None
        assert self.journal is not None
        self.started_at = time.time()
        # The window keeps thousands of long-lived objects that the cyclic garbage collector
        # would walk again and again while results are made and dropped at a high rate (that
        # doubled the cost of a result).  The master's own objects do not form cycles that
        # need the collector, so it runs far less often here.
        gc_thresholds = gc.get_threshold()
        gc.freeze()
        gc.set_threshold(50_000, 50, 100)
        poller = zmq.Poller()
        poller.register(self._sock, zmq.POLLIN)
        if self._zap is not None:
            poller.register(self._zap, zmq.POLLIN)
        if self._monitor is not None:
            poller.register(self._monitor, zmq.POLLIN)
        self._next_compaction = time.monotonic() + _COMPACT_EVERY
        self._notify.ready(self._status_line(), time.monotonic())
        try:
            while not self.core.done:
                self._turn(poller)
        finally:
            self._notify.close()
            self._final_commit()
            self.finished_at = time.time()
            gc.set_threshold(*gc_thresholds)
            gc.unfreeze()
        self._finish_delivery()
        self._compact()
        if self.progress is not None:
            self._call(self.progress, self.status())
        self._housekeeping(time.monotonic())
        return 1 if (self.generator_error or self.undelivered) else 0

    def _turn(self, poller: zmq.Poller) -> None:
        """One turn of the loop: receive, let time pass, feed, apply the core's effects, and
        the timers of housekeeping, compaction and progress."""
        core = self.core
        assert core is not None
        # Do not sleep while the generator can top the window up.
        ready = poller.poll(0 if core.feed_room(time.monotonic()) else int(_MAX_POLL * 1000))
        now = time.monotonic()  # after the poll: messages are stamped when they arrived
        if ready:
            if self._zap is not None:
                self._authenticate(now)
                self._handshakes(now)
            self._receive(now)
        while self._stops_seen < self._stop_requests:
            self._stops_seen += 1
            core.request_stop(now)
        core.tick(now)
        self._feed(now)
        self._apply(core.take(now))
        if (
            core.phase is Phase.DELIVERING
            and all(d.finished for d in self.deliveries)
            and (self._caught_up or not self._fetched)
        ):
            core.delivered()
        if now >= self._next_housekeeping:
            self._next_housekeeping = now + _HOUSEKEEPING_EVERY
            self._housekeeping(now)
        if now >= self._next_compaction:
            self._next_compaction = now + _COMPACT_EVERY
            self._compact()
        if self.progress is not None and now >= self._next_progress:
            self._next_progress = now + 0.2
            self._call(self.progress, self.status())
        self._notify.tick(now, self._status_line, stopping=self.stopping)

    def close(self) -> None:
        """Release everything (idempotent): delivery threads, metrics, socket, journal."""
        for delivery in self.deliveries:
            delivery.stop()
        if self.metrics is not None:
            self.metrics.close()
            self.metrics = None
        if self.dashboard is not None:
            self.plugins.unregister(f"cyclone-dashboard-{id(self.dashboard)}")
            self.dashboard.close()
            self.dashboard = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        if self._monitor is not None:
            self._monitor.close(0)
            self._monitor = None
        if self._zap is not None:
            self._zap.close(0)
            self._zap = None
        if self._context is not None:
            self._context.term()
            self._context = None
        if self._tasks is not None:
            self._tasks = None
            self._call(self.generator.close)
        if self.journal is not None:
            self.journal.close()
            path = self.journal.path
            self.journal = None
            if self._temp_dir is not None:
                if self.undelivered:
                    kept = Path(tempdirs.keep(self._temp_dir), path.name)  # out of the sweeps' reach
                    log.error("%d results wait in the temporary journal %s", self.undelivered, kept)
                else:
                    shutil.rmtree(self._temp_dir, ignore_errors=True)
                self._temp_dir = None

    # -- the loop's parts ------------------------------------------------------------------

    def _receive(self, now: float) -> None:
        sock = self._sock
        assert sock is not None
        assert self.core is not None
        frame = self.core.frame
        if self._zap is None:  # plaintext: no key to read
            for _ in range(_MAX_FRAMES_PER_TURN):
                try:
                    frames = sock.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    return
                frame(frames[0], frames[1:], now)
            return
        for _ in range(_MAX_FRAMES_PER_TURN):
            try:
                parts = sock.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            # The key ZAP admitted for this connection, as libzmq reports it for the message.
            key = str(parts[-1].get("User-Id"))
            frame(parts[0].bytes, [part.bytes for part in parts[1:]], now, key)

    def _handshakes(self, now: float) -> None:
        """Count (and now and then log) connections that failed their CURVE handshake."""
        monitor = self._monitor
        assert monitor is not None
        assert self.core is not None
        while True:
            try:
                event = zmq.utils.monitor.parse_monitor_message(monitor.recv_multipart(zmq.NOBLOCK))
            except zmq.Again:
                return
            self.core.handshake_failed(f"error {event['value']}", now)

    def _authenticate(self, now: float) -> None:
        """Answer libzmq's ZAP requests: which CURVE keys may complete a handshake."""
        zap = self._zap
        assert zap is not None
        assert self.core is not None
        while True:
            try:
                request = zap.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            if len(request) < 6:
                continue  # not a ZAP request: nothing to answer to
            version, request_id, _domain, _address, _identity, mechanism, *credentials = request
            user = None
            if mechanism == b"CURVE" and len(credentials) == 1 and len(credentials[0]) == 32:
                key = z85.encode(credentials[0]).decode()
                if self._allowlist is not None and self._allowlist.lookup(key) is None:
                    self._reload_grants(now)  # admitted a moment ago? (one stat if not changed)
                user = self.core.authenticate(key, enrolling=self._enrolling, now=now)
            if user is None:
                zap.send_multipart([version, request_id, b"400", b"key not admitted", b"", b""])
            else:
                zap.send_multipart([version, request_id, b"200", b"OK", user.encode(), b""])

    def _next_item(self) -> Task | TaskSpec | None:
        """The generator's next item; only its own code is guarded: what it raises becomes
        :class:`_GeneratorFailed` with a one-line reason (StopIteration passes through)."""
        assert self._tasks is not None
        try:
            return next(self._tasks)
        except StopIteration:
            raise
        except CycloneError as exc:  # already a sentence for the user
            raise _GeneratorFailed(" ".join(str(exc).split())) from None
        except Exception as exc:  # third-party generator code: the type says most
            raise _GeneratorFailed(one_line_error(exc)) from None

    def _feed(self, now: float) -> None:
        """Top the window up from the generator, as far as the core says."""
        core = self.core
        assert core is not None
        room = core.feed_room(now)
        if room <= 0:
            return
        records: list[TaskRecord] = []
        run_id = self.run_id
        default_timeout = self.settings.task_timeout or None
        seq = self._seq
        # Generators often hand out one task object many times; its plain data is shared
        # (never changed), so it is made once.
        last_task: Task | None = None
        args: dict[str, Any] = {}
        try:
            while len(records) < room:
                item = self._next_item()
                if item is None:
                    core.generator_idle(now)
                    break
                if isinstance(item, TaskSpec):
                    task, key, timeout = item.task, item.key, item.timeout
                elif isinstance(item, Task):
                    task, key, timeout = item, None, None
                else:
                    raise _GeneratorFailed(f"yielded {item!r:.60}, which is not a Task or TaskSpec")
                if task is not last_task:
                    last_task, args = task, self._plain(task)
                seq += 1
                records.append(
                    TaskRecord(
                        seq,
                        f"{run_id}-{seq}",
                        task.name,
                        args,
                        key=key,
                        timeout=timeout if timeout is not None else default_timeout,
                    )
                )
        except StopIteration:
            core.generator_ended()
            log.info("generator '%s' is done after %d tasks", self.generator.name, seq)
        except _GeneratorFailed as exc:
            core.generator_ended()
            self.generator_error = str(exc)
            log.error("generator '%s' failed: %s", self.generator.name, self.generator_error)
        self._seq = seq
        core.submit(records)

    @staticmethod
    def _plain(task: Task) -> dict[str, Any]:
        """A task's plain data; a task object that cannot be made plain is its plugin's fault."""
        try:
            return unstructure(task)
        except Exception as exc:  # the plugin's task class
            raise _GeneratorFailed(f"task {type(task).__name__} cannot be sent: {one_line_error(exc)}") from None

    def _apply(self, effects: Effects) -> None:
        """Journal the turn (one commit), then send what depends on it, then tell plugins."""
        results = self._journal(effects)
        last: object = None
        frame = b""
        for identity, message in effects.sends:
            if message is not last:  # a message to every controller (Ping) is encoded once
                last, frame = message, protocol.encode(message)
            self._send_frame(identity, frame)
        for identity, records in effects.dispatch:
            self._send_frame(identity, protocol.encode_dispatch(records))
        for identity in effects.status_requests:
            self._send_frame(identity, protocol.encode(StatusReply(self.status())))
        for identity, submit in effects.submissions:
            self._send_frame(identity, protocol.encode(self._submit(submit)))
        for identity, fetch in effects.fetches:
            self._send_frame(identity, protocol.encode(self._fetch(fetch)))
        for request in effects.enrollments[:_ENROLLMENTS_PER_TURN]:
            self._enroll(request)
        if effects.begin_delivery:
            for delivery in self.deliveries:
                delivery.finish()
        for joined in effects.joined:
            self._lost.pop(joined.id, None)
            self.plugins.notify(
                "cyclone_controller_joined", controller_id=joined.id, host=joined.host, workers=joined.workers
            )
        for lost in effects.lost:
            self._remember_lost(lost)
            self.plugins.notify(
                "cyclone_controller_lost", controller_id=lost.id, reason=lost.reason, requeued=lost.requeued
            )
        if results:
            self._deliver_to_plugins(results)

    def _remember_lost(self, lost: LostController) -> None:
        if lost.reason == "goodbye":
            return
        self._lost[lost.id] = {"id": lost.id, "host": lost.host, "reason": lost.reason, "lost_at": time.time()}
        if len(self._lost) > _LOST_KEPT:
            del self._lost[next(iter(self._lost))]

    def _journal(self, effects: Effects) -> list[Result]:
        """Write the turn's changes in one commit and offer its terminal results to delivery."""
        journal = self.journal
        assert journal is not None
        if effects.submitted:
            journal.add(effects.submitted)
        results = [result for _, result in effects.settled]
        if results:
            journal.settled(effects.settled)
        if effects.requeued:
            journal.retried(effects.requeued)
        added, results = self._commit(effects, results)
        if added:
            # The delivery threads take them from memory: no reading back from the journal.
            first, at = journal.last_result - added + 1, time.monotonic()
            for delivery in self.deliveries:
                delivery.offer(first, at, results)
            if self._ring is not None:
                self._ring.extend(results)
        if journal.needs_compaction:
            self._compact()
        return results

    def _commit(self, effects: Effects, results: list[Result]) -> tuple[int, list[Result]]:
        """Commit the journal; returns how many results it added, and which (those of turns
        whose commit failed, then this turn's).  While the journal cannot be written, the core
        holds back what depends on it, and a commit is tried once a second."""
        assert self.journal is not None
        assert self.journal_health is not None
        assert self.core is not None
        health, now = self.journal_health, time.monotonic()
        self._unjournaled += results
        if not health.may_write(now):
            return 0, []
        try:
            added = self.journal.commit()
        except JournalWriteError as exc:
            health.failed(exc, now)
            self.core.journal_failed(effects, now)
            return 0, []
        if health.full:
            health.written(now)
            self.core.journal_written()
        results, self._unjournaled = self._unjournaled, []
        return added, results

    def _final_commit(self) -> None:
        """Commit what the loop left; results the journal cannot take stay with the controllers."""
        assert self.journal is not None
        try:
            self.journal.commit()
        except JournalWriteError as exc:
            log.error(
                "%s: %d results not journaled, nor acknowledged to their controllers", exc, len(self._unjournaled)
            )
            self.undelivered += len(self._unjournaled)

    def _submit(self, submit: Submit) -> Submitted | Refuse:
        """Hand a client's tasks to the generator, all of them or none."""
        accept = getattr(self.generator, "accept", None)
        if accept is None:
            return Refuse("this master's generator does not take tasks: start it with --generator queue")
        try:
            specs = [
                TaskSpec(
                    task=structure(args, self.plugins.task_type(type_), where=f"task {index}"), key=key, timeout=timeout
                )
                for index, (type_, args, key, timeout) in enumerate(submit.tasks)
            ]
        except CycloneError as exc:
            return Refuse(" ".join(str(exc).split())[:_REASON_CHARS])
        try:
            accept(specs, submit.done)
        except ValueError as exc:  # the generator's own reason (a full queue, say)
            return Refuse(str(exc)[:_REASON_CHARS])
        except Exception as exc:  # third-party generator code
            return Refuse(
                f"generator '{self.generator.name}' failed to take the tasks: {one_line_error(exc)}"[:_REASON_CHARS]
            )
        return Submitted(len(specs))

    def _fetch(self, fetch: Fetch) -> Fetched:
        """The results a client asked for, from the ring of the latest ones."""
        assert self.journal is not None
        assert self.core is not None
        self._fetched = True
        if self._ring is None:
            self._ring = deque(maxlen=_RING_SIZE)
        ring = self._ring
        last = self.journal.last_result  # the number of the ring's last result
        first = last - len(ring) + 1
        after = min(fetch.after, last)
        start = max(after + 1, first)
        results: list[Result] = []
        size = 0
        for result in itertools.islice(ring, start - first, start - first + fetch.limit):
            size += len(_pack(protocol.result_to_row(result)))
            if results and size > _FETCH_BYTES:
                break
            results.append(result)
        sent = start - 1 + len(results)
        finished = sent == last and self.core.phase in (Phase.DELIVERING, Phase.DONE)
        self._caught_up = self._caught_up or finished
        return Fetched(results, sent, finished, start - after - 1)

    def _enroll(self, request: EnrollRequest) -> None:
        """Admit ``request.key`` if it carries the secret of an open join token (used up now)."""
        assert self._key_dir is not None
        assert self._allowlist is not None
        reply: protocol.Message = Refuse("the join token is unknown, used or expired: ask for a new one")
        try:
            secret = base64.urlsafe_b64decode(request.secret + "=" * (-len(request.secret) % 4))
            granted = keys.redeem_token(self._key_dir, secret, now=time.time())
            if granted is not None:
                name = keys.default_grant_name(granted.ids, request.key)
                with keys.Allowlist.edit(self._allowlist.path) as allowlist:
                    if any(grant.name == name for grant in allowlist.grants):
                        # Another key enrolled for the same ids: the key's own name.
                        name = keys.default_grant_name("*", request.key)
                    if allowlist.lookup(request.key) is None:
                        allowlist.add(granted.grant(name, request.key))
                self._reload_grants(time.monotonic())
                reply = Enrolled(name, granted.ids)
                log.info("enrolled key %s as %s (controller ids %s)", request.key, name, granted.ids)
        except (binascii.Error, ValueError, CycloneError) as exc:
            log.error("enrollment of key %s failed: %s", request.key, one_line_error(exc))
            reply = Refuse("enrollment failed on the master; ask its operator")
        self._send_frame(request.identity, protocol.encode(reply))
        self._check_tokens()

    def _check_tokens(self) -> None:
        """Whether unknown keys may connect to enroll: while a join token is open."""
        assert self._key_dir is not None
        try:
            self._enrolling = keys.open_tokens(self._key_dir, now=time.time()) > 0
        except CycloneError as exc:
            log.error("%s (no enrollment until it is fixed)", exc)
            self._enrolling = False

    def _reload_grants(self, now: float) -> None:
        """Re-read the allowlist if it changed: every second (revocation reaches the loop within
        a second), and when an unknown key asks to connect (admitted a moment ago?)."""
        assert self._allowlist is not None
        assert self.core is not None
        try:
            changed = self._allowlist.reload_if_changed()
        except CycloneError as exc:
            log.error("%s (keeping the previous allowlist)", exc)
            return
        if changed:
            log.info("allowlist %s changed: %d keys admitted", self._allowlist.path, len(self._allowlist.grants))
            self.core.grants_changed(now)

    def _compact(self) -> None:
        """Rewrite the journal's window and drop the results every sink has."""
        assert self.journal is not None
        assert self.core is not None
        if self.core.journal_full:
            return
        try:
            self.journal.compact(self.core.scheduler.tasks.values(), [d.name for d in self.deliveries])
        except JournalWriteError as exc:  # nothing is lost: the journal stays as it was, less compact
            log.debug("compaction postponed: %s", exc)
        if _trim_heap is not None:
            _trim_heap(0)

    def _deliver_to_plugins(self, results: list[Result]) -> None:
        on_result = self.generator.on_result
        for result in results:
            if result.status is Status.QUARANTINED:
                log.warning("task %s (%s) quarantined: %s", result.task_id, result.task_type, result.error)
            try:
                on_result(result)
            except Exception as exc:  # third-party generator code
                self._callback_failed(f"generator '{self.generator.name}' failed in on_result", exc)
        self.plugins.results(results)

    def _callback_failed(self, what: str, exc: Exception) -> None:
        self._callback_errors += 1
        if self._callback_errors == 1 or self._callback_errors % 1000 == 0:
            log.error("%s: %s: %s (%d times so far)", what, type(exc).__name__, exc, self._callback_errors)

    def _call(self, func: Callable[..., Any], *args: Any) -> None:
        try:
            func(*args)
        except Exception as exc:
            self._callback_failed(getattr(func, "__qualname__", "callback"), exc)

    def _finish_delivery(self) -> None:
        for delivery in self.deliveries:
            delivery.stop()
        self.undelivered = max((d.backlog for d in self.deliveries), default=0)
        if self.undelivered:
            assert self.journal is not None
            waiting = ", ".join(f"{d.name}: {d.backlog}" for d in self.deliveries if d.backlog)
            log.error(
                "%d results wait in the journal %s for their sinks (%s); they are delivered when a master "
                "resumes on it",
                self.undelivered,
                self.journal.path,
                waiting,
            )

    def _housekeeping(self, now: float) -> None:
        assert self.core is not None
        stats = self.core.scheduler.stats
        settled = stats.settled
        self._rates.append((now, settled))
        while len(self._rates) > 2 and now - self._rates[0][0] > _RATE_WINDOW:
            self._rates.popleft()
        if self._allowlist is not None:
            self._reload_grants(now)
            self._check_tokens()
        if self.journal_health is not None:
            self.journal_health.check_space()
        if self.metrics is not None or self.dashboard is not None:
            snapshot = self.status()  # made once for both
            if self.metrics is not None:
                self.metrics.publish(snapshot, stats.duration)
            if self.dashboard is not None:
                self.dashboard.publish(snapshot, stats.latency)

    def _send_frame(self, identity: bytes, frame: bytes) -> None:
        assert self._sock is not None
        try:
            self._sock.send_multipart([identity, frame], zmq.NOBLOCK)
        except zmq.Again:  # the peer's queue is full; heartbeats reconcile what it missed
            log.debug("dropped a message to %s: its queue is full", peer_name(identity))

    # -- status ----------------------------------------------------------------------------

    def _status_line(self) -> str:
        """The state in one line, for systemd's ``STATUS=``."""
        assert self.core is not None
        scheduler = self.core.scheduler
        return (
            f"{'stopping' if self.stopping else 'running'}: {scheduler.stats.settled:,} done, "
            f"{scheduler.in_flight:,} in flight, {plural(len(scheduler.controllers), 'controller')}"
        )

    def status(self) -> dict[str, Any]:
        """A snapshot as plain data: controllers, queue, counters, rate, sinks."""
        assert self.core is not None
        snapshot = self.core.scheduler.snapshot()
        rates = self._rates
        rate = 0.0
        if len(rates) >= 2 and rates[-1][0] > rates[0][0]:
            rate = (rates[-1][1] - rates[0][1]) / (rates[-1][0] - rates[0][0])
        latency = self.core.scheduler.stats.latency
        snapshot.update(
            master_id=self.master_id,
            run_id=self.run_id,
            endpoint=self.endpoint,
            started_at=self.started_at,
            uptime_s=time.time() - self.started_at if self.started_at else 0.0,
            tasks_per_second=rate,
            latency_ms_p50=_ms(latency.quantile(0.5)),
            latency_ms_p99=_ms(latency.quantile(0.99)),
            protocol_errors=self.protocol_errors,
            refusals=dict(self.core.refusals),
            journal=self.journal_health.status() if self.journal_health is not None else None,
            secure=self._zap is not None,
            draining=self.stopping,
            lost_controllers=list(self._lost.values()),
            generator={
                "name": self.generator.name,
                "exhausted": self.core.exhausted,
                "total": self._seq if self.core.exhausted else self._total,
                "error": self.generator_error,
            },
            sinks=[
                {
                    "name": d.name,
                    "backlog": d.backlog,
                    "delivered": d.delivered,
                    "errors": d.errors,
                    "failing": d.failing,
                    "last_error": _scrub(d.last_error, d.sink),
                    "dead_letters": d.dead_letters,
                }
                for d in self.deliveries
            ],
            dead_letters=dead_letter_status(self.deliveries),
        )
        return snapshot

    def summary(self) -> dict[str, Any]:
        """The run in numbers (``cyclone run`` prints it): counts, duration, rate, round trip;
        ``backlog``: per sink, the results of a previous master it still lacked when this one
        started (``waiting``) and how many of them it got (``delivered``)."""
        assert self.core is not None
        stats = self.core.scheduler.stats
        duration = max((self.finished_at or time.time()) - self.started_at, 1e-9) if self.started_at else 0.0
        return {
            "run_id": self.run_id,
            **stats.counts(),
            "duration_s": round(duration, 3),
            "tasks_per_second": round(stats.settled / duration, 1) if duration else 0.0,
            "latency_ms_p50": _ms(stats.latency.quantile(0.5)),
            "latency_ms_p99": _ms(stats.latency.quantile(0.99)),
            "interrupted": self.interrupted,
            "undelivered": self.undelivered,
            "backlog": {
                d.name: {"waiting": d.backlog_at_start, "delivered": d.backlog_delivered}
                for d in self.deliveries
                if d.backlog_at_start
            },
            "generator_error": self.generator_error,
        }


#: Option names whose values a status reply must never carry (passwords, tokens, keys).
_SECRET_OPTION = re.compile(r"pass|secret|token|key|credential", re.IGNORECASE)


def _scrub(text: str | None, sink: ResultSink) -> str | None:
    """``text`` with the values of the sink's secret options blanked out: a status reply goes
    to admins, but an error message must not carry a password into their terminals and logs."""
    if not text:
        return text
    try:
        options = unstructure(sink)
    except Exception:  # a plugin's sink class: no options to scrub then
        return text
    for name, value in options.items() if isinstance(options, dict) else ():
        if _SECRET_OPTION.search(name) and isinstance(value, str) and value:
            text = text.replace(value, "***")
    return text


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 3)
