"""The master's decisions, without any I/O: who is registered on which connection, what to
send whom, when to pull the generator, and the phases of stopping.

:class:`MasterCore` takes events — a frame from routing identity X at time t, time passing,
tasks from the generator, the generator ending, a stop request, the sinks having caught up —
and gives back :class:`Effects`: journal these, send those (after the journal's commit),
dispatch these tasks on that connection, tell plugins who joined and who was lost, start or
end delivery.  :class:`~cyclone_core.engine.master.Master` is the thin loop around it that
owns the socket, the journal, the generator, the delivery threads and the clock.

Invariants (:meth:`MasterCore.check`, asserted after every step of the stateful tests):

- every registered controller is reachable: it has exactly one routing identity, and that
  identity speaks for it alone (a connection holds at most one controller id);
- no task is both queued and leased, and every lease belongs to a registered controller that
  lists it;
- a task becomes terminal at most once (a settled task leaves the window for good).
"""

from __future__ import annotations

import enum
import logging
from collections import Counter
from collections.abc import Callable, Collection
from typing import Any, Protocol

import attrs

from cyclone_core.engine import protocol
from cyclone_core.engine.protocol import (
    Enroll,
    Fetch,
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
    Sender,
    Shutdown,
    StatusRequest,
    Submit,
    Welcome,
)
from cyclone_core.engine.scheduler import LostController, Scheduler, TaskRecord, TaskState
from cyclone_core.model import Result
from cyclone_core.plural import plural
from cyclone_core.settings import MasterSettings

__all__ = ("ENROLLING", "ControllerJoined", "Effects", "EnrollRequest", "GrantLike", "MasterCore", "Phase")

log = logging.getLogger("cyclone.master")

#: Seconds between two complaints (log line, Refuse) about the same peer.
COMPLAIN_EVERY = 60.0
#: Seconds between two Rehellos to the same peer.
REHELLO_EVERY = 1.0
#: Seconds before asking a generator again after it yielded ``None``.
GENERATOR_IDLE = 0.05
#: Tasks taken from the generator per turn at most.
MAX_FEED_PER_TURN = 4096
#: Peers remembered for rate limiting at most; beyond, the memory starts afresh.
_MAX_REMEMBERED = 10_000
#: Frames from a connection that speaks for no controller yet are at most this large (Hello,
#: Enroll, a status request), unless its key is an admin's (a client submitting tasks):
#: anything larger is refused before it is decoded.
MAX_UNREGISTERED_FRAME = 64 * 1024
#: Complaint log lines (bad frames, refusals) per minute at most, from all peers together.
COMPLAINTS_PER_MINUTE = 20
#: Hellos one key may send in a burst before ``hellos_per_minute`` applies.
HELLO_BURST = 5
#: Prefix of the authenticated user id of a connection whose key is not admitted yet: it may
#: only send Enroll.  Not a character of Z85, so that no admitted key can start with it.
ENROLLING = "~"
#: Seconds added to the wait a controller whose id is still in use is told (Refuse's
#: ``retry_after``), so that its next Hello finds the old holder timed out.
IN_USE_MARGIN = 0.5


class GrantLike(Protocol):
    """What the core reads of an allowlist entry (:class:`cyclone_core.keys.Grant`)."""

    @property
    def name(self) -> str:
        """The grant's name (in log lines and refusals)."""

    @property
    def admin(self) -> bool:
        """Whether the key may ask for status."""

    @property
    def group(self) -> bool:
        """Whether the key is a shared group key (a higher controller limit)."""

    def allows(self, controller_id: str) -> bool:
        """Whether the key may speak for ``controller_id``."""


def peer_name(identity: bytes) -> str:
    """A routing identity as it may appear in a log line: printable ASCII, else hex."""
    text = identity.decode("ascii", errors="replace")
    return text if text.isprintable() and identity[:1] != b"\x00" else "0x" + identity.hex()


class Phase(enum.Enum):
    """The master's phases, in order."""

    #: Dispatching; the generator is pulled as the window drains.
    RUNNING = "running"
    #: Controllers were told to finish: their results, handbacks and goodbyes are taken in,
    #: for at most ``drain_timeout``.
    DRAINING = "draining"
    #: The sinks take what the journal holds, for at most ``delivery_timeout``.
    DELIVERING = "delivering"
    #: The loop ends.
    DONE = "done"


@attrs.frozen
class ControllerJoined:
    """A controller registered for the first time (not a reconnect)."""

    id: str
    host: str
    workers: int


@attrs.frozen
class EnrollRequest:
    """A key asking to be admitted with a join token's secret (the master redeems it)."""

    identity: bytes
    key: str
    secret: str


@attrs.define
class Effects:
    """What the master must do after a turn's events, in this order: journal (``submitted``,
    ``settled``, ``requeued``) and commit; then send ``sends`` and ``dispatch``; then tell the
    generator and plugins (``settled``, ``joined``, ``lost``); answer ``status_requests``,
    ``submissions`` and ``fetches``."""

    #: New tasks from the generator, for the journal.
    submitted: list[TaskRecord] = attrs.field(factory=list)
    #: Terminal results, with the record they end.
    settled: list[tuple[TaskRecord, Result]] = attrs.field(factory=list)
    #: Tasks whose counters or history changed and that wait in the queue again.
    requeued: list[TaskRecord] = attrs.field(factory=list)
    #: Messages to send once the journal is committed.
    sends: list[tuple[bytes, Message]] = attrs.field(factory=list)
    #: Tasks newly leased, by the routing identity of the controller they go to.
    dispatch: list[tuple[bytes, list[TaskRecord]]] = attrs.field(factory=list)
    joined: list[ControllerJoined] = attrs.field(factory=list)
    lost: list[LostController] = attrs.field(factory=list)
    #: Peers that asked for a status snapshot.
    status_requests: list[bytes] = attrs.field(factory=list)
    #: Tasks from attached clients, for the generator (or refused, if it takes none).
    submissions: list[tuple[bytes, Submit]] = attrs.field(factory=list)
    #: Attached clients asking for results.
    fetches: list[tuple[bytes, Fetch]] = attrs.field(factory=list)
    #: Keys asking to be admitted.
    enrollments: list[EnrollRequest] = attrs.field(factory=list)
    #: Delivery should finish what the journal holds (the DELIVERING phase began).
    begin_delivery: bool = False


class MasterCore:
    """Registration, identities, feed policy, stop phases and the scheduler of one master.

    :param settings: the ``[master]`` settings.
    :param master_id: this master's id (Welcome carries it).
    :param run_id: the run's id (Welcome carries it).
    :param known_types: task types the master can build (``None``: any).
    :param wall_offset: epoch seconds minus the monotonic clock (attempt histories).
    :param drain_timeout: seconds to wait for controllers when stopping.
    :param delivery_timeout: seconds the sinks get to catch up when stopping.
    :param grants: the allowlist's lookup (public key -> grant, ``None`` if not admitted); ``None``
        for a plaintext master, where every peer is its own key and an admin.
    :param master_key: the master's own public key: a client using it is an admin.
    :param resumed: the run resumes from a journal: its controllers may be reconnecting, so a
        run that is already complete waits up to ``controller_timeout`` for them to come back
        and be told to stop (rather than leave them reconnecting to nobody).

    With keys, every frame comes with the key ZeroMQ authenticated for its connection: a
    controller id is bound to the key that registered it, and a frame for it under another key
    is dropped; status requests need an admin key; a connection whose key is not admitted may
    only enroll.
    """

    def __init__(
        self,
        settings: MasterSettings,
        *,
        master_id: str,
        run_id: str,
        known_types: Collection[str] | None = None,
        wall_offset: float = 0.0,
        drain_timeout: float = 60.0,
        delivery_timeout: float = 30.0,
        grants: Callable[[str], GrantLike | None] | None = None,
        master_key: str | None = None,
        resumed: bool = False,
    ) -> None:
        self.settings = settings
        self.grants = grants
        self.master_key = master_key
        self.master_id = master_id
        self.run_id = run_id
        self.scheduler = Scheduler(settings, known_types=known_types, wall_offset=wall_offset)
        self.drain_timeout = drain_timeout
        self.delivery_timeout = delivery_timeout
        self.phase = Phase.RUNNING
        #: Why the master is stopping (Shutdown's reason).
        self.stop_reason = ""
        #: Whether the run stopped before its generator was done.
        self.interrupted = False
        #: Frames that were not valid messages.
        self.protocol_errors = 0
        #: The generator has nothing more (done or failed).
        self.exhausted = False
        #: The journal cannot be written (a full disk): nothing is dispatched or acknowledged,
        #: and the run does not end, until it can (:meth:`journal_failed`, :meth:`journal_written`).
        self.journal_full = False
        #: Frames and requests refused, by reason (status, metrics).
        self.refusals: Counter[str] = Counter()
        self._peers: dict[bytes, str] = {}  # routing identity -> controller id
        self._identities: dict[str, bytes] = {}  # controller id -> routing identity
        self._keys: dict[str, str | None] = {}  # controller id -> the key that registered it
        self._per_key: Counter[str | None] = Counter()  # controllers registered per key
        # (key, controller id) -> (tokens, at): see _hello_allowed.
        self._hello_budget: dict[tuple[str | None, str], tuple[float, float]] = {}
        self._complaint_times: list[float] = []
        self._acks: dict[bytes, list[str]] = {}
        self._complaints: dict[bytes, float] = {}
        self._rehellos: dict[bytes, float] = {}
        self._feed_after = 0.0
        self._deadline = 0.0
        self._resumed = resumed
        self._linger_until: float | None = None  # set at the first tick of a resumed run
        self._joined = False
        self._next_ping = 0.0
        self._effects = Effects()

    # -- queries ---------------------------------------------------------------------------

    @property
    def done(self) -> bool:
        """Whether the master's loop should end."""
        return self.phase is Phase.DONE

    def feed_room(self, now: float) -> int:
        """How many tasks to pull from the generator now (0: do not pull)."""
        if self.exhausted or self.journal_full or self.phase is not Phase.RUNNING or now < self._feed_after:
            return 0
        return max(0, min(self.scheduler.room, MAX_FEED_PER_TURN))

    def controller_of(self, identity: bytes) -> str | None:
        """The controller id that ``identity`` speaks for, if any."""
        return self._peers.get(identity)

    # -- events ----------------------------------------------------------------------------

    def frame(self, identity: bytes, frames: list[bytes], now: float, key: str | None = None) -> None:
        """Everything a peer sent in one ZeroMQ message (routing identity stripped), with the
        key ZeroMQ authenticated for its connection (``None`` on a plaintext master)."""
        if len(frames) != 1:
            self._complain(identity, f"expected one frame, got {len(frames)}", now)
            return
        cid = self._peers.get(identity)
        if cid is None and len(frames[0]) > MAX_UNREGISTERED_FRAME and not self._is_admin(key):
            self._complain(identity, f"a frame of {len(frames[0])} bytes before registering", now)
            return
        try:
            message = protocol.decode(frames[0])
        except ProtocolError as exc:
            self._complain(identity, str(exc), now)
            return
        if key is not None and key.startswith(ENROLLING):
            if type(message) is Enroll:
                self._effects.enrollments.append(EnrollRequest(identity, key[len(ENROLLING) :], message.secret))
            else:
                self._refused(identity, "not enrolled", f"{message.tag} from a key that is not admitted", now)
            return
        if cid is not None and self._keys.get(cid) != key:
            self._refused(identity, "wrong key", f"{message.tag} for controller {cid} under another key", now)
            return
        handler = _HANDLERS.get(type(message))
        if handler is None:
            self._complain(identity, f"unexpected {message.tag} message", now)
            return
        handler(self, identity, message, now, key)

    def submit(self, records: list[TaskRecord]) -> None:
        """New tasks from the generator (journaled with this turn's commit)."""
        if records:
            self._effects.submitted.extend(records)
            self.scheduler.submit(records)

    def resume(self, records: list[TaskRecord]) -> None:
        """Tasks back from the journal (already journaled)."""
        self.scheduler.submit(records)

    def generator_idle(self, now: float) -> None:
        """The generator has nothing right now (it yielded ``None``): ask again a bit later."""
        self._feed_after = now + GENERATOR_IDLE

    def generator_ended(self) -> None:
        """The generator is done, or failed: nothing more to pull."""
        self.exhausted = True

    def request_stop(self, now: float) -> None:
        """Stop: a first request drains, a second ends the loop at once."""
        if self.phase is Phase.RUNNING:
            self.interrupted = not (self.exhausted and not self.scheduler.tasks)
            self._begin_drain("master is stopping", now)
        else:
            self.phase = Phase.DONE

    def journal_failed(self, effects: Effects, now: float) -> None:
        """The journal could not commit ``effects`` (nor what came before, since the last
        commit that succeeded).  What depended on the commit is taken out of ``effects``: its
        Acks wait (the controllers keep and re-send those results), its dispatches go back to
        the queue, with the credit they used; and nothing more is dispatched or acknowledged
        until :meth:`journal_written`."""
        self.journal_full = True
        self.scheduler.stop_dispatching()
        sends = []
        for identity, message in effects.sends:
            if type(message) is protocol.Ack:
                self._acks.setdefault(identity, []).extend(message.task_ids)
            else:
                sends.append((identity, message))
        effects.sends = sends
        for identity, batch in effects.dispatch:
            cid = self._peers.get(identity)
            if cid is not None:
                ids = [record.id for record in batch]
                self.scheduler.handback(cid, ids, now)
                self.scheduler.grant(cid, len(ids), now)
        effects.dispatch = []

    def journal_written(self) -> None:
        """The journal committed everything again: acknowledge and dispatch as before."""
        self.journal_full = False
        self.scheduler.dispatching = self.phase is Phase.RUNNING

    def delivered(self) -> None:
        """Every sink caught up with the journal (while delivering)."""
        if self.phase is Phase.DELIVERING:
            self.phase = Phase.DONE

    def tick(self, now: float) -> None:
        """Time passed: leases and silent controllers, pings, the phases of stopping."""
        if self._linger_until is None:
            self._linger_until = now + self.settings.controller_timeout if self._resumed else now
        self.scheduler.tick(now)
        if now >= self._next_ping:
            self._next_ping = now + self.settings.heartbeat_interval
            self._broadcast(Ping())
            if len(self._hello_budget) > _MAX_REMEMBERED:  # forget the buckets full again anyway
                refilled = HELLO_BURST * 60.0 / self.settings.hellos_per_minute
                budget = self._hello_budget
                for stale in [k for k, (_, at) in budget.items() if now - at >= refilled]:
                    del budget[stale]
        if not self.journal_full:  # the run ends once its results are journaled (or by a second stop)
            self._next_phase(now)
        if len(self._complaints) > _MAX_REMEMBERED:
            self._complaints.clear()
        if len(self._rehellos) > _MAX_REMEMBERED:
            self._rehellos.clear()

    def _next_phase(self, now: float) -> None:
        """Move on to the next phase of stopping when it is time."""
        if self.phase is Phase.RUNNING:
            if self.exhausted and not self.scheduler.tasks:
                self._begin_drain("all tasks are done", now)
        elif self.phase is Phase.DRAINING:
            linger_until = self._linger_until if self._linger_until is not None else now
            gone = not self.scheduler.controllers and (self._joined or now >= linger_until)
            if gone or now > self._deadline:
                self.phase = Phase.DELIVERING
                self._deadline = now + self.delivery_timeout
                self._effects.begin_delivery = True
        elif self.phase is Phase.DELIVERING and now > self._deadline:
            self.phase = Phase.DONE

    def take(self, now: float) -> Effects:
        """Fill free credit and return everything the master must do for this turn."""
        actions = self.scheduler.take(now)
        effects, self._effects = self._effects, Effects()
        effects.settled.extend(actions.settled)
        effects.requeued.extend(actions.requeued)
        if self._acks and not self.journal_full:  # first: a Shutdown of the same turn comes after the last Ack
            effects.sends[:0] = [(identity, protocol.Ack(ids)) for identity, ids in self._acks.items()]
            self._acks = {}
        identities = self._identities
        effects.dispatch.extend((identities[cid], records) for cid, records in actions.dispatch.items())
        for lost in actions.lost:
            # A controller replaced by a new process with the same id keeps the new connection.
            if not self.scheduler.knows(lost.id):
                gone = identities.pop(lost.id, None)
                if gone is not None:
                    self._peers.pop(gone, None)
                if lost.id in self._keys:
                    self._per_key[self._keys.pop(lost.id)] -= 1
            if lost.reason == "goodbye":
                log.info("controller %s left", lost.id)
            else:
                log.warning("controller %s lost (%s): %d tasks re-queued", lost.id, lost.reason, lost.requeued)
        effects.lost.extend(actions.lost)
        return effects

    # -- messages --------------------------------------------------------------------------

    def _on_hello(self, identity: bytes, hello: Hello, now: float, key: str | None) -> None:
        cid = hello.controller_id
        held = self._peers.get(identity)
        if held is not None and held != cid:
            self._refuse(identity, cid, hello.host, f"this connection already speaks for controller '{held}'")
            return
        if self._older_connection(identity, cid, hello):
            # A Hello that waited on a connection the controller has since replaced (a healed
            # partition delivers it late): the controller closed that connection, so work sent
            # there would be lost.  Nothing is answered; the controller lives on its newer one.
            self._refused(identity, "replaced connection", f"Hello from controller {cid} on a replaced connection", now)
            return
        if not self._hello_allowed(key, cid, now):
            self._refused(identity, "hello rate", f"Hello from controller {cid} held back: too many from its key", now)
            return
        reason = self._admission(cid, key, now)
        scheduler = self.scheduler
        known = scheduler.knows(cid)
        if reason is None:
            reason = scheduler.register(
                cid,
                host=hello.host,
                pid=hello.pid,
                workers=hello.workers,
                credit=hello.credit,
                task_types=hello.task_types,
                now=now,
            )
        if reason is not None:
            # A new process of a controller whose old one is not timed out yet (restarted by
            # systemd or Slurm after a kill) is told when the id will be free.
            wait = scheduler.in_use_for(cid, hello.host, hello.pid, now)
            self._refuse(identity, cid, hello.host, reason, retry_after=wait + IN_USE_MARGIN if wait else 0.0)
            return
        previous = self._keys.get(cid, key)
        if previous != key:  # a new process of the same id under another key
            self._per_key[previous] -= 1
        if cid not in self._keys or previous != key:
            self._per_key[key] += 1
        self._keys[cid] = key
        old = self._identities.get(cid)
        if old is not None and old != identity:
            self._peers.pop(old, None)  # the old connection no longer speaks for it
            scheduler.connection_replaced(cid)
        self._peers[identity] = cid
        self._identities[cid] = identity
        self._joined = True
        settings = self.settings
        self._send(
            identity,
            Welcome(self.master_id, self.run_id, settings.heartbeat_interval, settings.controller_timeout),
        )
        if known:
            # While the journal is full, controllers register again and again for their Acks.
            log.log(logging.DEBUG if self.journal_full else logging.INFO, "controller %s reconnected", cid)
        else:
            log.info(
                "controller %s joined (%s, pid %d, %s)", cid, hello.host, hello.pid, plural(hello.workers, "worker")
            )
            self._effects.joined.append(ControllerJoined(cid, hello.host, hello.workers))
        if self.phase is not Phase.RUNNING:
            self._send(identity, Shutdown(self.stop_reason))

    def _on_results(self, identity: bytes, message: Results, now: float, key: str | None) -> None:
        cid = self._peers.get(identity)
        if cid is None:
            # Not acknowledged: the controller sends them again once it has registered.
            self.scheduler.stats.refused += len(message.results)
            self._rehello(identity, now)
            return
        acks = self._acks.get(identity)
        if acks and self.journal_full:
            # Acks wait: the controller sends its results again meanwhile, counted once.
            waiting = set(acks)
            message = Results([r for r in message.results if r.task_id not in waiting], message.credit)
        if len(message.results) + (len(acks) if acks else 0) > self.settings.max_credit:
            # More results in one turn than a controller can hold tasks: a flood, not a batch.
            # Dropped unacknowledged (a controller would send them again later).
            self.scheduler.stats.refused += len(message.results)
            self._refused(identity, "flood", f"{len(message.results)} results beyond what it can hold", now)
            return
        self.scheduler.results(cid, message.results, now)
        if message.credit:
            self.scheduler.grant(cid, message.credit, now)
        if message.results:
            if acks is None:
                acks = self._acks[identity] = []
            acks.extend([r.task_id for r in message.results])

    def _on_heartbeat(self, identity: bytes, message: Heartbeat, now: float, key: str | None) -> None:
        cid = self._peers.get(identity)
        if cid is None:
            self._rehello(identity, now)
        else:
            self.scheduler.heartbeat(cid, message.running, message.draining, now)

    def _on_handback(self, identity: bytes, message: Handback, now: float, key: str | None) -> None:
        cid = self._peers.get(identity)
        if cid is None:
            self._rehello(identity, now)
        else:
            self.scheduler.handback(cid, message.task_ids, now)

    def _on_goodbye(self, identity: bytes, message: Goodbye, now: float, key: str | None) -> None:
        cid = self._peers.get(identity)
        if cid is not None:
            self.scheduler.goodbye(cid, now)

    def _on_status(self, identity: bytes, message: StatusRequest, now: float, key: str | None) -> None:
        if self._is_admin(key):
            self._effects.status_requests.append(identity)
        elif self._refused(identity, "not admin", "a status request from a key without the admin role", now):
            self._send(identity, Refuse("status needs a key with the admin role"))

    def _on_submit(self, identity: bytes, message: Submit, now: float, key: str | None) -> None:
        if not self._is_admin(key):
            if self._refused(identity, "not admin", "a Submit from a key without the admin role", now):
                self._send(identity, Refuse("submitting tasks needs a key with the admin role"))
        elif self.phase is not Phase.RUNNING or self.exhausted:
            self._send(
                identity, Refuse(f"this master takes no more tasks: {self.stop_reason or 'its generator is done'}")
            )
        else:
            self._effects.submissions.append((identity, message))

    def _on_fetch(self, identity: bytes, message: Fetch, now: float, key: str | None) -> None:
        if self._is_admin(key):
            self._effects.fetches.append((identity, message))
        elif self._refused(identity, "not admin", "a Fetch from a key without the admin role", now):
            self._send(identity, Refuse("fetching results needs a key with the admin role"))

    def _on_enroll(self, identity: bytes, message: Enroll, now: float, key: str | None) -> None:
        self._refused(identity, "already admitted", "Enroll from a key that is admitted already", now)

    # -- keys --------------------------------------------------------------------------------

    def _is_admin(self, key: str | None) -> bool:
        if self.grants is None or (key is not None and key == self.master_key):
            return True
        grant = self.grants(key) if key is not None else None
        return grant is not None and grant.admin

    def _admission(self, cid: str, key: str | None, now: float) -> str | None:  # noqa: PLR0911 (a rule a return)
        """Why ``key`` may not register ``cid`` now, or ``None``."""
        settings = self.settings
        known = cid in self._keys
        if known and self._keys[cid] != key:
            ctl = self.scheduler.controllers[cid]
            if now - ctl.last_seen < settings.controller_timeout:
                return f"controller id '{cid}' is in use under another key"
        if not known and len(self._keys) >= settings.max_controllers:
            return f"the master has its maximum of {plural(settings.max_controllers, 'controller')}"
        if self.grants is None:
            return None
        grant = self.grants(key) if key is not None else None
        if grant is None:
            return "this key is not admitted"
        if not grant.allows(cid):
            return f"key '{grant.name}' may not use controller id '{cid}'"
        limit = settings.max_controllers_per_group_key if grant.group else settings.max_controllers_per_key
        if not (known and self._keys[cid] == key) and self._per_key[key] >= limit:
            return f"key '{grant.name}' has its maximum of {plural(limit, 'controller')}"
        return None

    def _hello_allowed(self, key: str | None, cid: str, now: float) -> bool:
        """A token bucket per key and controller id: :data:`HELLO_BURST` at once,
        ``hellos_per_minute`` after.  Per id, not per key alone, so that the many controllers
        of one group key (a Slurm job's) register at once, while one that cycles is held back
        (how many ids a key may hold is capped by ``max_controllers_per_(group_)key``)."""
        if key is None and self.grants is None:
            return True  # plaintext: every peer is anonymous, so no key to hold back
        rate = self.settings.hellos_per_minute / 60.0
        budget = self._hello_budget
        tokens, at = budget.get((key, cid), (float(HELLO_BURST), now))
        tokens = min(float(HELLO_BURST), tokens + (now - at) * rate)
        if tokens < 1.0:
            budget[(key, cid)] = (tokens, now)
            return False
        budget[(key, cid)] = (tokens - 1.0, now)
        return True

    def authenticate(self, key: str, *, enrolling: bool, now: float) -> str | None:
        """The user id for a connection with the CURVE public ``key`` (Z85), or ``None`` to
        refuse its handshake: admitted keys and the master's own are themselves; while
        ``enrolling`` (a join token is open), an unknown key may connect, to enroll only."""
        if key == self.master_key or (self.grants is not None and self.grants(key) is not None):
            return key
        if enrolling:
            return ENROLLING + key
        self._refused(key.encode(), "unknown key", f"a handshake with the unknown key {key}", now, named=False)
        return None

    def handshake_failed(self, detail: str, now: float) -> None:
        """A connection failed its CURVE handshake (no key, plaintext, or another master's key)."""
        self._refused(b"", "handshake", f"a connection that failed its handshake ({detail})", now, named=False)

    def grants_changed(self, now: float) -> None:
        """The allowlist changed: controllers whose key is no longer admitted for their id are
        cut off (told so, their leases re-queued at no cost to the tasks)."""
        if self.grants is None:
            return
        for cid, key in list(self._keys.items()):
            grant = self.grants(key) if key is not None else None
            if grant is not None and grant.allows(cid):
                continue
            identity = self._identities.get(cid)
            log.warning("controller %s cut off: its key is no longer admitted", cid)
            self.scheduler.revoke(cid, "revoked", now)
            if identity is not None:
                self._send(identity, Refuse("this controller's key was revoked"))

    # -- internals -------------------------------------------------------------------------

    def _send(self, identity: bytes, message: Message) -> None:
        self._effects.sends.append((identity, message))

    def _broadcast(self, message: Message) -> None:
        self._effects.sends.extend((identity, message) for identity in self._identities.values())

    def _begin_drain(self, reason: str, now: float) -> None:
        self.phase = Phase.DRAINING
        self.stop_reason = reason
        self._deadline = now + self.drain_timeout
        self.scheduler.stop_dispatching()
        log.info("%s: telling %s to finish", reason, plural(len(self.scheduler.controllers), "controller"))
        self._broadcast(Shutdown(reason))

    def _refuse(self, identity: bytes, cid: str, host: str, reason: str, *, retry_after: float = 0.0) -> None:
        log.warning("refused controller %s on %s: %s", cid, host, reason)
        self._send(identity, Refuse(reason, retry_after=retry_after))

    def _refused(self, identity: bytes, reason: str, detail: str, now: float, *, named: bool = True) -> bool:
        """Drop a frame or request for ``reason``: counted, and logged now and then (``named``:
        the line names the peer's routing id); returns whether it was logged (and so may be
        answered)."""
        self.refusals[reason] += 1
        if not self._may_complain(identity, now):
            return False
        who = f" from {peer_name(identity)}" if named else ""
        log.warning("refused%s: %s (%d refused for this reason so far)", who, detail, self.refusals[reason])
        return True

    def _may_complain(self, identity: bytes, now: float) -> bool:
        """Whether to log (and answer) a problem with ``identity`` now: once a minute per peer,
        and :data:`COMPLAINTS_PER_MINUTE` lines from all peers together."""
        if now - self._complaints.get(identity, -COMPLAIN_EVERY) < COMPLAIN_EVERY:
            return False
        times = self._complaint_times
        while times and now - times[0] >= 60.0:
            times.pop(0)
        if len(times) >= COMPLAINTS_PER_MINUTE:
            return False
        times.append(now)
        self._complaints[identity] = now
        return True

    def _older_connection(self, identity: bytes, cid: str, hello: Hello | None = None) -> bool:
        """Whether ``identity`` is an older connection of ``cid``'s process than the one it is
        registered on: controllers number their connections ``<id>.<n>``, from 1 in each
        process (``hello``, if given, must come from the registered process)."""
        current = self._identities.get(cid)
        if current is None or current == identity:
            return False
        if hello is not None:
            ctl = self.scheduler.controllers.get(cid)
            if ctl is None or (ctl.host, ctl.pid) != (hello.host, hello.pid):
                return False
        prefix = cid.encode() + b"."
        if not (identity.startswith(prefix) and current.startswith(prefix)):
            return False
        old, new = identity[len(prefix) :], current[len(prefix) :]
        return old.isdigit() and new.isdigit() and int(old) < int(new)

    def _rehello(self, identity: bytes, now: float) -> None:
        cid, _, number = identity.rpartition(b".")
        if number.isdigit() and self._older_connection(identity, cid.decode(errors="replace")):
            return  # a connection its controller replaced: it would only answer there
        if now - self._rehellos.get(identity, -REHELLO_EVERY) >= REHELLO_EVERY:
            self._rehellos[identity] = now
            self._send(identity, Rehello("the master does not know this controller; send Hello"))

    def _complain(self, identity: bytes, problem: str, now: float) -> None:
        """A frame that is not a valid message: count it; log it and refuse the peer once in a
        while.  A registered controller is not refused (it passed its Hello); it is logged."""
        self.protocol_errors += 1
        if not self._may_complain(identity, now):
            return
        cid = self._peers.get(identity)
        who = f"controller {cid}" if cid else f"peer {peer_name(identity)}"
        log.warning("ignored a bad message from %s: %s (%d bad messages so far)", who, problem, self.protocol_errors)
        if cid is None:
            self._send(identity, Refuse(f"bad message: {problem}"))

    # -- invariants --------------------------------------------------------------------------

    def check(self) -> None:
        """Raise ``AssertionError`` if an invariant does not hold (tests call this)."""
        scheduler = self.scheduler
        controllers = scheduler.controllers
        assert set(self._identities) == set(controllers), "every registered controller has one connection"
        assert {cid: ident for ident, cid in self._peers.items()} == self._identities, "a connection, one id"
        assert len(self._peers) == len(self._identities), "a connection speaks for one controller"
        assert set(self._keys) == set(controllers), "every registered controller is bound to its key"
        assert +self._per_key == Counter(self._keys.values()), "the count of controllers per key is right"
        queued = 0
        for task_id, record in scheduler.tasks.items():
            assert record.id == task_id
            if record.state is TaskState.PENDING:
                queued += 1
                assert record.controller is None, f"{task_id} is queued and leased"
            else:
                assert record.state is TaskState.LEASED, f"{task_id} is in the window but {record.state}"
                ctl = record.controller
                assert ctl is not None, f"{task_id} is leased to nobody"
                assert controllers.get(ctl.id) is ctl, f"{task_id} is leased to an unregistered controller"
                assert ctl.leases.get(task_id) is record, f"{task_id}'s controller does not list it"
        assert queued == scheduler.queued, "the queue count matches the pending tasks"
        for ctl in controllers.values():
            for task_id, record in ctl.leases.items():
                assert scheduler.tasks.get(task_id) is record, f"{ctl.id} holds {task_id}, not in the window"
                assert record.controller is ctl, f"{ctl.id} holds {task_id}, leased to another"


_Handler = Callable[[MasterCore, bytes, Any, float, "str | None"], None]
#: One handler for every message a controller or a status client sends (checked at import).
_HANDLERS: dict[type[Any], _Handler] = protocol.handler_table(
    "the master",
    [Sender.CONTROLLER, Sender.CLIENT],
    {
        Hello: MasterCore._on_hello,
        Results: MasterCore._on_results,
        Heartbeat: MasterCore._on_heartbeat,
        Handback: MasterCore._on_handback,
        Goodbye: MasterCore._on_goodbye,
        StatusRequest: MasterCore._on_status,
        Submit: MasterCore._on_submit,
        Fetch: MasterCore._on_fetch,
        Enroll: MasterCore._on_enroll,
    },
)
