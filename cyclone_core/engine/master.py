"""The master: a ZeroMQ ROUTER event loop around the scheduler, the journal and the sinks.

Each turn of the loop receives every waiting frame (up to a bound), feeds the events to the
:class:`~cyclone_core.engine.scheduler.Scheduler`, tops the window up from the generator,
commits the turn's changes to the journal in one transaction, and only then sends what
depends on them: acknowledgements, dispatches, pings.  Terminal results then go to the
generator's ``on_result`` and the ``cyclone_results`` hook, and the delivery threads are woken
to hand them to the sinks.

Anything a peer sends that is not a valid message (garbage, another protocol version, a
stranger probing the port) is counted, logged once per peer in a while, answered with Refuse
where a reply makes sense, and never stops the loop.

Stopping (:meth:`Master.request_stop`, or a finite generator whose tasks have all settled):
no more dispatches, Shutdown to every controller, then results, handbacks and goodbyes are
taken in for at most ``drain_timeout`` seconds; the journal is flushed, and the sinks get at
most ``delivery_timeout`` seconds to catch up.
"""

from __future__ import annotations

import gc
import logging
import os
import shutil
import socket
import tempfile
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import zmq

from cyclone_core.config import MasterSettings
from cyclone_core.convert import unstructure
from cyclone_core.engine import protocol
from cyclone_core.engine.delivery import SinkDelivery
from cyclone_core.engine.journal import Journal
from cyclone_core.engine.metrics import MetricsServer
from cyclone_core.engine.protocol import (
    Goodbye,
    Handback,
    Heartbeat,
    Hello,
    Message,
    Ping,
    ProtocolError,
    Refuse,
    Rehello,
    Results,
    Shutdown,
    StatusReply,
    StatusRequest,
    Welcome,
)
from cyclone_core.engine.scheduler import Actions, LostController, Scheduler, TaskRecord
from cyclone_core.errors import ConfigError, CycloneError, one_line_error
from cyclone_core.model import Result, ResultSink, Status, Task, TaskGenerator, TaskSpec
from cyclone_core.plugins import Plugins, get_plugins

__all__ = ("Master",)

log = logging.getLogger("cyclone.master")

#: Frames handled per loop turn at most, so timers and commits keep their pace under load.
_MAX_FRAMES_PER_TURN = 2000
#: Tasks taken from the generator per loop turn at most.
_MAX_FEED_PER_TURN = 4096
#: Seconds before asking a generator again after it yielded ``None``.
_GENERATOR_IDLE = 0.05
#: Longest poll: timers (heartbeats, leases, stopping) are checked at least this often.
_MAX_POLL = 0.05
#: Seconds between two complaints (log line, Refuse, Rehello) to the same peer.
_COMPLAIN_EVERY = 60.0
_REHELLO_EVERY = 1.0
#: Seconds between status/metrics refreshes, and between journal compactions at the latest.
_HOUSEKEEPING_EVERY = 1.0
_COMPACT_EVERY = 10.0
#: Seconds of history behind ``tasks_per_second``.
_RATE_WINDOW = 10.0


def _peer_name(identity: bytes) -> str:
    text = identity.decode("ascii", errors="replace")
    return text if text.isprintable() and identity[:1] != b"\x00" else "0x" + identity.hex()


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
        self.scheduler: Scheduler | None = None
        self.deliveries: list[SinkDelivery] = []
        self.metrics: MetricsServer | None = None
        #: Frames that were not valid messages.
        self.protocol_errors = 0
        #: Why the generator stopped early, if it failed.
        self.generator_error: str | None = None
        #: Results left undelivered in the journal when the master stopped.
        self.undelivered = 0
        #: Whether the run stopped before its generator was done (a stop request).
        self.interrupted = False
        #: The run's id (from the journal), once open.
        self.run_id = ""
        self.started_at = 0.0
        self.finished_at = 0.0
        self._temp_dir: str | None = None
        self._context: zmq.Context[zmq.Socket[bytes]] | None = None
        self._sock: zmq.Socket[bytes] | None = None
        self._tasks: Iterator[Task | TaskSpec | None] | None = None
        self._exhausted = False
        self._seq = 0
        self._total: int | None = None
        self._feed_after = 0.0
        self._peers: dict[bytes, str] = {}  # routing identity -> controller id
        self._identities: dict[str, bytes] = {}  # controller id -> routing identity
        self._acks: dict[bytes, list[str]] = {}
        self._complaints: dict[bytes, float] = {}
        self._rehellos: dict[bytes, float] = {}
        self._stop_requests = 0
        self._phase = "running"  # then "draining", then "delivering"
        self._stop_reason = ""
        self._deadline = 0.0
        self._rates: deque[tuple[float, int]] = deque()
        self._callback_errors = 0
        self._handlers: dict[type[Any], Callable[[bytes, Any, float], None]] = {
            Hello: self._on_hello,
            Results: self._on_results,
            Heartbeat: self._on_heartbeat,
            Handback: self._on_handback,
            Goodbye: self._on_goodbye,
            StatusRequest: self._on_status,
        }

    # -- life cycle ------------------------------------------------------------------------

    def open(self) -> str:
        """Open the journal (resuming it), bind, start delivery and metrics; returns the
        endpoint bound."""
        try:
            self._open()
        except BaseException:
            self.close()
            raise
        return self.endpoint

    def _open(self) -> None:
        settings = self.settings
        path = settings.journal
        if not path:
            self._temp_dir = tempfile.mkdtemp(prefix="cyclone-journal-")
            path = os.path.join(self._temp_dir, "journal.sqlite")
        self.journal = journal = Journal(path)
        self.run_id = journal.run_id
        resuming = not journal.fresh
        gen_type = type(self.generator)
        journal.bind_run(self.generator.name, unstructure(self.generator), deterministic=gen_type.deterministic)
        self.scheduler = Scheduler(
            settings, known_types=self.plugins.task_types(), wall_offset=time.time() - time.monotonic()
        )
        self._tasks = iter(self.generator.tasks())
        self._total = self._generator_total()
        self._seq = journal.high_water
        if resuming:
            pending = journal.pending()
            self.scheduler.submit(pending)
            skipped = self._fast_forward(journal.high_water) if gen_type.deterministic else 0
            log.info(
                "resuming run %s from %s: %d tasks back in the queue%s",
                journal.run_id,
                journal.path,
                len(pending),
                f", generator fast-forwarded past {skipped} tasks" if skipped else "",
            )
        self._context = zmq.Context()
        sock = self._context.socket(zmq.ROUTER)
        sock.setsockopt(zmq.ROUTER_HANDOVER, 1)  # a reconnecting controller keeps its identity
        sock.setsockopt(zmq.LINGER, 1000)
        sock.setsockopt(zmq.SNDHWM, 100_000)
        sock.setsockopt(zmq.RCVHWM, 100_000)
        sock.setsockopt(zmq.MAXMSGSIZE, protocol.MAX_FRAME_BYTES)
        try:
            sock.bind(settings.bind)
        except zmq.ZMQError as exc:
            sock.close(0)
            raise ConfigError(f"master cannot bind {settings.bind}: {exc.strerror}") from None
        self._sock = sock
        self.endpoint = sock.getsockopt_string(zmq.LAST_ENDPOINT)
        journal.register_sinks([s.name for s in self.sinks])
        for sink in self.sinks:
            delivery = SinkDelivery(sink, journal)
            delivery.start()
            self.deliveries.append(delivery)
        if settings.metrics_port:
            self.metrics = MetricsServer(settings.metrics_port)
            self.metrics.publish(self.status(), self.scheduler.stats.duration)
        log.info("master %s listening on %s (run %s)", self.master_id, self.endpoint, journal.run_id)

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
        assert self._tasks is not None
        skipped = 0
        while skipped < count:
            try:
                item = next(self._tasks)
            except StopIteration:
                self._exhausted = True
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
        return self._phase != "running"

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
        assert self.scheduler is not None
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
        next_ping = next_housekeeping = next_progress = 0.0
        next_compaction = time.monotonic() + _COMPACT_EVERY
        scheduler = self.scheduler
        try:
            while True:
                # Do not sleep while the generator can top the window up.
                feedable = self._feedable(time.monotonic()) and scheduler.room > 0
                ready = poller.poll(0 if feedable else int(_MAX_POLL * 1000))
                now = time.monotonic()  # after the poll: messages are stamped when they arrived
                if ready:
                    self._receive(now)
                scheduler.tick(now)
                self._feed(now)
                self._apply(scheduler.take(now), now)
                if now >= next_ping:
                    next_ping = now + self.settings.heartbeat_interval
                    self._broadcast(Ping())
                if now >= next_housekeeping:
                    next_housekeeping = now + _HOUSEKEEPING_EVERY
                    self._housekeeping(now)
                if now >= next_compaction:
                    next_compaction = now + _COMPACT_EVERY
                    self._compact()
                if self.progress is not None and now >= next_progress:
                    next_progress = now + 0.2
                    self._call(self.progress, self.status())
                if self._finished(now):
                    break
        finally:
            self.journal.commit()
            self.finished_at = time.time()
            gc.set_threshold(*gc_thresholds)
            gc.unfreeze()
        self._finish_delivery()
        self._compact()
        if self.progress is not None:
            self._call(self.progress, self.status())
        self._housekeeping(time.monotonic())
        return 1 if (self.generator_error or self.undelivered) else 0

    def close(self) -> None:
        """Release everything (idempotent): delivery threads, metrics, socket, journal."""
        for delivery in self.deliveries:
            delivery.stop()
        if self.metrics is not None:
            self.metrics.close()
            self.metrics = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None
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
                    log.error("%d results wait in the temporary journal %s", self.undelivered, path)
                else:
                    shutil.rmtree(self._temp_dir, ignore_errors=True)
                self._temp_dir = None

    # -- the loop's parts ------------------------------------------------------------------

    def _receive(self, now: float) -> None:
        sock = self._sock
        assert sock is not None
        handlers = self._handlers
        for _ in range(_MAX_FRAMES_PER_TURN):
            try:
                frames = sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            identity = frames[0]
            if len(frames) != 2:
                self._complain(identity, f"expected one frame, got {len(frames) - 1}")
                continue
            try:
                message = protocol.decode(frames[1])
            except ProtocolError as exc:
                self._complain(identity, str(exc))
                continue
            handler = handlers.get(type(message))
            if handler is None:
                self._complain(identity, f"unexpected {message.tag} message")
                continue
            handler(identity, message, now)

    def _feedable(self, now: float) -> bool:
        return not self._exhausted and self._phase == "running" and now >= self._feed_after

    def _feed(self, now: float) -> None:
        """Top the window up from the generator."""
        assert self.scheduler is not None
        assert self.journal is not None
        assert self._tasks is not None
        if not self._feedable(now):
            return
        room = min(self.scheduler.room, _MAX_FEED_PER_TURN)
        if room <= 0:
            return
        records: list[TaskRecord] = []
        tasks = self._tasks
        run_id = self.journal.run_id
        default_timeout = self.settings.task_timeout or None
        seq = self._seq
        # Generators often hand out one task object many times; its plain data is shared
        # (never changed), so it is made once.
        last_task: Task | None = None
        args: dict[str, Any] = {}
        try:
            while len(records) < room:
                item = next(tasks)
                if item is None:
                    self._feed_after = now + _GENERATOR_IDLE
                    break
                if isinstance(item, TaskSpec):
                    task, key, timeout = item.task, item.key, item.timeout
                elif isinstance(item, Task):
                    task, key, timeout = item, None, None
                else:
                    raise TypeError(f"yielded {item!r:.60}, which is not a Task or TaskSpec")
                if task is not last_task:
                    last_task, args = task, unstructure(task)
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
            self._exhausted = True
            log.info("generator '%s' is done after %d tasks", self.generator.name, seq)
        except Exception as exc:  # third-party generator code
            self._exhausted = True
            # A CycloneError is already a sentence for the user; anything else is a bug whose
            # type says most.
            text = " ".join(str(exc).split())
            self.generator_error = text if isinstance(exc, CycloneError) else one_line_error(exc)
            log.error("generator '%s' failed: %s", self.generator.name, self.generator_error)
        self._seq = seq
        if records:
            self.journal.add(records)
            self.scheduler.submit(records)

    def _apply(self, actions: Actions, now: float) -> None:
        """Journal the turn (one commit), then send what depends on it, then tell plugins."""
        journal = self.journal
        assert journal is not None
        assert self.scheduler is not None
        results = [result for _, result in actions.settled]
        if results:
            journal.settled(actions.settled)
        if actions.requeued:
            journal.retried(actions.requeued)
        added = journal.commit()
        if added:
            # The delivery threads take them from memory: no reading back from the journal.
            first, at = journal.last_result - added + 1, time.time()
            for delivery in self.deliveries:
                delivery.offer(first, at, results)
        if journal.needs_compaction:
            self._compact()
        if self._acks:
            for identity, task_ids in self._acks.items():
                self._send(identity, protocol.Ack(task_ids))
            self._acks = {}
        for controller_id, records in actions.dispatch.items():
            self._send_frame(self._identities[controller_id], protocol.encode_dispatch(records))
        if actions.lost:
            self._forget(actions.lost)
        if results:
            self._deliver_to_plugins(results)

    def _forget(self, controllers: list[LostController]) -> None:
        """Controllers that left or were declared lost: their messages now get Rehello."""
        assert self.scheduler is not None
        for lost in controllers:
            # A controller replaced by a new process with the same id keeps the new connection.
            if not self.scheduler.knows(lost.id):
                gone = self._identities.pop(lost.id, None)
                if gone is not None:
                    self._peers.pop(gone, None)
            if lost.reason == "goodbye":
                log.info("controller %s left", lost.id)
            else:
                log.warning("controller %s lost (%s): %d tasks re-queued", lost.id, lost.reason, lost.requeued)
            self.plugins.notify(
                "cyclone_controller_lost", controller_id=lost.id, reason=lost.reason, requeued=lost.requeued
            )

    def _compact(self) -> None:
        """Rewrite the journal's window and drop the results every sink has."""
        assert self.journal is not None
        assert self.scheduler is not None
        self.journal.compact(self.scheduler.tasks.values(), [d.name for d in self.deliveries])

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

    def _finished(self, now: float) -> bool:
        """Whether the loop ends; moves through the phases of stopping.

        Running, then draining (controllers were told to finish: wait for their results,
        handbacks and goodbyes, at most ``drain_timeout``), then delivering (the sinks take
        what the journal holds, at most ``delivery_timeout``).  The loop serves status
        requests and late messages throughout.  A second stop request ends it at once.
        """
        scheduler = self.scheduler
        assert scheduler is not None
        if self._phase == "running":
            if self._stop_requests:
                self.interrupted = not (self._exhausted and not scheduler.tasks)
                self._begin_drain("master is stopping", now)
            elif self._exhausted and not scheduler.tasks:
                self._begin_drain("all tasks are done", now)
            else:
                return False
        if self._stop_requests > 1:
            return True
        if self._phase == "draining":
            if scheduler.controllers and now <= self._deadline:
                return False
            self._phase = "delivering"
            self._deadline = now + self.delivery_timeout
            for delivery in self.deliveries:
                delivery.finish()
        return all(d.finished for d in self.deliveries) or now > self._deadline

    def _begin_drain(self, reason: str, now: float) -> None:
        assert self.scheduler is not None
        self._phase = "draining"
        self._stop_reason = reason
        self._deadline = now + self.drain_timeout
        self.scheduler.stop_dispatching()
        count = len(self.scheduler.controllers)
        log.info("%s: telling %d controllers to finish", reason, count)
        self._broadcast(Shutdown(reason))

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
        assert self.scheduler is not None
        settled = self.scheduler.stats.settled
        self._rates.append((now, settled))
        while len(self._rates) > 2 and now - self._rates[0][0] > _RATE_WINDOW:
            self._rates.popleft()
        if len(self._complaints) > 10_000:
            self._complaints.clear()
        if len(self._rehellos) > 10_000:
            self._rehellos.clear()
        if self.metrics is not None:
            self.metrics.publish(self.status(), self.scheduler.stats.duration)

    # -- messages --------------------------------------------------------------------------

    def _on_hello(self, identity: bytes, hello: Hello, now: float) -> None:
        assert self.scheduler is not None
        assert self.journal is not None
        cid = hello.controller_id
        known = self.scheduler.knows(cid)
        reason = self.scheduler.register(
            cid,
            host=hello.host,
            pid=hello.pid,
            workers=hello.workers,
            credit=hello.credit,
            task_types=hello.task_types,
            now=now,
        )
        if reason is not None:
            log.warning("refused controller %s on %s: %s", cid, hello.host, reason)
            self._send(identity, Refuse(reason))
            return
        old = self._identities.get(cid)
        if old is not None and old != identity:
            self._peers.pop(old, None)
        stale = self._peers.get(identity)
        if stale is not None and stale != cid:
            self._identities.pop(stale, None)
        self._peers[identity] = cid
        self._identities[cid] = identity
        self._send(
            identity,
            Welcome(
                master_id=self.master_id,
                run_id=self.journal.run_id,
                heartbeat_interval=self.settings.heartbeat_interval,
                controller_timeout=self.settings.controller_timeout,
            ),
        )
        if known:
            log.info("controller %s reconnected", cid)
        else:
            log.info("controller %s joined (%s, pid %d, %d workers)", cid, hello.host, hello.pid, hello.workers)
            self.plugins.notify("cyclone_controller_joined", controller_id=cid, host=hello.host, workers=hello.workers)
        if self._phase != "running":
            self._send(identity, Shutdown(self._stop_reason))

    def _on_results(self, identity: bytes, message: Results, now: float) -> None:
        assert self.scheduler is not None
        cid = self._peers.get(identity)
        self.scheduler.results(cid, message.results, now)
        if cid is None:
            self._rehello(identity, now)
        elif message.credit:
            self.scheduler.grant(cid, message.credit, now)
        acks = self._acks.get(identity)
        if acks is None:
            acks = self._acks[identity] = []
        acks.extend([r.task_id for r in message.results])

    def _on_heartbeat(self, identity: bytes, message: Heartbeat, now: float) -> None:
        assert self.scheduler is not None
        cid = self._peers.get(identity)
        if cid is None:
            self._rehello(identity, now)
        else:
            self.scheduler.heartbeat(cid, message.running, message.draining, now)

    def _on_handback(self, identity: bytes, message: Handback, now: float) -> None:
        assert self.scheduler is not None
        cid = self._peers.get(identity)
        if cid is None:
            self._rehello(identity, now)
        else:
            self.scheduler.handback(cid, message.task_ids, now)

    def _on_goodbye(self, identity: bytes, message: Goodbye, now: float) -> None:
        assert self.scheduler is not None
        cid = self._peers.get(identity)
        if cid is not None:
            self.scheduler.goodbye(cid, now)

    def _on_status(self, identity: bytes, message: StatusRequest, now: float) -> None:
        self._send(identity, StatusReply(self.status()))

    # -- sending ---------------------------------------------------------------------------

    def _send(self, identity: bytes, message: Message) -> None:
        self._send_frame(identity, protocol.encode(message))

    def _send_frame(self, identity: bytes, frame: bytes) -> None:
        assert self._sock is not None
        try:
            self._sock.send_multipart([identity, frame], zmq.NOBLOCK)
        except zmq.Again:  # the peer's queue is full; heartbeats reconcile what it missed
            log.debug("dropped a message to %s: its queue is full", _peer_name(identity))

    def _broadcast(self, message: Message) -> None:
        frame = protocol.encode(message)
        for identity in self._identities.values():
            self._send_frame(identity, frame)

    def _rehello(self, identity: bytes, now: float) -> None:
        if now - self._rehellos.get(identity, -_REHELLO_EVERY) >= _REHELLO_EVERY:
            self._rehellos[identity] = now
            self._send(identity, Rehello("the master does not know this controller; send Hello"))

    def _complain(self, identity: bytes, problem: str) -> None:
        """A frame that is not a valid message: count it; log it and refuse the peer once in a
        while.  A registered controller is not refused (it passed its Hello); it is logged."""
        self.protocol_errors += 1
        now = time.monotonic()
        if now - self._complaints.get(identity, -_COMPLAIN_EVERY) < _COMPLAIN_EVERY:
            return
        self._complaints[identity] = now
        cid = self._peers.get(identity)
        who = f"controller {cid}" if cid else f"peer {_peer_name(identity)}"
        log.warning("ignored a bad message from %s: %s (%d bad messages so far)", who, problem, self.protocol_errors)
        if cid is None:
            self._send(identity, Refuse(f"bad message: {problem}"))

    # -- status ----------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """A snapshot as plain data: controllers, queue, counters, rate, sinks."""
        assert self.scheduler is not None
        assert self.journal is not None
        snapshot = self.scheduler.snapshot()
        rates = self._rates
        rate = 0.0
        if len(rates) >= 2 and rates[-1][0] > rates[0][0]:
            rate = (rates[-1][1] - rates[0][1]) / (rates[-1][0] - rates[0][0])
        latency = self.scheduler.stats.latency
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
            draining=self._phase != "running",
            generator={
                "name": self.generator.name,
                "exhausted": self._exhausted,
                "total": self._seq if self._exhausted else self._total,
                "error": self.generator_error,
            },
            sinks=[
                {
                    "name": d.name,
                    "backlog": d.backlog,
                    "delivered": d.delivered,
                    "errors": d.errors,
                    "failing": d.failing,
                    "last_error": d.last_error,
                }
                for d in self.deliveries
            ],
        )
        return snapshot

    def summary(self) -> dict[str, Any]:
        """The run in numbers (``cyclone run`` prints it): counts, duration, rate, round trip."""
        assert self.scheduler is not None
        stats = self.scheduler.stats
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
            "generator_error": self.generator_error,
        }


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 3)
