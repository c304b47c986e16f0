"""Fixtures of the engine tests: a scripted controller, a master running in a thread, an
in-memory sink, and real ``cyclone`` processes (helpers live in ``engine_support``)."""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

import attrs
import pytest
import zmq

sys.path.insert(0, str(Path(__file__).parent))  # so that tests can import engine_support

from engine_support import FIXTURE_PLUGIN, Proc, descendants, wait_gone

from cyclone_core.config import MasterSettings
from cyclone_core.engine import protocol
from cyclone_core.engine.master import Master
from cyclone_core.model import Result, ResultSink, TaskGenerator
from cyclone_core.testing import wait_until


@pytest.fixture
def wait() -> Callable[..., Any]:
    """:func:`wait_until` as a fixture."""
    return wait_until


@attrs.define(kw_only=True)
class MemorySink(ResultSink):
    """Keeps every batch it is given; fails while ``down`` is set."""

    name: ClassVar[str] = "memory"
    batch_size: int = 100
    flush_interval: float = 0.05
    results: list[Result] = attrs.field(factory=list)
    down: str | None = None
    writes: int = 0

    def write(self, results: Sequence[Result]) -> None:
        if self.down:
            raise ConnectionError(self.down)
        self.writes += 1
        self.results.extend(results)

    def ids(self) -> list[str]:
        return [r.task_id for r in self.results]


class Peer:
    """A DEALER socket speaking the protocol by hand: a scripted controller or a stranger."""

    def __init__(
        self,
        context: zmq.Context[zmq.Socket[bytes]],
        endpoint: str,
        identity: bytes | None = None,
        curve: tuple[str, str, str] | None = None,
    ) -> None:
        """``curve``: the master's public key and this peer's public and secret keys (Z85)."""
        self.sock = context.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        if curve is not None:
            self.sock.curve_serverkey, self.sock.curve_publickey, self.sock.curve_secretkey = (
                key.encode() for key in curve
            )
        if identity is not None:
            self.sock.setsockopt(zmq.ROUTING_ID, identity)
        self.sock.connect(endpoint)

    def send(self, message: protocol.Message) -> None:
        self.sock.send(protocol.encode(message))

    def send_raw(self, *frames: bytes) -> None:
        self.sock.send_multipart(list(frames))

    def recv(self, timeout: float = 10.0) -> protocol.Message:
        if not self.sock.poll(int(timeout * 1000)):
            pytest.fail(f"no message within {timeout} s")
        return protocol.decode(self.sock.recv())

    def expect(self, cls: type[Any], timeout: float = 10.0) -> Any:
        """The next message of type ``cls``, skipping pings."""
        deadline = time.monotonic() + timeout
        while True:
            message = self.recv(max(deadline - time.monotonic(), 0.01))
            if isinstance(message, cls):
                return message
            if not isinstance(message, protocol.Ping):
                pytest.fail(f"expected {cls}, got {message!r:.300}")

    def hello(self, controller_id: str, credit: int = 8, task_types: Sequence[str] = ("noop",)) -> protocol.Welcome:
        self.send(
            protocol.Hello(
                controller_id=controller_id,
                host="testhost",
                pid=4242,
                workers=2,
                credit=credit,
                task_types=list(task_types),
            )
        )
        return self.expect(protocol.Welcome)

    def close(self) -> None:
        self.sock.close(0)


@attrs.define
class RunningMaster:
    """A master whose loop runs in a thread of the test process."""

    master: Master
    thread: threading.Thread
    codes: list[int]

    @property
    def endpoint(self) -> str:
        return self.master.endpoint

    def stop(self, timeout: float = 20.0) -> int:
        self.master.request_stop()
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "master did not stop"
        return self.codes[0]

    def join(self, timeout: float = 20.0) -> int:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "master did not finish"
        return self.codes[0]


@pytest.fixture
def context() -> Iterator[zmq.Context[zmq.Socket[bytes]]]:
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    yield ctx
    ctx.destroy(linger=0)


@pytest.fixture
def peer(context: zmq.Context[zmq.Socket[bytes]]) -> Iterator[Callable[..., Peer]]:
    """Make scripted peers connected to an endpoint; closed afterwards."""
    peers: list[Peer] = []

    def make(endpoint: str, identity: bytes | None = None, curve: tuple[str, str, str] | None = None) -> Peer:
        peers.append(Peer(context, endpoint, identity, curve))
        return peers[-1]

    yield make
    for p in peers:
        p.close()


@pytest.fixture
def start_master(tmp_path: Path) -> Iterator[Callable[..., RunningMaster]]:
    """Start a master in a thread (bound to a free local port); stopped and closed afterwards."""
    running: list[RunningMaster] = []

    def start(
        generator: TaskGenerator, sinks: Sequence[ResultSink] = (), *, journal: str | None = None, **settings: Any
    ) -> RunningMaster:
        options = {
            "bind": "tcp://127.0.0.1:*",
            "journal": journal if journal is not None else str(tmp_path / f"journal-{len(running)}.sqlite"),
            "insecure": True,  # scripted plaintext peers; tests/engine/test_security.py speaks CURVE
            **settings,
        }
        master = Master(MasterSettings(**options), generator, sinks, drain_timeout=5.0, delivery_timeout=5.0)
        master.open()
        codes: list[int] = []

        def run() -> None:
            try:
                codes.append(master.run())
            finally:
                master.close()

        thread = threading.Thread(target=run, name="test-master", daemon=True)
        thread.start()
        running.append(RunningMaster(master, thread, codes))
        return running[-1]

    yield start
    for r in running:
        if r.thread.is_alive():
            r.master.request_stop()
            r.master.request_stop()
            r.thread.join(20)


@pytest.fixture
def sink() -> MemorySink:
    """An in-memory sink (set ``down`` to make it fail)."""
    return MemorySink()


@pytest.fixture
def cyclone(tmp_path: Path) -> Iterator[Callable[..., Proc]]:
    """Start ``cyclone`` commands (with the probe sink installed); all killed afterwards."""
    procs: list[Proc] = []
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(FIXTURE_PLUGIN), os.environ.get("PYTHONPATH")])),
    }
    env.pop("CYCLONE_LOAD_PLUGINS", None)
    env.pop("CYCLONE_DEBUG", None)

    def start(*args: str, name: str | None = None) -> Proc:
        log = tmp_path / f"{name or args[0]}-{len(procs)}.log"
        procs.append(Proc(args, log, env))
        return procs[-1]

    yield start
    for proc in procs:
        left = descendants(proc.pid) if proc.popen.poll() is None else []
        proc.kill_group()
        wait_gone(left, f"the processes of cyclone {proc.args[0]}")
