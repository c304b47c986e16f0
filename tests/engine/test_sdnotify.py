"""systemd's notifications: the module against real datagram sockets, and a real ``cyclone
master`` and ``cyclone controller`` telling a socket bound as systemd binds ``NOTIFY_SOCKET``
that they are ready, what they do, that their loop is alive and that they stop."""

from __future__ import annotations

import logging
import os
import signal
import socket
import struct
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from engine_support import FAST_CONTROLLER, FAST_MASTER, Proc, descendants, toml, wait_gone

from cyclone_core.engine.sdnotify import SystemdNotifier
from cyclone_core.testing import free_port, wait_until

#: struct ucred: pid, uid, gid.
_UCRED = struct.Struct("3i")


class NotifySocket:
    """A datagram socket bound as systemd binds ``NOTIFY_SOCKET``, read as systemd reads it (at
    once, from a thread: the kernel queues only a few datagrams), keeping every message with
    the pid of its sender (SCM_CREDENTIALS, which ``NotifyAccess=main`` checks)."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.sock.bind(address.replace("@", "\0", 1) if address.startswith("@") else address)
        self.sock.settimeout(0.05)
        self.received: list[tuple[int, list[str]]] = []
        self._closed = threading.Event()
        self._reader = threading.Thread(target=self._read, name="notify-socket", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while not self._closed.is_set():
            try:
                data, ancillary, _, _ = self.sock.recvmsg(4096, socket.CMSG_SPACE(_UCRED.size))
            except TimeoutError:
                continue
            pid = -1
            for level, kind, payload in ancillary:
                if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                    pid = _UCRED.unpack(payload[: _UCRED.size])[0]
            self.received.append((pid, data.decode().split("\n")))

    def messages(self) -> list[tuple[int, list[str]]]:
        """Every ``(sender pid, lines)`` received so far."""
        return list(self.received)

    def lines(self, prefix: str = "") -> list[str]:
        """Every line received that starts with ``prefix``, in order."""
        return [line for _, lines in self.messages() for line in lines if line.startswith(prefix)]

    def close(self) -> None:
        self._closed.set()
        self._reader.join(5)
        self.sock.close()


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[Callable[[str], NotifySocket]]:
    """Bind notification sockets (a path under ``tmp_path``, or ``@name``); closed afterwards."""
    made: list[NotifySocket] = []

    def bind(name: str) -> NotifySocket:
        made.append(NotifySocket(name if name.startswith("@") else str(tmp_path / name)))
        return made[-1]

    yield bind
    for sock in made:
        sock.close()


# -- the module -----------------------------------------------------------------------------------


def test_without_notify_socket_nothing_is_sent_and_nothing_fails() -> None:
    notifier = SystemdNotifier({"WATCHDOG_USEC": "1000000"})
    assert not notifier.enabled
    assert notifier.watchdog_interval is None
    assert not notifier.send("READY=1")
    notifier.ready("running", now=0.0)
    notifier.tick(100.0, lambda: "running", stopping=True)
    assert notifier.deadline() == float("inf")
    notifier.close()


def test_an_abstract_socket_gets_ready_status_watchdog_and_stopping(notify_socket) -> None:
    received = notify_socket(f"@cyclone-test-{uuid.uuid4().hex}")
    env = {"NOTIFY_SOCKET": received.address, "WATCHDOG_USEC": "2000000", "WATCHDOG_PID": str(os.getpid())}
    notifier = SystemdNotifier(env, unset=True)
    assert env == {}  # children of the daemon do not inherit them
    assert notifier.enabled
    assert notifier.watchdog_interval == 1.0
    state = ["running: 0 done"]
    notifier.ready(state[0], now=10.0)
    assert notifier.deadline() == 11.0
    notifier.tick(10.5, lambda: "running: 5\ndone")  # status changed, but within the second
    state.append("running: 5 done")
    notifier.tick(11.0, lambda: "running: 5\ndone")  # the ping, and the status (on one line)
    notifier.tick(11.2, lambda: "running: 5\ndone", stopping=True)  # STOPPING shows its state at once
    notifier.tick(11.3, lambda: "stopping: 5 done", stopping=True)
    notifier.send("END=1")  # datagrams arrive in order: everything before is in once this is
    notifier.close()
    wait_until(lambda: "END=1" in received.lines(), 10, "the last message")
    assert [lines for _, lines in received.messages()] == [
        ["READY=1", "STATUS=running: 0 done", "WATCHDOG=1"],
        ["WATCHDOG=1", "STATUS=running: 5 done"],
        ["STOPPING=1"],
        ["STATUS=stopping: 5 done"],
        ["END=1"],
    ]
    assert {pid for pid, _ in received.messages()} == {os.getpid()}


def test_a_watchdog_of_another_pid_is_not_fed(notify_socket) -> None:
    received = notify_socket("notify")
    env = {"NOTIFY_SOCKET": received.address, "WATCHDOG_USEC": "1000000", "WATCHDOG_PID": str(os.getpid() + 1)}
    notifier = SystemdNotifier(env)
    assert notifier.watchdog_interval is None
    assert env["NOTIFY_SOCKET"] == received.address  # left alone without unset
    notifier.ready("running", now=0.0)
    notifier.tick(60.0)
    notifier.send("END=1")
    notifier.close()
    wait_until(lambda: "END=1" in received.lines(), 10, "the last message")
    assert received.lines() == ["READY=1", "STATUS=running", "END=1"]


def test_variables_systemd_set_for_an_ancestor_are_left_alone(notify_socket) -> None:
    received = notify_socket("notify")
    env = {"NOTIFY_SOCKET": received.address, "WATCHDOG_USEC": "1000000", "SYSTEMD_EXEC_PID": "1"}
    notifier = SystemdNotifier(env, unset=True, pid=4242)
    assert not notifier.enabled
    assert env["NOTIFY_SOCKET"] == received.address  # not unset either: they belong to pid 1
    assert SystemdNotifier({**env, "SYSTEMD_EXEC_PID": "4242"}, pid=4242).enabled


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"NOTIFY_SOCKET": "vsock:2:1234"}, "NOTIFY_SOCKET=vsock:2:1234 is not a socket path or @name"),
        ({"NOTIFY_SOCKET": "/nonexistent/notify", "WATCHDOG_USEC": "soon"}, "WATCHDOG_USEC=soon is not a positive"),
    ],
)
def test_bad_variables_are_one_warning(env: dict[str, str], message: str, caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="cyclone.sdnotify"):
        notifier = SystemdNotifier(env)
    assert notifier.watchdog_interval is None
    assert len(caplog.records) == 1
    assert caplog.records[0].getMessage().startswith(message)


def test_a_send_that_fails_is_logged_once_and_never_raises(tmp_path: Path, caplog) -> None:
    notifier = SystemdNotifier({"NOTIFY_SOCKET": str(tmp_path / "gone"), "WATCHDOG_USEC": "100000"})
    with caplog.at_level(logging.WARNING, logger="cyclone.sdnotify"):
        notifier.ready("running", now=0.0)
        for step in range(1, 5):
            notifier.tick(step * 1.0, lambda: f"running {step}")
    notifier.close()
    assert len(caplog.records) == 1
    assert caplog.records[0].getMessage().startswith(f"cannot notify systemd through {tmp_path / 'gone'}: ")


# -- the daemons ----------------------------------------------------------------------------------


def _start(args: list[str], log: Path, notify: NotifySocket, procs: list[Proc]) -> Proc:
    env = {**os.environ, "NOTIFY_SOCKET": notify.address, "WATCHDOG_USEC": "400000"}
    env.pop("CYCLONE_DEBUG", None)
    procs.append(Proc(args, log, env))
    return procs[-1]


def test_master_and_controller_notify_systemd(tmp_path: Path, notify_socket) -> None:
    port = free_port()
    endpoint = f"tcp://127.0.0.1:{port}"
    config = tmp_path / "cyclone.toml"
    config.write_text(
        toml(
            {
                "master": {"bind": endpoint, "insecure": True, **FAST_MASTER},
                "controller": {"master": endpoint, "insecure": True, "workers": 2, **FAST_CONTROLLER},
                "generator": {
                    "name": "benchmark",
                    "options": {"count": 100_000, "task": "sleep", "args": {"seconds": 0.05}},
                },
                "sinks": {"sqlite": {"path": str(tmp_path / "results.sqlite")}},
            }
        )
    )
    to_master, to_controller = notify_socket("master.notify"), notify_socket("controller.notify")
    procs: list[Proc] = []
    try:
        master = _start(["master", "--config", str(config)], tmp_path / "master.log", to_master, procs)
        controller = _start(["controller", "--config", str(config)], tmp_path / "controller.log", to_controller, procs)

        def registered() -> bool:
            return any(line.startswith("STATUS=registered with") for line in to_controller.lines())

        wait_until(lambda: "READY=1" in to_master.lines() or master.popen.poll() is not None, 60, "master ready")
        wait_until(registered, 60, "the controller to register")
        wait_until(lambda: to_master.lines("STATUS=")[-1].endswith(" in flight, 1 controller"), 30,
                   "the master's status to show the controller")  # fmt: skip
        workers = descendants(controller.pid)
        assert workers, controller.output()
        for pid in workers:  # worker processes do not inherit the variables
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            assert not [v for v in environ if v.startswith((b"NOTIFY_SOCKET=", b"WATCHDOG_"))], pid
        wait_until(lambda: to_controller.lines().count("WATCHDOG=1") >= 4, 30, "the controller's watchdog pings")
        wait_until(lambda: to_master.lines().count("WATCHDOG=1") >= 4, 30, "the master's watchdog pings")
        status = to_controller.lines("STATUS=registered")[-1]
        assert status.startswith(f"STATUS=registered with {endpoint}: 2 workers, "), status
        assert status.endswith(" running"), status

        controller.signal(signal.SIGTERM)
        assert controller.wait(60) == 0, controller.output()
        lines = to_controller.lines()
        assert lines[0] == "READY=1"
        assert "STOPPING=1" in lines
        after = lines[lines.index("STOPPING=1") + 1 :]
        assert next(line for line in after if line.startswith("STATUS=")).startswith("STATUS=draining: "), lines
        master.signal(signal.SIGTERM)
        assert master.wait(60) == 0, master.output()
        lines = to_master.lines()
        assert lines[:2] == ["READY=1", "STATUS=running: 0 done, 0 in flight, 0 controllers"]
        assert "STOPPING=1" in lines
        assert any(line.startswith("STATUS=stopping: ") for line in lines), lines
        # Only the main processes spoke (NotifyAccess=main accepts nothing else).
        assert {pid for pid, _ in to_master.messages()} == {master.pid}
        assert {pid for pid, _ in to_controller.messages()} == {controller.pid}
    finally:
        for proc in procs:
            left = descendants(proc.pid) if proc.popen.poll() is None else []
            proc.kill_group()
            wait_gone(left, f"the processes of cyclone {proc.args[0]}")


def test_cyclone_run_notifies_as_its_master_alone(tmp_path: Path, notify_socket) -> None:
    """``cyclone run`` under a notify unit: its local controllers, started after the master took
    the variables, do not speak to systemd in its name."""
    received = notify_socket("run.notify")
    env = {**os.environ, "NOTIFY_SOCKET": received.address, "WATCHDOG_USEC": "400000"}
    env.pop("CYCLONE_DEBUG", None)
    args = ["run", "-g", "count=20", "--workers", "1", "--sink", "jsonl", "-s", f"jsonl.path={tmp_path / 'out.jsonl'}"]
    run = Proc(args, tmp_path / "run.log", env)
    try:
        assert run.wait(60) == 0, run.output()
        lines = received.lines()
        assert lines[0] == "READY=1", lines
        assert "STOPPING=1" in lines, lines
        assert {pid for pid, _ in received.messages()} == {run.pid}
    finally:
        run.kill_group()


#: A generator whose ``tasks()`` blocks the master's loop while a file exists (then has none).
_STALL_PLUGIN = """
import os, time
from typing import ClassVar
import attrs
from cyclone_core import TaskGenerator, hookimpl

@attrs.define(kw_only=True)
class StallGenerator(TaskGenerator):
    name: ClassVar[str] = "stall"
    path: str

    def tasks(self):
        open(self.path + ".stalled", "w").close()
        while os.path.exists(self.path):
            time.sleep(0.01)
        yield from ()

@hookimpl
def cyclone_generators():
    return [StallGenerator]
"""


def test_a_master_whose_loop_hangs_stops_the_watchdog_pings(tmp_path: Path, notify_socket) -> None:
    plugin = tmp_path / "plugin"
    (plugin / "cyclone_stall-0.1.dist-info").mkdir(parents=True)
    (plugin / "cyclone_stall-0.1.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: cyclone-stall\nVersion: 0.1\n"
    )
    (plugin / "cyclone_stall-0.1.dist-info" / "entry_points.txt").write_text("[cyclone]\nstall = cyclone_stall\n")
    (plugin / "cyclone_stall.py").write_text(_STALL_PLUGIN)
    stall = tmp_path / "stall"
    stall.touch()
    received = notify_socket("master.notify")
    env = {**os.environ, "NOTIFY_SOCKET": received.address, "WATCHDOG_USEC": "200000", "PYTHONPATH": str(plugin)}
    env.pop("CYCLONE_LOAD_PLUGINS", None)
    args = ["master", "--insecure", "--bind", f"tcp://127.0.0.1:{free_port()}", "--generator", "stall",
            "-g", f"path={stall}", "--sink", "jsonl", "-s", f"jsonl.path={tmp_path / 'out.jsonl'}"]  # fmt: skip
    master = Proc(args, tmp_path / "master.log", env)
    try:
        wait_until(lambda: Path(f"{stall}.stalled").exists() or master.popen.poll() is not None, 60, "the stall")
        assert master.popen.poll() is None, master.output()
        pings = received.lines().count("WATCHDOG=1")
        time.sleep(1.0)  # the window observed: five intervals of 0.1 s without a turn of the loop
        assert received.lines().count("WATCHDOG=1") == pings, received.lines()
        stall.unlink()  # the loop turns again: pings again, and the run (no tasks) ends
        assert master.wait(60) == 0, master.output()
        assert received.lines().count("WATCHDOG=1") > pings
    finally:
        master.kill_group()
