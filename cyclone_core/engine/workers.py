"""The worker pool: a controller's worker processes, and how tasks reach them and results return.

Process model
    Workers are started by the ``forkserver`` start method.  ZeroMQ is not fork-safe: a child
    forked from a process whose context has sockets and I/O threads inherits them in a broken
    state.  The fork server is a fresh interpreter (fork and exec) that imports Cyclone and the
    installed plugins once; every worker is forked from that clean process, never from the
    controller.  A replacement worker after a crash or a timeout is ready in about 20 ms, where
    ``spawn`` plus the plugin imports take a quarter of a second.

Channels
    Each worker has a Unix socket pair to the controller and a small shared-memory slot.

    - controller → worker: msgpack batches of task rows ``[seq, id, type, args, attempt,
      timeout, key]``, at most ``depth`` tasks outstanding per worker (see
      :mod:`~cyclone_core.engine.pool_state` for how many a worker gets);
    - worker → controller: a stream of msgpack messages: ``ready``; a ``result`` (the
      protocol's result row, made and size-checked by
      :class:`~cyclone_core.engine.execution.TaskRunner`, as in ``run_task``) per task;
      ``returned`` for queued tasks it skips while draining; forwarded log records.  A worker
      sends its results in batches: when it has no task left, when half its queue is done (the
      controller refills it meanwhile), and before it starts a task once the oldest result has
      waited a millisecond.  Results a worker still held when it died are lost with it; their
      tasks run again;
    - the slot: the worker writes the ``seq`` and start time of each task as it starts it, so
      the controller knows at every moment which task each worker runs, to time it out or
      report it crashed; the controller sets its drain flag, upon which the worker returns the
      tasks it has queued instead of starting them.

Only the process arguments are pickled, once, at start (the socket, the slot, plain settings:
the task types the controller runs and its ``[controller.local.*]`` tables, which each worker
builds into a task type's local settings once, when its first task of that type arrives).

Signals and death
    Workers ignore SIGINT, and SIGTERM unless the controller set the slot's kill flag first: the
    controller decides (systemd and Slurm signal every process of a service or job, and the
    controller then drains).  They run in their own process group, and exit as soon as the
    controller's end of the socket closes, even in the middle of a task: a watchdog thread
    waits for that hang-up.

    No process outlives its task (:mod:`~cyclone_core.engine.reaper`): each worker is a child
    subreaper, so what a task starts stays its descendant even after a double fork or
    ``setsid``.  The worker kills what a task left when the task ends; the controller kills a
    worker's descendants before it kills the worker (a timeout, an abort); a worker whose
    controller is gone kills its descendants before it exits.  The
    controller learns that a worker ended from its exit sentinel (with the exit code or signal),
    or from its socket should the fork server itself have been killed.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import multiprocessing
import multiprocessing.context
import multiprocessing.util
import os
import select
import shutil
import signal
import socket
import sys
import threading
import time
import types
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from ctypes import Array, c_double
from typing import Any

import attrs
import msgpack
import zmq

from cyclone_core.engine import tempdirs
from cyclone_core.engine.execution import TaskRunner, ended_row, timed_out
from cyclone_core.engine.pool_state import Job, PoolState, WorkerBook
from cyclone_core.engine.protocol import TaskEnvelope
from cyclone_core.engine.reaper import become_subreaper, end_leftovers, kill_descendants
from cyclone_core.errors import CycloneError
from cyclone_core.model import Status
from cyclone_core.plugins import Plugins, get_plugins

__all__ = ("DEFAULT_BUDGET", "DEFAULT_DEPTH", "KILL_GRACE", "WorkerPool")

log = logging.getLogger("cyclone.workers")

#: Tasks a worker is given at most (running plus queued in the worker).
DEFAULT_DEPTH = 16
#: Seconds of expected work a worker is given at most when it gets more than one task.
DEFAULT_BUDGET = 0.002
#: Seconds between SIGTERM and SIGKILL for a worker being killed.
KILL_GRACE = 2.0
#: Workers dying before they are ready, in a row, after which the pool gives up.
MAX_FAILED_STARTS = 3

# Messages from a worker: [kind, ...].
_READY, _RESULT, _RETURNED, _LOG = range(4)
# The shared slot: seq of the task started last, its time.monotonic() start, the drain flag,
# and the kill flag (set before the controller sends SIGTERM: a SIGTERM without it is ignored).
_SEQ, _STARTED, _DRAIN, _KILL = range(4)
_READ_SIZE = 256 * 1024
#: Poll flags as plain ints: pyzmq's flag enums cost a Python call per ``&`` and ``|``.
_POLLIN, _POLLOUT = int(zmq.POLLIN), int(zmq.POLLOUT)
# A worker sends the results it holds before starting another task once the oldest is this old.
_FLUSH_AFTER = 0.001
#: A task shorter than this cannot have started a process (a fork or a spawn takes far
#: longer), so the worker looks for leftovers (about 2 us) only after longer tasks, and at
#: least every ``_CHECK_EVERY`` seconds (a process started later by a thread the task left).
_SPAWN_TAKES = 20e-6
_CHECK_EVERY = 0.1

_pack = msgpack.Packer().pack
#: The start of a result message: msgpack's header of a list of three, and the kind.
_RESULT_HEAD = b"\x93" + _pack(_RESULT)


@attrs.define(eq=False)
class _Worker:
    """The controller's handle on one worker process."""

    book: WorkerBook
    process: multiprocessing.process.BaseProcess
    sock: socket.socket
    slot: Array[c_double]
    unpacker: msgpack.Unpacker = attrs.field(factory=lambda: msgpack.Unpacker(raw=False))
    #: Bytes for the worker that its socket did not take yet.
    outbuf: bytearray = attrs.field(factory=bytearray)
    ready: bool = False
    #: Its socket reached end of file: nothing more to read, only its exit to wait for.
    eof: bool = False
    #: The fork server (its parent) died: its exit sentinel says nothing; its socket's end of
    #: file tells when it ends.
    orphaned: bool = False
    #: Being killed: its tasks were settled already; SIGKILL follows at ``kill_at``.
    retired: bool = False
    kill_at: float | None = None


class WorkerPool:
    """A controller's worker processes and the tasks it holds for them.

    The pool does no waiting of its own: its owner polls :meth:`poll_items` (with ZeroMQ's
    poller, beside its own sockets), passes what is ready to :meth:`handle`, and wakes up no
    later than :meth:`next_deadline`.  What the pool produces accumulates in :attr:`results`
    (terminal results as the protocol's result rows, in the order they ended) and
    :attr:`handed_back` (ids of tasks it gives up unstarted while draining); the owner takes
    them away.

    :param size: number of worker processes.
    :param controller_id: written into every result.
    :param task_types: the only task types the workers run (another fails saying so);
        ``None``: every installed one.
    :param local: the controller's ``[controller.local.<section>]`` tables, for the tasks'
        ``ctx.local``.
    :param depth: tasks a worker is given at most.
    :param budget: seconds of expected work a task may wait behind at a busy worker (see
        :mod:`~cyclone_core.engine.pool_state`).
    :param kill_grace: seconds between SIGTERM and SIGKILL when a worker is killed.
    """

    def __init__(
        self,
        size: int,
        *,
        controller_id: str,
        task_types: Sequence[str] | None = None,
        local: Mapping[str, Mapping[str, Any]] | None = None,
        depth: int = DEFAULT_DEPTH,
        budget: float = DEFAULT_BUDGET,
        kill_grace: float = KILL_GRACE,
    ) -> None:
        if size < 1:
            raise ValueError(f"a pool needs at least one worker, got {size}")
        self.size = size
        self.controller_id = controller_id
        self.task_types = None if task_types is None else list(task_types)
        self.local = {section: dict(table) for section, table in (local or {}).items()}
        self.kill_grace = kill_grace
        self.state = PoolState(depth, budget)
        #: Result rows (see :func:`~cyclone_core.engine.protocol.result_to_row`): the
        #: controller sends them on as they are, the master validates them.
        self.results: list[list[Any]] = []
        self.handed_back: list[str] = []
        self._workers: dict[WorkerBook, _Worker] = {}
        self._dying: list[_Worker] = []
        self._started = 0
        self._failed_starts = 0
        self._closed = False
        self._deadline: float | None = None
        # One receive buffer for every worker (the unpackers copy what they are fed): a fresh
        # buffer per read costs the kernel a mapping and an unmapping each time.
        self._buffer = memoryview(bytearray(_READ_SIZE))

    # -- life cycle ------------------------------------------------------------------------

    def start(self) -> None:
        """Start the worker processes (they load the plugins while tasks already queue up)."""
        for _ in range(self.size):
            self._spawn()

    def close(self, timeout: float = 2.0) -> None:
        """Stop every worker: close their sockets, wait up to ``timeout`` s, then kill."""
        self._closed = True
        workers = [*self._workers.values(), *self._dying]
        for worker in workers:
            worker.sock.close()
        deadline = time.monotonic() + timeout
        for worker in workers:
            worker.process.join(max(0.0, deadline - time.monotonic()))
            if worker.process.exitcode is None:
                _kill_tree(worker.process, signal.SIGKILL)
                worker.process.join(5.0)
            if worker.process.exitcode is not None:
                worker.process.close()
        self._workers.clear()
        self._dying.clear()

    def _spawn(self) -> None:
        self._started += 1
        name = f"worker-{self._started}"
        ours, theirs = socket.socketpair()
        context = _forkserver()
        slot = context.RawArray(c_double, 4)
        process = context.Process(
            target=_worker_main,
            name=f"cyclone-{name}",
            args=(theirs, slot, self.controller_id),
            kwargs={
                "flush_every": max(1, self.state.depth // 2),
                "log_level": logging.getLogger().getEffectiveLevel(),
                "environ": dict(os.environ),
                "sys_path": list(sys.path),
                "plugin_modules": _inprocess_plugins(),
                "task_types": self.task_types,
                "local": self.local,
            },
        )
        try:
            process.start()
        except OSError as exc:
            ours.close()
            raise CycloneError(f"cannot start a worker process: {exc}") from None
        finally:
            theirs.close()
        ours.setblocking(False)
        book = self.state.add_worker(name)
        self._workers[book] = _Worker(book, process, ours, slot)

    # -- tasks -----------------------------------------------------------------------------

    def submit(self, envelopes: Iterable[TaskEnvelope]) -> list[TaskEnvelope]:
        """Take tasks to run; returns those already held (ignored: never run twice at once)."""
        duplicates = self.state.add(envelopes)
        self._assign()
        return duplicates

    def drain(self) -> None:
        """Start no more tasks: hand back the waiting ones now, and make each worker return
        those it has queued; running tasks go on."""
        self.handed_back.extend(job.envelope.id for job in self.state.drain())
        for worker in self._workers.values():
            worker.slot[_DRAIN] = 1.0

    def resume(self) -> None:
        """Start tasks again after a drain that ended with nothing held: the workers run what
        they get, and those killed while draining are replaced."""
        self.state.resume()
        for worker in self._workers.values():
            worker.slot[_DRAIN] = 0.0
        for _ in range(self.size - len(self._workers)):
            self._spawn()

    def abort(self) -> list[str]:
        """Kill every worker that holds a task; returns the ids of the tasks they were running
        (their queued ones go to :attr:`handed_back` as :meth:`drain` does)."""
        aborted = []
        for worker in list(self._workers.values()):
            if worker.book.queue:
                job = self._retire(worker, _announced(worker.slot)[0])
                if job is not None:
                    aborted.append(job.envelope.id)
        return aborted

    @property
    def busy(self) -> bool:
        """True while the pool holds any task."""
        return bool(self.state.jobs)

    def held_ids(self) -> list[str]:
        """Ids of every task held: waiting, queued in a worker or running."""
        return self.state.held_ids()

    def running_ids(self) -> list[str]:
        """Ids of the tasks the workers are running at this moment."""
        running = (self.state.running(worker.book, _announced(worker.slot)[0]) for worker in self._workers.values())
        return [job.envelope.id for job in running if job is not None]

    def pids(self) -> list[int]:
        """Process ids of the live workers."""
        return [worker.process.pid for worker in self._workers.values() if worker.process.pid is not None]

    # -- the owner's loop ------------------------------------------------------------------

    def poll_items(self) -> list[tuple[int, int]]:
        """``(fd, events)`` pairs for :func:`zmq.zmq_poll`: worker sockets and exit sentinels."""
        items: list[tuple[int, int]] = []
        for worker in self._workers.values():
            if not worker.eof:
                items.append((worker.sock.fileno(), _POLLOUT | _POLLIN if worker.outbuf else _POLLIN))
            if not worker.orphaned:
                items.append((worker.process.sentinel, _POLLIN))
        items.extend((worker.process.sentinel, _POLLIN) for worker in self._dying)
        return items

    def handle(self, ready: Sequence[tuple[Any, int]]) -> None:
        """Process what :func:`zmq.zmq_poll` found ready (items not ours are ignored), then
        time out overdue tasks and hand waiting tasks to workers with room."""
        if ready:
            by_fd: dict[int, _Worker] = {}
            for worker in [*self._workers.values(), *self._dying]:
                by_fd[worker.process.sentinel] = worker
                if not worker.eof:
                    by_fd[worker.sock.fileno()] = worker
            ended = []
            for fd, events in ready:
                found = by_fd.get(fd)
                if found is None:
                    continue
                if fd == found.process.sentinel:
                    ended.append(found)
                    continue
                if events & _POLLIN:
                    self._read(found)
                    if found.eof and found.orphaned:
                        ended.append(found)
                if events & _POLLOUT:
                    self._flush(found)
            for worker in ended:
                self._reap(worker)
        self._check_deadlines()
        self._assign()

    def next_deadline(self) -> float | None:
        """The ``time.monotonic()`` by which :meth:`handle` must run again, if any."""
        return self._deadline

    def wait(self, timeout: float | None = None) -> None:
        """Wait until a worker has news, a deadline passes or ``timeout`` s pass, and handle it
        (for a pool used on its own, without a ZeroMQ socket beside it)."""
        until = self._deadline
        if timeout is not None:
            limit = time.monotonic() + timeout
            until = limit if until is None else min(until, limit)
        wait_ms = -1 if until is None else max(0, int((until - time.monotonic()) * 1000) + 1)
        self.handle(zmq.zmq_poll(self.poll_items(), wait_ms))

    # -- internals -------------------------------------------------------------------------

    def _assign(self) -> None:
        shortest = math.inf
        for book, jobs in self.state.assign():
            self._send(self._workers[book], _pack([_task_row(job) for job in jobs]))
            for job in jobs:
                timeout = job.envelope.timeout
                if timeout and timeout < shortest:
                    shortest = timeout
        if shortest != math.inf:
            # None of them can time out before this: the owner must not sleep past it.
            due = time.monotonic() + shortest
            if self._deadline is None or due < self._deadline:
                self._deadline = due

    def _send(self, worker: _Worker, data: bytes) -> None:
        if worker.outbuf:
            worker.outbuf += data
            return
        try:
            sent = worker.sock.send(data)
        except BlockingIOError:
            sent = 0
        except OSError:
            return  # the worker is gone; its sentinel says so
        if sent < len(data):
            worker.outbuf += data[sent:]

    def _flush(self, worker: _Worker) -> None:
        try:
            sent = worker.sock.send(worker.outbuf)
        except BlockingIOError:
            return
        except OSError:
            worker.outbuf.clear()
            return
        del worker.outbuf[:sent]

    def _read(self, worker: _Worker) -> None:
        buffer = self._buffer
        while True:
            try:
                size = worker.sock.recv_into(buffer)
            except BlockingIOError:
                break
            except OSError:
                size = 0
            if not size:
                worker.eof = True
                break
            worker.unpacker.feed(buffer[:size])
            if size < _READ_SIZE:
                break
        try:
            for message in worker.unpacker:
                self._on_message(worker, message)
        except (IndexError, TypeError, ValueError) as exc:  # msgpack's format errors are ValueErrors
            log.error("worker %s sent an invalid message (%s); killing it", worker.book.name, exc)
            seq, started = _announced(worker.slot)
            job = self._retire(worker, seq)
            if job is not None:
                self._add_result(self._ended(job, Status.CRASHED, "worker process sent an invalid message", started))

    def _on_message(self, worker: _Worker, message: Any) -> None:
        if type(message) is not list:
            raise TypeError(f"expected a list, got {type(message).__name__}")
        kind = message[0]
        if kind == _RESULT:
            if not worker.retired:
                job = self.state.done(worker.book, message[1])
                self._add_result(self._result(job, message[2]))
        elif kind == _RETURNED:
            if not worker.retired:
                job = self.state.done(worker.book, message[1])
                self.handed_back.append(job.envelope.id)
        elif kind == _LOG:
            _, level, name, text = message
            logger = logging.getLogger(name)
            if logger.isEnabledFor(level):
                record = logger.makeRecord(name, level, "(worker)", 0, text, (), None)
                record.process, record.processName = worker.process.pid, worker.process.name
                logger.handle(record)
        elif kind == _READY:
            worker.ready = True
            self._failed_starts = 0
        else:
            raise ValueError(f"unknown message kind {kind!r}")

    def _add_result(self, row: list[Any]) -> None:
        self.results.append(row)
        self.state.learn(row[1], row[6])

    def _result(self, job: Job, row: Any) -> list[Any]:
        """The worker's result row, checked only as far as the pool relies on it (its task and
        duration): the fields the task filled in are validated where the row is decoded."""
        if type(row) is list and len(row) == 12 and row[0] == job.envelope.id and type(row[6]) is float:
            return row
        return self._ended(job, Status.FAILED, "the worker sent a malformed result")

    def _ended(self, job: Job, status: Status, error: str, started: float | None = None) -> list[Any]:
        """The result row of a task that ended without a result of its own; it started at
        ``started`` (``time.monotonic()``), if it did."""
        envelope = job.envelope
        return ended_row(
            envelope.id,
            envelope.type,
            envelope.key,
            envelope.attempt,
            status=status,
            error=error,
            duration=0.0 if started is None else time.monotonic() - started,
            controller=self.controller_id,
        )

    def _reap(self, worker: _Worker) -> None:
        """The worker process ended: settle its tasks and start a replacement."""
        code = None if worker.orphaned else worker.process.exitcode
        if worker.retired:
            self._dying.remove(worker)
            worker.process.close()
            return
        self._read(worker)  # what it wrote before it ended counts
        if worker.retired:  # it sent something invalid
            return
        if not worker.eof:
            # Its socket is open, so it lives: the sentinel fired because the fork server died
            # (a SIGTERM sent to every process of the controller, say).
            if not worker.orphaned:
                log.warning("the workers' fork server ended; worker %s runs on", worker.book.name)
                worker.orphaned = True
            return
        del self._workers[worker.book]
        worker.sock.close()
        seq, started = _announced(worker.slot)
        running, handed_back = self.state.remove_worker(worker.book, seq)
        reason = _exit_reason(code)
        if running is not None:
            log.warning("task %s crashed its worker: %s", running.envelope.id, reason)
            self._add_result(self._ended(running, Status.CRASHED, reason, started))
        self.handed_back.extend(job.envelope.id for job in handed_back)
        worker.process.close()
        if not worker.ready:
            self._failed_starts += 1
            if self._failed_starts >= MAX_FAILED_STARTS:
                raise CycloneError(f"worker processes die before they are ready ({reason})")
        self._replace()

    def _retire(self, worker: _Worker, seq: int) -> Job | None:
        """Kill ``worker`` (SIGTERM now, SIGKILL after the grace) and settle its tasks, given
        the ``seq`` it announced (read once by the caller, which decided on it); returns the job
        it was running, which the caller reports."""
        running, handed_back = self.state.remove_worker(worker.book, seq)
        self.handed_back.extend(job.envelope.id for job in handed_back)
        del self._workers[worker.book]
        worker.retired = True
        worker.slot[_KILL] = worker.slot[_DRAIN] = 1.0  # it starts nothing more
        _kill_tree(worker.process, signal.SIGTERM)
        worker.sock.close()  # makes its watchdog end it, should the task survive SIGTERM
        worker.kill_at = time.monotonic() + self.kill_grace
        self._dying.append(worker)
        self._replace()
        return running

    def _replace(self) -> None:
        if not self._closed and not self.state.draining:
            self._spawn()

    def _check_deadlines(self) -> None:
        """Kill workers whose running task is past its timeout; note when to look again."""
        now = time.monotonic()
        deadline = math.inf
        for worker in list(self._workers.values()):
            # Read once: the worker may move on to its next task at any moment, and every
            # decision below is about the task it announced here.
            seq, started = _announced(worker.slot)
            for job in worker.book.queue:
                timeout = job.envelope.timeout
                if job.seq < seq or not timeout:
                    continue
                if job.seq > seq:
                    # Not started yet: its deadline is later than this.
                    deadline = min(deadline, now + timeout)
                    continue
                due = started + timeout
                if now < due:
                    deadline = min(deadline, due)
                    continue
                if int(worker.slot[_SEQ]) != seq:
                    # It ended after all and the worker has moved on: its result is on the way.
                    # Look at the next task at once.
                    deadline = now
                    break
                # Should it end right now, the books still hold: it is reported timed out and
                # the tasks after it run again.
                error = timed_out(timeout)
                log.warning("task %s %s; killing its worker", job.envelope.id, error)
                self._retire(worker, seq)
                self._add_result(self._ended(job, Status.TIMEOUT, error, started))
                break
        for worker in self._dying:
            if worker.kill_at is None:
                continue
            if now >= worker.kill_at:
                _kill_tree(worker.process, signal.SIGKILL)
                worker.kill_at = None
            else:
                deadline = min(deadline, worker.kill_at)
        self._deadline = None if deadline == math.inf else deadline


def _announced(slot: Array[c_double]) -> tuple[int, float]:
    """The ``seq`` of the task the worker started last and its ``time.monotonic()`` start.

    The seq is read first, as the worker writes them the other way round: should the worker
    start another task in between, the start time is too late, never too early (a timeout is
    never premature).  Callers read this once and decide on it.
    """
    return int(slot[_SEQ]), slot[_STARTED]


def _task_row(job: Job) -> list[Any]:
    envelope = job.envelope
    return [job.seq, envelope.id, envelope.type, envelope.args, envelope.attempt, envelope.timeout, envelope.key]


def _exit_reason(code: int | None) -> str:
    if code is None:
        return "worker process ended"
    if code < 0:
        try:
            return f"worker process killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"worker process killed by signal {-code}"
    return f"worker process exited with code {code}"


def _kill_tree(process: multiprocessing.process.BaseProcess, signum: int) -> None:
    """Kill the worker's descendants, which it holds as a subreaper (while it lives), then
    send ``signum`` to its process group."""
    if process.pid is not None:
        kill_descendants(process.pid)
    _signal_group(process, signum)


def _signal_group(process: multiprocessing.process.BaseProcess, signum: int) -> None:
    """Signal the worker's process group (the task's own subprocesses too)."""
    pid = process.pid
    if pid is None:
        return
    try:
        os.killpg(pid, signum)
    except ProcessLookupError:
        # It has not made its own group yet, or is gone already.
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)


_context: multiprocessing.context.ForkServerContext | None = None


def _forkserver() -> multiprocessing.context.ForkServerContext:
    """The fork server context, preloading this module and the installed plugins."""
    global _context
    if _context is None:
        _own_temp_dir()
        context = multiprocessing.get_context("forkserver")
        modules = {info.module.partition(":")[0] for info in get_plugins().infos() if info.module and info.distribution}
        # "__main__" as multiprocessing does by default: the workers' start reads the main
        # module, so the fork server imports it once for all of them.
        context.set_forkserver_preload(["__main__", __name__, *sorted(modules)])
        _context = context
    return _context


def _own_temp_dir() -> None:
    """Give multiprocessing (the fork server's socket) a directory named after this process,
    instead of its anonymous ``pymp-*``, so that one a killed controller leaves is swept up
    (:mod:`~cyclone_core.engine.tempdirs`); it is removed at exit as multiprocessing removes its own."""
    # multiprocessing.util.get_temp_dir() takes the directory from here when it is set.
    config = getattr(multiprocessing.current_process(), "_config", None)
    if not isinstance(config, dict) or config.get("tempdir") is not None:
        return
    path = tempdirs.make("mp", socket_name=len("listener-") + 8)  # the fork server's socket
    multiprocessing.util.Finalize(None, shutil.rmtree, args=(path, True), exitpriority=-100)
    config["tempdir"] = path


def _inprocess_plugins() -> list[tuple[str, str]]:
    """``(name, module)`` of plugin modules registered in this process rather than installed,
    for the workers to register too (a plugin's tests do this)."""
    plugins = get_plugins()
    found = []
    for info in plugins.infos():
        plugin = plugins.manager.get_plugin(info.name)
        if info.distribution is None and isinstance(plugin, types.ModuleType):
            found.append((info.name, plugin.__name__))
    return found


# -- the worker process ------------------------------------------------------------------------


def _worker_main(
    sock: socket.socket,
    slot: Array[c_double],
    controller_id: str,
    *,
    flush_every: int,
    log_level: int,
    environ: dict[str, str],
    sys_path: list[str],
    plugin_modules: Sequence[tuple[str, str]],
    task_types: Sequence[str] | None,
    local: Mapping[str, Mapping[str, Any]],
) -> None:
    """Entry point of a worker process."""
    # SIGINT and SIGTERM are for the controller: systemd and Slurm send SIGTERM to every process
    # of a service or job, and the controller then drains; a worker ends on SIGTERM only when
    # the controller kills it (and set the kill flag first).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, functools.partial(_on_sigterm, slot))
    os.setpgrp()
    become_subreaper()  # what a task starts stays this worker's to kill, whatever it does
    # The fork server's environment and module path date from its start; the controller's now
    # are the ones to use, as if the worker had been started from it.
    os.environ.clear()
    os.environ.update(environ)
    sys.path[:] = sys_path
    sock.setblocking(True)
    os.set_inheritable(sock.fileno(), False)
    threading.Thread(target=_exit_with_controller, args=(sock.fileno(),), name="cyclone-watchdog", daemon=True).start()
    send = _sender(sock)
    root = logging.getLogger()
    root.handlers[:] = [_LogForwarder(send)]
    root.setLevel(log_level)
    runner = TaskRunner(controller_id, _worker_plugins(plugin_modules), task_types=task_types, local=local)
    try:
        send(_pack([_READY]))
        _serve(sock, slot, send, runner, flush_every)
    except (BrokenPipeError, ConnectionResetError):
        pass  # the controller is gone, and so is this worker (its watchdog may be quicker)


def _on_sigterm(slot: Array[c_double], signum: int, frame: types.FrameType | None) -> None:
    if slot[_KILL]:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)


def _exit_with_controller(fd: int) -> None:
    """End the process the moment the controller's end of the socket closes."""
    poller = select.poll()
    poller.register(fd, select.POLLRDHUP)
    poller.poll()
    kill_descendants(os.getpid())
    os._exit(0)


def _sender(sock: socket.socket) -> Any:
    lock = threading.Lock()
    sendall = sock.sendall

    def send(data: bytes) -> None:
        with lock:  # tasks may log from threads of their own
            sendall(data)

    return send


def _serve(sock: socket.socket, slot: Array[c_double], send: Any, runner: TaskRunner, flush_every: int) -> None:
    """Run tasks in the order they arrive until the controller closes the socket.

    Results are sent in batches: when the worker runs out of tasks, when ``flush_every`` are
    waiting (half its queue: the controller refills it while the worker runs the other half),
    or before it starts another task once the oldest has waited ``_FLUSH_AFTER`` seconds.
    """
    unpacker = msgpack.Unpacker(raw=False)
    inbox: deque[list[Any]] = deque()
    pending: list[bytes] = []
    first = 0.0
    buffer = memoryview(bytearray(_READ_SIZE))  # reused: the unpacker copies what it is fed
    recv_into, monotonic, run = sock.recv_into, time.monotonic, runner.run
    check_at = 0.0
    while True:
        if not inbox:
            if pending:
                send(b"".join(pending))
                pending.clear()
            size = recv_into(buffer)
            if not size:
                return
            unpacker.feed(buffer[:size])
            for batch in unpacker:
                inbox.extend(batch)
            continue
        if slot[_DRAIN]:
            pending.extend(_pack([_RETURNED, row[0]]) for row in inbox)
            inbox.clear()
            continue
        now = monotonic()
        if pending and (len(pending) >= flush_every or now - first >= _FLUSH_AFTER):
            send(b"".join(pending))
            pending.clear()
        row = inbox.popleft()
        slot[_STARTED] = now
        slot[_SEQ] = row[0]
        if not pending:
            first = now
        # [_RESULT, seq, row] with the row packed once, size-checked, by the runner.
        pending.append(_RESULT_HEAD + _pack(row[0]) + run(row[1:]))
        ended = monotonic()
        if ended - now >= _SPAWN_TAKES or ended >= check_at:
            end_leftovers()  # one waitpid() call when the task left no process, the rule
            check_at = ended + _CHECK_EVERY


def _worker_plugins(plugin_modules: Sequence[tuple[str, str]]) -> Plugins:
    """The installed plugins, and those the controller registered in-process (by module)."""
    # The controller loaded the same plugins and reported any broken one already.
    logging.getLogger("cyclone.plugins").disabled = True
    plugins = get_plugins()
    for name, module in plugin_modules:
        try:
            plugins.register(__import__(module, fromlist=["_"]), name=name)
        except Exception as exc:  # reported, and its task types simply stay unknown
            log.warning("plugin '%s' cannot be loaded in a worker: %s: %s", name, type(exc).__name__, exc)
    return plugins


class _LogForwarder(logging.Handler):
    """Sends a worker's log records to the controller, which logs them with its handlers."""

    def __init__(self, send: Any) -> None:
        super().__init__()
        self._send = send
        self.setFormatter(logging.Formatter("%(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._send(_pack([_LOG, record.levelno, record.name, self.format(record)]))
        except (BrokenPipeError, ConnectionResetError):
            pass  # the controller is gone; the worker ends too
        except Exception:
            self.handleError(record)
