"""The Python API: run tasks from a script or a notebook, without the command line.

::

    from cyclone_core import CommandTask, LocalCluster

    rows = [{"argv": ["./simulate", "--alpha", str(alpha)]} for alpha in (0.1, 0.2, 0.3)]
    with LocalCluster(workers=8) as cluster:
        for result in cluster.map(CommandTask, rows, timeout=600):
            print(result.key, result.status, result.error)
        print(cluster.summary)

Each :meth:`LocalCluster.run` (or :meth:`~LocalCluster.map`) is one run of ``cyclone run``'s
embedded engine: a master in a thread of this process, local controllers and their workers
in child processes, the configuration's sinks (``cyclone-results.sqlite`` unless it says
otherwise).  Results are yielded as they arrive; leaving the loop early stops the run, and
leaving the ``with`` block stops whatever still runs and reaps every process.

As with :mod:`multiprocessing` and Dask, a script (not a notebook) that uses it must start
its work under ``if __name__ == "__main__":``: the controllers' processes import the main
module.

:class:`Client` attaches to a master that runs already (``cyclone master --generator
queue``), with an admin key: it submits tasks, takes the results as they arrive and reads the
master's status::

    with Client("tcp://master-host:5555", keys="~/.config/cyclone/keys") as client:
        client.submit(CommandTask(argv=["./simulate", str(seed)]) for seed in range(1000))
        for result in client.results():
            print(result.key, result.status, result.error)
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sized
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar

import attrs
import msgpack
import zmq

from cyclone_core.config import Config, load_config
from cyclone_core.convert import unstructure
from cyclone_core.engine import protocol
from cyclone_core.engine.curve import ClientKeys, key_dir, status_keys
from cyclone_core.engine.local import run_local
from cyclone_core.engine.master import Master
from cyclone_core.engine.status import fetch_status
from cyclone_core.errors import CycloneError, UsageError
from cyclone_core.model import Result, Task, TaskGenerator, TaskSpec
from cyclone_core.plugins import get_plugins

__all__ = ("Client", "LocalCluster")

log = logging.getLogger("cyclone.api")

_END = object()


def _registered(item: Task | TaskSpec) -> Task:
    """The task of ``item``; ``TypeError`` unless it is a task of a registered type (the other
    side builds it by that name)."""
    task = item.task if isinstance(item, TaskSpec) else item
    if not isinstance(task, Task):
        raise TypeError(f"expected a Task or a TaskSpec, got {type(item).__name__}")
    if get_plugins().task_type(task.name) is not type(task):
        raise TypeError(f"{type(task).__name__} is not the registered task type '{task.name}'")
    return task


@attrs.define(kw_only=True)
class _Feed(TaskGenerator):
    """The tasks of one API run, handed to the master as it asks, and its results collected."""

    name: ClassVar[str] = "python-api"
    deterministic: ClassVar[bool] = False

    source: Iterator[Task | TaskSpec | None] = attrs.field(repr=False)
    count: int | None = None
    #: The caller's own generator, if it gave one: it is told of results and closed too.
    inner: TaskGenerator | None = attrs.field(default=None, repr=False)
    results: queue.SimpleQueue[Any] = attrs.field(factory=queue.SimpleQueue, repr=False)

    def tasks(self) -> Iterator[Task | TaskSpec | None]:
        """The caller's tasks, each checked to be of a registered type."""
        for item in self.source:
            if item is not None:  # None: a generator's "nothing right now"
                _registered(item)
            yield item

    def total(self) -> int | None:
        """The number of tasks, when the caller gave a sized collection."""
        return self.count

    def on_result(self, result: Result) -> None:
        """Hand the result to the caller's loop (and generator)."""
        if self.inner is not None:
            self.inner.on_result(result)
        self.results.put(result)

    def close(self) -> None:
        """Close the caller's generator, if any."""
        if self.inner is not None:
            self.inner.close()


class LocalCluster:
    """Run tasks on this machine: a master and ``controllers`` local controllers with
    ``workers`` worker processes each, for each :meth:`run`.

    :param workers: worker processes per controller; ``None``: the configuration's (one per
        CPU by default).
    :param controllers: local controllers.
    :param config: a configuration file (TOML, as ``cyclone run -c``) or a :class:`Config`:
        the master's settings, the sinks, the controllers' ``[controller.local.*]`` tables.
    :param local: ``[controller.local.<section>]`` tables to use instead of the
        configuration's, section by section.  Unless one is given for it, ``command`` runs
        every program, as in ``cyclone run``.
    """

    def __init__(
        self,
        workers: int | None = None,
        *,
        controllers: int = 1,
        config: str | Path | Config | None = None,
        local: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> None:
        if workers is not None and workers < 1:
            raise UsageError(f"workers must be at least 1, got {workers}")
        if controllers < 1:
            raise UsageError(f"controllers must be at least 1, got {controllers}")
        self.workers = workers
        self.controllers = controllers
        base = config if isinstance(config, Config) else load_config(str(config)) if config is not None else Config()
        if local:
            base = attrs.evolve(
                base,
                controller=attrs.evolve(
                    base.controller, local={**base.controller.local, **{k: dict(v) for k, v in local.items()}}
                ),
            )
        # Leaving a loop early stops the run: running tasks are killed at once, not awaited.
        self.config = attrs.evolve(base, controller=attrs.evolve(base.controller, drain_timeout=0.0))
        #: The summary of the last run (what ``cyclone run --json`` prints), once it ended.
        self.summary: dict[str, Any] | None = None
        self._master: Master | None = None
        self._stopped = False
        self._thread: threading.Thread | None = None

    def __enter__(self) -> LocalCluster:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()

    def run(self, tasks: Iterable[Task | TaskSpec] | TaskGenerator) -> Iterator[Result]:
        """Run ``tasks`` (task objects, :class:`TaskSpec` objects or a generator) and yield
        each result as it arrives; the run ends when every task has settled.  Leaving the loop
        early stops the run: tasks not started are not run.

        :raises UsageError: a run is still going on (one at a time per cluster).
        """
        if isinstance(tasks, TaskGenerator):
            return self._start(_Feed(source=tasks.tasks(), count=tasks.total(), inner=tasks))
        return self._start(_Feed(source=iter(tasks), count=len(tasks) if isinstance(tasks, Sized) else None))

    def map(
        self,
        task_type: Callable[..., Task],
        items: Iterable[Any],
        *,
        timeout: float | None = None,
    ) -> Iterator[Result]:
        """Run ``task_type(**item)`` for each mapping in ``items`` (``task_type(item)`` for
        anything else), keyed by its position (``"0"``, ``"1"``, ...), and yield the results
        as they arrive.  ``items`` is read as the tasks are handed out.

        :param timeout: seconds each task may run (killed after, with every process it
            started); ``None``: the configuration's ``master.task_timeout``.
        """

        def specs() -> Iterator[TaskSpec]:
            for index, item in enumerate(items):
                task = task_type(**item) if isinstance(item, Mapping) else task_type(item)
                yield TaskSpec(task=task, key=str(index), timeout=timeout)

        return self._start(_Feed(source=specs(), count=len(items) if isinstance(items, Sized) else None))

    def close(self) -> None:
        """Stop the run going on, if any, and wait until its processes are reaped."""
        if self._master is not None:
            self._stopped = True
            self._master.request_stop()
        if self._thread is not None:
            self._thread.join()
        self._thread = self._master = None

    def _start(self, feed: _Feed) -> Iterator[Result]:
        if self._thread is not None:
            raise UsageError("this cluster is running tasks already: finish or leave that loop first")

        def on_master(master: Master) -> None:
            self._master = master

        self._stopped = False

        def target() -> None:
            try:
                _, self.summary = run_local(
                    self.config,
                    controllers=self.controllers,
                    workers=self.workers,
                    on_master=on_master,
                    generator=feed,
                )
                feed.results.put(_END)
            except BaseException as exc:  # handed to the caller's loop
                feed.results.put(exc)

        self.summary = None
        self._thread = threading.Thread(target=target, name="cyclone-api-run", daemon=True)
        self._thread.start()
        return self._results(feed)

    def _results(self, feed: _Feed) -> Iterator[Result]:
        try:
            while True:
                item = feed.results.get()
                if item is _END:
                    if self.summary is not None and self.summary["interrupted"] and not self._stopped:
                        raise CycloneError(
                            "the run stopped before every task ran: its local controllers exited (a script "
                            "must start its work under if __name__ == '__main__':, as with multiprocessing)"
                        )
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            self.close()


#: Bytes of tasks in one Submit, roughly (well under the frame limit).
_SUBMIT_BYTES = 8 * 1024 * 1024
#: Seconds between two Fetches while no result comes.
_POLL = 0.1


class Client:
    """A client attached to a running master (``cyclone master --generator queue``): submit
    tasks, take the results as they arrive, read the status.  Its key must have the admin role
    (the master's own key has it).

    :param master: the master's endpoint (``tcp://host:port``).
    :param keys: the key directory, as ``cyclone status --keys``: on the master's host, the
        master's own keypair; elsewhere a keypair the master admits as an admin and the
        pinned master key.  ``None``: the default key directory.
    :param insecure: the master is plaintext (``master.insecure``): no keys.
    :param timeout: seconds to wait for each answer of the master.

    Tasks travel as their registered type names and plain data, never pickled, so a task
    class must come from an installed plugin (or the built-ins).  Use it as a context manager,
    or call :meth:`close`.
    """

    def __init__(
        self, master: str, keys: str | Path | None = None, *, insecure: bool = False, timeout: float = 10.0
    ) -> None:
        self.master = master
        self.timeout = timeout
        self._keys: ClientKeys | None = None if insecure else status_keys(key_dir(str(keys or "")))
        #: Results the master no longer held when this client asked for them.
        self.missed = 0
        self._after = 0  # the number of the last result taken
        self._context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        self._sock = self._context.socket(zmq.DEALER)
        self._sock.setsockopt(zmq.LINGER, 0)
        if self._keys is not None:
            self._keys.apply(self._sock)
        try:
            self._sock.connect(master)
        except zmq.ZMQError as exc:
            self.close()
            raise CycloneError(f"cannot connect to master at {master}: {exc.strerror}") from None

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()

    def submit(self, tasks: Iterable[Task | TaskSpec] | TaskGenerator, *, done: bool = True) -> int:
        """Submit ``tasks`` (task objects, :class:`TaskSpec` objects or a generator, read to its
        end) to the master's queue; returns how many.  ``done``: these are the last ones, the
        run ends once they have all run.

        :raises CycloneError: the master refused them (its generator takes no tasks, its queue
            is full, a task is invalid): the tasks of earlier messages are queued, the others not.
        :raises TypeError: an item is not a task of a registered type.
        """
        items = tasks.tasks() if isinstance(tasks, TaskGenerator) else tasks
        sent = 0
        batch: list[list[Any]] = []
        size = 0
        for item in items:
            if item is None:  # a generator's "nothing right now"
                continue
            task = _registered(item)
            key, timeout = (item.key, item.timeout) if isinstance(item, TaskSpec) else (None, None)
            row = [task.name, unstructure(task), key, timeout]
            row_size = len(msgpack.packb(row))
            if batch and (len(batch) >= protocol.MAX_SUBMIT or size + row_size > _SUBMIT_BYTES):
                sent += self._submit(batch, False, sent)
                batch, size = [], 0
            batch.append(row)
            size += row_size
        if batch or done:
            sent += self._submit(batch, done, sent)
        return sent

    def results(self) -> Iterator[Result]:
        """Yield the master's terminal results as they arrive, each once, until the master
        says no more come (its run ended).  Leaving the loop early and calling again goes on
        where it stopped.  Results the master no longer held (it keeps the latest 100,000)
        are counted in :attr:`missed`, with a warning."""
        while True:
            reply = self._request(protocol.Fetch(self._after, protocol.MAX_FETCH), protocol.Fetched)
            assert isinstance(reply, protocol.Fetched)
            if reply.missed:
                self.missed += reply.missed
                log.warning(
                    "%d results were gone from the master at %s before they were fetched", reply.missed, self.master
                )
            first = reply.last - len(reply.results) + 1
            for seq, result in enumerate(reply.results, first):
                if seq > self._after:
                    self._after = seq
                    yield result
            self._after = max(self._after, reply.last)
            if reply.finished:
                return
            if not reply.results:
                time.sleep(_POLL)

    def summary(self) -> dict[str, Any]:
        """The master's status snapshot (what ``cyclone status --json`` prints): ``submitted``,
        ``succeeded``, ``failed``, ``quarantined``, ``queued``, ``in_flight``, ..."""
        return fetch_status(self.master, self.timeout, self._keys)

    def close(self) -> None:
        """Close the connection (idempotent)."""
        self._sock.close(0)
        self._context.term()

    def _submit(self, rows: list[list[Any]], done: bool, before: int) -> int:
        try:
            reply = self._request(protocol.Submit(rows, done), protocol.Submitted)
        except CycloneError as exc:
            raise CycloneError(f"{exc} ({before} tasks were submitted before these {len(rows)})") from None
        assert isinstance(reply, protocol.Submitted)
        return reply.count

    def _request(self, message: protocol.Message, answer: type[Any]) -> protocol.Message:
        """Send ``message`` and wait for its ``answer`` (or a Refuse, as :class:`CycloneError`)."""
        sock = self._sock
        while sock.poll(0):  # a late answer to an earlier request that timed out
            sock.recv()
        sock.send(protocol.encode(message))
        deadline = time.monotonic() + self.timeout
        while (left := deadline - time.monotonic()) > 0 and sock.poll(int(left * 1000) + 1):
            try:
                reply = protocol.decode(sock.recv())
            except protocol.ProtocolError as exc:
                raise CycloneError(f"master at {self.master} answered something else: {exc}") from None
            if isinstance(reply, protocol.Refuse):
                raise CycloneError(f"master at {self.master} refused: {reply.reason}")
            if isinstance(reply, answer):
                return reply
        hint = ""
        if self._keys is not None:
            hint = f": is it running, is its key the one in {self._keys.directory}, and is this key an admin?"
        raise CycloneError(f"no answer from a master at {self.master} within {self.timeout:g} s{hint}")
