"""Helpers of the engine tests: waiting on conditions, real processes, reading results."""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import socket
import subprocess
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import attrs
import msgpack
import pytest

from cyclone_core import keys
from cyclone_core.testing import wait_until

# -- real processes -----------------------------------------------------------------------------

FIXTURE_PLUGIN = Path(__file__).parent / "fixture_plugin"


def toml(tables: dict[str, dict[str, Any]]) -> str:
    """A TOML document from ``{"table": {"key": value}}`` (values: str, numbers, bools, dicts)."""

    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, dict):
            return "{ " + ", ".join(f"{k} = {value(x)}" for k, x in v.items()) + " }"
        if isinstance(v, str):
            return json.dumps(v)
        return repr(v)

    return "".join(
        f"[{name}]\n" + "".join(f"{k} = {value(v)}\n" for k, v in table.items()) + "\n"
        for name, table in tables.items()
    )


#: Settings that make daemons notice losses within seconds, for tests.
FAST_MASTER = {"heartbeat_interval": 0.3, "controller_timeout": 2.0}
FAST_CONTROLLER = {
    "heartbeat_interval": 0.3,
    "master_timeout": 2.0,
    "reconnect_interval": 0.1,
    "reconnect_max": 0.5,
    "drain_timeout": 5.0,
}


@attrs.frozen
class ClusterKeys:
    """Key directories made as an operator makes them, with ``cyclone keys``: the master's
    (``init``), and one for controllers (``new``, ``pin``) whose key the master allows (not as
    an admin)."""

    master_dir: Path
    controller_dir: Path

    @classmethod
    def make(cls, directory: Path) -> ClusterKeys:
        master_dir, controller_dir = directory / "master", directory / "controller"
        for args in (
            ["init", "--dir", str(master_dir)],
            ["new", "--dir", str(controller_dir)],
            ["pin", str(master_dir / "master.public"), "--dir", str(controller_dir)],
            ["allow", str(controller_dir / "controller.public"), "--name", "controllers", "--dir", str(master_dir)],
        ):
            subprocess.run(["cyclone", "keys", *args], check=True, capture_output=True, timeout=60)
        return cls(master_dir, controller_dir)

    def curve(self) -> tuple[str, str, str]:
        """The master's public key and its own keypair (an admin): what a test's socket asks with."""
        pair = keys.load_keypair(self.master_dir / "master.secret")
        return (pair.public, pair.public, pair.secret)


class Proc:
    """A ``cyclone`` command running in its own session, its output in a file."""

    def __init__(self, args: Sequence[str], log: Path, env: dict[str, str]) -> None:
        self.args = list(args)
        self.log = log
        with log.open("wb") as out:
            self.popen = subprocess.Popen(
                ["cyclone", *args], stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait(self, timeout: float = 60.0) -> int:
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"cyclone {' '.join(self.args)} did not exit within {timeout} s:\n{self.output()[-3000:]}")

    def signal(self, signum: int) -> None:
        self.popen.send_signal(signum)

    def kill_group(self) -> None:
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait(10)


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (zombies count as gone)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def wait_gone(pids: Sequence[int], what: str, timeout: float = 20.0) -> None:
    """Wait until none of ``pids`` runs."""
    wait_until(lambda: not any(alive(pid) for pid in pids), timeout, f"{what} to exit")


def descendants(pid: int) -> list[int]:
    """Pids of every live descendant of ``pid`` (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z":
            children.setdefault(int(fields[1]), []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def read_probe(path: Path) -> list[dict[str, Any]]:
    """Every result the probe sink was given, in order."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.endswith("}")]


# -- a network partition ------------------------------------------------------------------------


class Partition:
    """A TCP relay from a local port to ``target_port`` that can be cut like a network partition.

    While cut, nothing crosses in either direction, but connections stay open and what was sent
    waits (as TCP retransmits across a partition); new connections wait too.  Healed, it all
    flows again.  Use as a context manager: leaving it closes every connection.
    """

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._open = threading.Event()
        self._open.set()
        self._closed = False
        self._sockets: list[socket.socket] = [self._listener]
        threading.Thread(target=self._accept, name="partition-accept", daemon=True).start()

    def cut(self) -> None:
        self._open.clear()

    def heal(self) -> None:
        self._open.set()

    def __enter__(self) -> Partition:
        return self

    def __exit__(self, *exc: object) -> None:
        self._closed = True
        self._open.set()
        for sock in self._sockets:
            sock.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            self._open.wait()
            if self._closed:
                client.close()
                return
            try:
                server = socket.create_connection(("127.0.0.1", self.target_port))
            except OSError:
                client.close()
                continue
            self._sockets += [client, server]
            for source, sink in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(source, sink), name="partition-pump", daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        while True:
            try:
                data = source.recv(65536)
            except OSError:
                data = b""
            self._open.wait()  # what arrives during a cut is held until it heals
            if self._closed:
                return
            try:
                if not data:
                    sink.shutdown(socket.SHUT_WR)
                    return
                sink.sendall(data)
            except OSError:
                return


# -- hostile messages ---------------------------------------------------------------------------

_ODD_VALUES = (None, True, False, 0, -1, 2**63 - 1, -(2**63), 2**64 - 1, 1e308, float("nan"), float("inf"), -0.0,
               "", "ok", "noop", "\x00", "é" * 3, b"", b"\xff\xfe")  # fmt: skip


def hostile_value(rng: random.Random, depth: int = 0) -> Any:
    """A value a peer should never send: odd scalars, big numbers, lists and maps of them."""
    roll = rng.random()
    if depth < 2 and roll < 0.15:
        return [hostile_value(rng, depth + 1) for _ in range(rng.randrange(4))]
    if depth < 2 and roll < 0.3:
        return {rng.choice(("", "id", "task_id", "credit")): hostile_value(rng, depth + 1) for _ in range(3)}
    if roll < 0.5:
        return rng.randint(-(2**63), 2**64 - 1)
    return rng.choice(_ODD_VALUES)


def _places(value: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every path to a value nested in lists and maps."""
    yield path
    items = enumerate(value) if isinstance(value, list) else value.items() if isinstance(value, dict) else ()
    for key, inner in items:
        yield from _places(inner, (*path, key))


def damage(frame: bytes, rng: random.Random) -> bytes:
    """``frame`` (a valid message) with one to three of its parts, the version and tag aside,
    replaced by a hostile value or dropped from their list."""
    raw = msgpack.unpackb(frame)
    for _ in range(rng.randint(1, 3)):
        places = [path for path in _places(raw) if path and path[0] not in ("v", "t")]
        if not places:
            break
        *parents, last = rng.choice(places)
        container = raw
        for key in parents:
            container = container[key]
        if isinstance(container, list) and rng.random() < 0.3:
            del container[last]
        else:
            container[last] = hostile_value(rng)
    return msgpack.packb(raw)
