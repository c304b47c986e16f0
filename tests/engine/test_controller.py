"""The controller as a real process, against a scripted master on a real ROUTER socket.

Its decisions (credit, backoff, resend, drain phases, limits) are tested without processes in
``test_controller_session.py``; these tests check that the loop carries them out.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import attrs
import msgpack
import pytest
import zmq
from engine_support import descendants

from cyclone_core import __version__, keys
from cyclone_core.config import ControllerSettings
from cyclone_core.engine.controller import INITIAL_PREFETCH, MAX_PREFETCH, run_controller
from cyclone_core.engine.controller_session import WELCOME_LIMITS
from cyclone_core.engine.protocol import (
    PROTOCOL_VERSION,
    Ack,
    Dispatch,
    Enroll,
    Enrolled,
    Goodbye,
    Handback,
    Heartbeat,
    Hello,
    Message,
    Ping,
    Refuse,
    Rehello,
    Results,
    Shutdown,
    TaskEnvelope,
    Welcome,
    decode,
    encode,
)
from cyclone_core.model import Result, Status
from cyclone_core.testing import free_port

DEADLINE = 20.0
M = TypeVar("M")

CONTROLLER = """
import json, logging, sys
from cyclone_core.config import ControllerSettings
from cyclone_core.convert import structure
from cyclone_core.engine.controller import run_controller
from cyclone_core.plugins import get_plugins
sys.path.insert(0, sys.argv[2])
import cyclone_controller_test_tasks
get_plugins().register(cyclone_controller_test_tasks, name="controller-test-tasks")
logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
sys.exit(run_controller(structure(json.loads(sys.argv[1]), ControllerSettings, where="test settings")))
"""

#: A task type that tells the test when it starts: registered in the controller (and so in
#: its workers) only.
TEST_TASKS = """
import subprocess
import threading
import time
from pathlib import Path
from typing import ClassVar

import attrs

from cyclone_core import Task, hookimpl


@attrs.define(kw_only=True)
class Marked(Task):
    name: ClassVar[str] = "marked"
    marks: str
    seconds: float | None = None

    def execute(self, ctx):
        (Path(self.marks) / ctx.task_id).touch()
        if self.seconds is None:
            threading.Event().wait()
        else:
            time.sleep(self.seconds)


@attrs.frozen(kw_only=True)
class Programs:
    marker: str = "true"


@attrs.define(kw_only=True)
class Marker(Task):
    name: ClassVar[str] = "marker"
    local_settings: ClassVar[type] = Programs
    marks: str

    def execute(self, ctx):
        subprocess.run([ctx.local.marker, str(Path(self.marks) / ctx.task_id)], check=True)


@hookimpl
def cyclone_task_types():
    return [Marked, Marker]
"""

#: Short intervals so that every timer fires within a test.
FAST = {
    "workers": 2,
    "heartbeat_interval": 0.2,
    "master_timeout": 2.0,
    "reconnect_interval": 0.1,
    "reconnect_max": 0.4,
    "drain_timeout": 10.0,
}


@attrs.frozen
class CurveKeys:
    """The scripted master's keypair, and a controller's key directory that pins it."""

    master: keys.Keypair
    controller_dir: Path


class ScriptedMaster:
    """The master's side of the conversation, driven message by message by the test: a CURVE
    server with ``pair`` (admitting every client key: no ZAP handler), else plaintext."""

    def __init__(
        self, context: zmq.Context[zmq.Socket[bytes]], pair: keys.Keypair | None, endpoint: str | None = None
    ) -> None:
        self.sock = context.socket(zmq.ROUTER)
        self.sock.setsockopt(zmq.ROUTER_HANDOVER, 1)  # as the real master: a reconnect keeps its id
        self.sock.setsockopt(zmq.LINGER, 0)
        if pair is not None:
            self.sock.curve_server = True
            self.sock.curve_secretkey = pair.secret.encode()
        if endpoint is None:
            port = self.sock.bind_to_random_port("tcp://127.0.0.1")
            endpoint = f"tcp://127.0.0.1:{port}"
        else:
            self.sock.bind(endpoint)
        self.endpoint = endpoint
        self.identity = b""
        #: Every message received, in order.
        self.received: list[Message] = []

    def recv(self, timeout: float = DEADLINE) -> Message:
        if not self.sock.poll(int(timeout * 1000)):
            raise AssertionError(f"no message from the controller in {timeout} s; got so far: {self.received[-5:]}")
        self.identity, frame = self.sock.recv_multipart()
        message = decode(frame)
        self.received.append(message)
        return message

    def expect(self, kind: type[M], where: Callable[[M], bool] | None = None, timeout: float = DEADLINE) -> M:
        """The next message of type ``kind`` (for which ``where`` holds); others are skipped."""
        deadline = time.monotonic() + timeout
        while True:
            message = self.recv(max(0.0, deadline - time.monotonic()))
            if isinstance(message, kind) and (where is None or where(message)):
                return message

    def draining(self) -> Heartbeat:
        return self.expect(Heartbeat, lambda heartbeat: heartbeat.draining)

    def send(self, message: Message) -> None:
        self.send_frames(encode(message))

    def send_frames(self, *frames: bytes) -> None:
        self.sock.send_multipart([self.identity, *frames])

    def welcome(self) -> Hello:
        hello = self.expect(Hello)
        self.send(Welcome(master_id="scripted", run_id="run1", heartbeat_interval=0.2, controller_timeout=5.0))
        return hello

    def results(self, count: int, *, ack: bool = True) -> tuple[list[Result], int]:
        """The next ``count`` results (acknowledged) and the credit that came with them."""
        results: list[Result] = []
        credit = 0
        while len(results) < count:
            message = self.expect(Results)
            results += message.results
            credit += message.credit
            if ack:
                self.send(Ack([r.task_id for r in message.results]))
        return results, credit

    def close(self) -> None:
        self.sock.close()


class Marks:
    """Tasks of the ``marked`` type, and waiting for them to start."""

    def __init__(self, directory: Path, wait: Callable[..., Any]) -> None:
        self.directory = directory
        self.wait = wait
        directory.mkdir()

    def task(self, task_id: str, seconds: float | None = None) -> TaskEnvelope:
        """A task that runs ``seconds`` (forever: ``None``) once started."""
        return TaskEnvelope(task_id, "marked", {"marks": str(self.directory), "seconds": seconds})

    def started(self, *task_ids: str) -> None:
        self.wait(lambda: all((self.directory / task_id).exists() for task_id in task_ids), what=f"{task_ids} to start")


class ControllerProcess:
    """A controller running ``run_controller`` in a process of its own."""

    def __init__(self, endpoint: str, log_path: Path, plugin_dir: Path, **settings: Any) -> None:
        self.log_path = log_path
        settings = {"master": endpoint, **FAST, **settings}
        with log_path.open("w") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-c", CONTROLLER, json.dumps(settings), str(plugin_dir)], stderr=log
            )
        self.pid = self.process.pid

    def log(self) -> str:
        return self.log_path.read_text()

    def wait_for_log(self, text: str) -> None:
        deadline = time.monotonic() + DEADLINE
        while text not in self.log():
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise AssertionError(f"{text!r} not in the controller's log:\n{self.log()}")
            time.sleep(0.02)

    def exit_code(self) -> int:
        try:
            return self.process.wait(DEADLINE)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"the controller did not exit; its log:\n{self.log()}") from None

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(DEADLINE)


@pytest.fixture
def curve(tmp_path: Path) -> CurveKeys:
    """A master keypair, and a controller key directory with its own keypair and that key pinned."""
    pair = keys.generate()
    directory = tmp_path / "keys"
    keys.write_keypair(directory, keys.CONTROLLER_NAME, keys.generate())
    keys.pin_master_key(directory, pair.public)
    return CurveKeys(pair, directory)


@pytest.fixture
def master(context: zmq.Context[zmq.Socket[bytes]], curve: CurveKeys) -> Iterator[ScriptedMaster]:
    master = ScriptedMaster(context, curve.master)
    yield master
    master.close()


@pytest.fixture
def marks(tmp_path: Path, wait: Callable[..., Any]) -> Marks:
    return Marks(tmp_path / "marks", wait)


@pytest.fixture
def start_controller(tmp_path: Path, curve: CurveKeys) -> Iterator[Callable[..., ControllerProcess]]:
    plugin_dir = tmp_path / "plugin"
    plugin_dir.mkdir()
    (plugin_dir / "cyclone_controller_test_tasks.py").write_text(TEST_TASKS)
    started: list[ControllerProcess] = []

    def start(endpoint: str, **settings: Any) -> ControllerProcess:
        log_path = tmp_path / f"controller-{len(started)}.log"
        settings = {"keys": str(curve.controller_dir), **settings}
        controller = ControllerProcess(endpoint, log_path, plugin_dir, **settings)
        started.append(controller)
        return controller

    yield start
    for controller in started:
        controller.kill()  # its workers notice and exit on their own
        assert "Traceback" not in controller.log(), controller.log()


def noop(task_id: str) -> TaskEnvelope:
    return TaskEnvelope(task_id, "noop")


def test_hello_then_dispatched_tasks_come_back_as_results_with_credit(
    master: ScriptedMaster, start_controller: Callable[..., ControllerProcess]
) -> None:
    controller = start_controller(master.endpoint)
    hello = master.welcome()
    assert hello.controller_id == f"{socket.gethostname()}-{controller.pid}"
    assert master.identity == f"{hello.controller_id}.1".encode()  # its first connection
    assert (hello.host, hello.pid, hello.workers) == (socket.gethostname(), controller.pid, 2)
    assert hello.credit == 2 * INITIAL_PREFETCH
    assert {"noop", "sleep", "fail", "crash", "hang"} <= set(hello.task_types)
    assert hello.version == __version__
    assert master.expect(Heartbeat).running == []  # sent as soon as it is welcomed

    tasks = [noop("n1"), noop("n2"), TaskEnvelope("f1", "fail", {"message": "no"}, attempt=2, key="k")]
    master.send(Dispatch(tasks))
    results, credit = master.results(3)
    assert credit >= 3  # every slot freed is granted again (more once tasks prove quick)
    by_id = {r.task_id: r for r in results}
    assert by_id.keys() == {"n1", "n2", "f1"}
    assert (by_id["n1"].status, by_id["n1"].controller) == (Status.OK, hello.controller_id)
    failed = by_id["f1"]
    assert (failed.status, failed.error, failed.attempt, failed.key) == (Status.FAILED, "RuntimeError: no", 2, "k")


def test_results_are_resent_until_acknowledged(
    master: ScriptedMaster, start_controller: Callable[..., ControllerProcess]
) -> None:
    start_controller(master.endpoint)
    master.welcome()
    master.send(Dispatch([noop("a"), noop("b")]))
    first, _ = master.results(2, ack=False)
    # No Ack within two heartbeat intervals: it registers again, then sends them again.
    hello = master.welcome()
    assert hello.credit > 0
    again, credit = master.results(2)
    assert {r.task_id for r in again} == {r.task_id for r in first} == {"a", "b"}
    assert credit == 0  # the Hello granted the free slots already
    # Acknowledged: they are not sent again; the controller only keeps beating.
    start = len(master.received)
    for _ in range(8):
        master.expect(Heartbeat)
    assert all(type(m) is Heartbeat for m in master.received[start:])


def test_rehello_registers_again_and_resends_unacknowledged_results(
    master: ScriptedMaster, start_controller: Callable[..., ControllerProcess]
) -> None:
    start_controller(master.endpoint)
    master.welcome()
    master.send(Dispatch([noop("quick"), TaskEnvelope("long", "sleep", {"seconds": 1.0})]))
    (result,), _ = master.results(1, ack=False)
    assert result.task_id == "quick"
    master.send(Rehello("the master restarted"))
    master.send(Rehello("the master restarted"))  # several may come; one Hello answers them
    hello = master.welcome()
    # Quick tasks seen: the full window is offered, less the one task still held.
    assert hello.credit == 2 * MAX_PREFETCH - 1
    # The results first, then the heartbeat: a master that took the tasks missing from it back
    # at once must have settled those whose results were on their way.
    resent, _ = master.results(1)
    assert [r.task_id for r in resent] == ["quick"]
    master.expect(Heartbeat, lambda heartbeat: heartbeat.running == ["long"])
    (done,), _ = master.results(1)
    assert (done.task_id, done.status) == ("long", Status.OK)
    assert sum(type(m) is Hello for m in master.received) == 2


def test_a_silent_master_means_a_new_socket_that_registers_again(
    master: ScriptedMaster, start_controller: Callable[..., ControllerProcess]
) -> None:
    # The delays between reconnects are the session's: test_controller_session.py.
    start_controller(master.endpoint, master_timeout=0.5)
    first = master.welcome()
    identities = {master.identity}
    for _ in range(3):  # silence: each time a new socket says Hello again, under the same id
        assert master.expect(Hello).controller_id == first.controller_id
        identities.add(master.identity)  # and a routing id of its own
    assert len(identities) == 4
    master.welcome()
    master.expect(Heartbeat)
    master.send(Dispatch([noop("after-reconnects")]))
    (result,), _ = master.results(1)
    assert result.status is Status.OK


def test_it_gives_up_after_max_reconnects(start_controller: Callable[..., ControllerProcess]) -> None:
    controller = start_controller(f"tcp://127.0.0.1:{free_port()}", master_timeout=0.3, max_reconnects=2)
    assert controller.exit_code() == 1


def test_a_controller_started_before_the_master_joins_when_it_comes(
    context: zmq.Context[zmq.Socket[bytes]], start_controller: Callable[..., ControllerProcess], curve: CurveKeys
) -> None:
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    controller = start_controller(endpoint)
    controller.wait_for_log("started: 2 workers")
    late = ScriptedMaster(context, curve.master, endpoint)
    try:
        late.welcome()
        late.send(Dispatch([noop("first")]))
        (result,), _ = late.results(1)
        assert result.status is Status.OK
    finally:
        late.close()


def test_refused_means_one_line_and_exit_2(
    master: ScriptedMaster, start_controller: Callable[..., ControllerProcess]
) -> None:
    controller = start_controller(master.endpoint)
    master.expect(Hello)
    master.send(Refuse("controller id 'x' is in use by pid 1 on node7"))
    assert controller.exit_code() == 2
    errors = [line for line in controller.log().splitlines() if line.startswith("ERROR")]
    assert errors == [
        "ERROR cyclone.controller: master refused this controller: controller id 'x' is in use by pid 1 on node7"
    ]


def stop_by_shutdown(master: ScriptedMaster, controller: ControllerProcess) -> None:
    master.send(Shutdown("the run is over"))


def stop_by_signal(signum: int) -> Callable[[ScriptedMaster, ControllerProcess], None]:
    def stop(master: ScriptedMaster, controller: ControllerProcess) -> None:
        os.kill(controller.pid, signum)

    return stop


@pytest.mark.parametrize(
    "stop",
    [stop_by_shutdown, stop_by_signal(signal.SIGTERM), stop_by_signal(signal.SIGINT)],
    ids=["shutdown", "sigterm", "sigint"],
)
def test_stopping_drains_hands_back_and_says_goodbye(
    master: ScriptedMaster,
    start_controller: Callable[..., ControllerProcess],
    stop: Callable[[ScriptedMaster, ControllerProcess], None],
    marks: Marks,
) -> None:
    controller = start_controller(master.endpoint)
    master.welcome()
    running = [marks.task(f"r{n}", seconds=0.5) for n in range(2)]
    waiting = [marks.task(f"w{n}", seconds=0.5) for n in range(4)]
    master.send(Dispatch(running))
    marks.started("r0", "r1")
    master.send(Dispatch(waiting))
    stop(master, controller)
    master.draining()  # at once: the master sends no more tasks
    handback = master.expect(Handback)
    assert sorted(handback.task_ids) == [t.id for t in waiting]
    results, credit = master.results(2)
    assert sorted(r.task_id for r in results) == ["r0", "r1"]
    assert {r.status for r in results} == {Status.OK}
    assert credit == 0  # draining: no slot is offered again
    master.expect(Goodbye)
    assert controller.exit_code() == 0


def test_a_dispatch_while_draining_is_handed_back(
    master: ScriptedMaster, start_controller: Callable[..., ControllerProcess], marks: Marks
) -> None:
    controller = start_controller(master.endpoint)
    master.welcome()
    master.send(Dispatch([marks.task("long", seconds=0.5)]))
    marks.started("long")
    os.kill(controller.pid, signal.SIGTERM)
    master.draining()
    master.send(Dispatch([noop("crossed")]))  # sent before the master saw the heartbeat
    assert master.expect(Handback).task_ids == ["crossed"]
    (finished,), _ = master.results(1)
    assert finished.task_id == "long"
    master.expect(Goodbye)
    assert controller.exit_code() == 0


def test_running_tasks_past_the_drain_timeout_are_killed_and_handed_back(
    master: ScriptedMaster, start_controller: Callable[..., ControllerProcess], marks: Marks
) -> None:
    controller = start_controller(master.endpoint, drain_timeout=0.5)
    master.welcome()
    master.send(Dispatch([marks.task(f"h{n}") for n in range(3)]))
    marks.started("h0", "h1")
    master.expect(Heartbeat, lambda heartbeat: sorted(heartbeat.running) == ["h0", "h1", "h2"])
    os.kill(controller.pid, signal.SIGTERM)
    assert master.expect(Handback).task_ids == ["h2"]  # it had not started
    killed = master.expect(Handback)
    assert sorted(killed.task_ids) == ["h0", "h1"]
    assert "drain timeout 0.5 s" in killed.reason
    master.expect(Goodbye)
    assert controller.exit_code() == 0
    assert not any(type(m) is Results for m in master.received)


def test_a_second_signal_stops_at_once(
    master: ScriptedMaster, start_controller: Callable[..., ControllerProcess], marks: Marks
) -> None:
    controller = start_controller(master.endpoint, drain_timeout=600)
    master.welcome()
    master.send(Dispatch([marks.task("h0")]))
    marks.started("h0")
    os.kill(controller.pid, signal.SIGINT)
    master.draining()
    os.kill(controller.pid, signal.SIGINT)
    assert master.expect(Handback).task_ids == ["h0"]
    master.expect(Goodbye)
    assert controller.exit_code() == 0


def test_a_sigterm_to_every_process_drains_as_systemd_and_slurm_expect(
    master: ScriptedMaster, start_controller: Callable[..., ControllerProcess], marks: Marks
) -> None:
    controller = start_controller(master.endpoint)
    master.welcome()
    master.send(Dispatch([marks.task(f"r{n}", seconds=0.5) for n in range(2)]))
    marks.started("r0", "r1")
    master.send(Dispatch([marks.task("w0", seconds=0.5)]))
    family = descendants(controller.pid)
    assert len(family) >= 3  # the fork server and two workers, and multiprocessing's resource tracker
    for pid in [controller.pid, *family]:
        os.kill(pid, signal.SIGTERM)
    assert master.expect(Handback).task_ids == ["w0"]
    results, _ = master.results(2)
    assert {(r.task_id, r.status) for r in results} == {("r0", Status.OK), ("r1", Status.OK)}
    master.expect(Goodbye)
    assert controller.exit_code() == 0


def test_run_controller_in_a_thread_stops_when_asked(master: ScriptedMaster, curve: CurveKeys) -> None:
    stop = threading.Event()
    codes: list[int] = []
    settings = ControllerSettings(master=master.endpoint, keys=str(curve.controller_dir), **FAST)  # type: ignore[arg-type]
    thread = threading.Thread(target=lambda: codes.append(run_controller(settings, stop=stop)))
    thread.start()
    try:
        master.welcome()
        master.send(Dispatch([noop("in-a-thread")]))
        (result,), _ = master.results(1)
        assert result.status is Status.OK
        stop.set()
        master.expect(Goodbye)
        thread.join(DEADLINE)
        assert codes == [0]
    finally:
        stop.set()
        thread.join(DEADLINE)


def test_a_bad_master_endpoint_is_one_line_and_exit_2(start_controller: Callable[..., ControllerProcess]) -> None:
    controller = start_controller("tcp://no port here")
    assert controller.exit_code() == 2
    errors = [line for line in controller.log().splitlines() if line.startswith("ERROR")]
    assert errors == [
        "ERROR cyclone.controller: controller.master: cannot connect to 'tcp://no port here': Invalid argument"
    ]


def test_a_dispatch_beyond_the_credit_is_handed_back(
    master: ScriptedMaster, start_controller: Callable[..., ControllerProcess], marks: Marks
) -> None:
    start_controller(master.endpoint)
    hello = master.welcome()
    tasks = [marks.task(f"t{n}", seconds=0.2) for n in range(hello.credit + 3)]
    master.send(Dispatch(tasks))
    handback = master.expect(Handback)
    assert handback.task_ids == [t.id for t in tasks[hello.credit :]]
    results, _ = master.results(hello.credit)
    assert sorted(r.task_id for r in results) == sorted(t.id for t in tasks[: hello.credit])


def test_a_master_asking_for_heartbeats_too_often_gets_them_at_the_floor(
    master: ScriptedMaster, start_controller: Callable[..., ControllerProcess]
) -> None:
    start_controller(master.endpoint)
    master.expect(Hello)
    master.send(Welcome(master_id="scripted", run_id="run1", heartbeat_interval=1e-9, controller_timeout=5.0))
    master.expect(Heartbeat)
    start = time.monotonic()
    for _ in range(10):
        master.expect(Heartbeat)
    floor = WELCOME_LIMITS["heartbeat_interval"][0]
    assert time.monotonic() - start >= 10 * floor * 0.9  # never faster (slower on a busy machine)


def test_garbage_from_the_master_is_logged_and_ignored(
    master: ScriptedMaster, start_controller: Callable[..., ControllerProcess]
) -> None:
    controller = start_controller(master.endpoint)
    hello = master.welcome()
    master.send_frames(b"\xc1 not msgpack")
    master.send_frames(msgpack.packb({"v": PROTOCOL_VERSION + 1, "t": "dispatch", "tasks": []}))
    master.send_frames(encode(Ping()), encode(Ping()))
    master.send(hello)  # a message meant for the master
    master.send(Dispatch([noop("still-works")]))
    (result,), _ = master.results(1)
    assert result.status is Status.OK
    controller.wait_for_log("ignored a bad message from the master: not a msgpack message")
    assert controller.process.poll() is None


def test_two_controllers_on_one_host_have_distinct_ids(
    master: ScriptedMaster, start_controller: Callable[..., ControllerProcess]
) -> None:
    controllers = [start_controller(master.endpoint), start_controller(master.endpoint)]
    hellos = [master.expect(Hello), master.expect(Hello)]
    ids = {hello.controller_id for hello in hellos}
    assert ids == {f"{socket.gethostname()}-{c.pid}" for c in controllers}


def test_one_controller_per_pid_file(
    master: ScriptedMaster, start_controller: Callable[..., ControllerProcess], tmp_path: Path
) -> None:
    pid_file = tmp_path / "controller.pid"
    first = start_controller(master.endpoint, pid_file=str(pid_file))
    master.welcome()
    assert pid_file.read_text().strip() == str(first.pid)
    second = start_controller(master.endpoint, pid_file=str(pid_file))
    assert second.exit_code() == 1
    assert f"already running (pid {first.pid}" in second.log()
    master.send(Shutdown("done"))
    master.expect(Goodbye)
    assert first.exit_code() == 0
    assert not pid_file.exists()


# -- what a controller runs is its own decision -----------------------------------------------


def test_a_master_that_sends_a_task_naming_an_executable_gets_it_refused(
    master: ScriptedMaster, start_controller: Callable[..., ControllerProcess], tmp_path: Path
) -> None:
    marks = tmp_path / "marks"
    marks.mkdir()
    evil = tmp_path / "evil"
    evil.write_text(f"#!/bin/sh\ntouch {tmp_path / 'evil-ran'}\n")
    evil.chmod(0o755)
    start_controller(master.endpoint, local={"marker": {"marker": "touch"}})
    master.welcome()
    master.send(
        Dispatch(
            [
                TaskEnvelope("own", "marker", {"marks": str(marks)}),
                TaskEnvelope("forged", "marker", {"marks": str(marks), "marker": str(evil)}),
            ]
        )
    )
    results, _ = master.results(2)
    by_id = {r.task_id: r for r in results}
    assert by_id["own"].status is Status.OK, by_id["own"].error
    assert (marks / "own").exists()  # run with the controller's own program
    forged = by_id["forged"]
    assert forged.status is Status.FAILED
    assert forged.error is not None
    assert forged.error.startswith("arguments of task type 'marker': ")
    assert "marker" in forged.error.removeprefix("arguments of task type 'marker': ")
    assert not (tmp_path / "evil-ran").exists()
    assert not (marks / "forged").exists()


def test_a_controller_restricted_to_noop_announces_and_runs_only_noop(
    master: ScriptedMaster, start_controller: Callable[..., ControllerProcess]
) -> None:
    start_controller(master.endpoint, task_types=["noop"])
    assert master.welcome().task_types == ["noop"]
    master.send(Dispatch([noop("n1"), TaskEnvelope("s1", "sleep", {"seconds": 0})]))
    results, _ = master.results(2)
    by_id = {r.task_id: r for r in results}
    assert by_id["n1"].status is Status.OK
    assert (by_id["s1"].status, by_id["s1"].error) == (
        Status.FAILED,
        "task type 'sleep' is not run by this controller (controller.task_types: noop)",
    )


@pytest.mark.parametrize(
    ("settings", "error"),
    [
        (
            {"task_types": ["noop", "nope"]},
            "controller.task_types: unknown task type 'nope' (installed: ",
        ),
        (
            {"local": {"marker": {"marker": ["touch"]}}},
            "controller.local.marker.marker: expected a string, got ['touch']",
        ),
    ],
)
def test_bad_task_types_or_local_settings_stop_the_start_with_one_line(
    start_controller: Callable[..., ControllerProcess], settings: dict[str, Any], error: str
) -> None:
    controller = start_controller("tcp://127.0.0.1:1", **settings)
    assert controller.exit_code() == 2
    errors = [line for line in controller.log().splitlines() if line.startswith("ERROR")]
    assert len(errors) == 1, errors
    assert errors[0].startswith(f"ERROR cyclone.controller: {error}"), errors


# -- keys --------------------------------------------------------------------------------------


def errors(controller: ControllerProcess) -> list[str]:
    return [line for line in controller.log().splitlines() if line.startswith("ERROR")]


def test_a_master_with_another_key_gets_nothing_and_the_controller_says_so(
    context: zmq.Context[zmq.Socket[bytes]], start_controller: Callable[..., ControllerProcess], curve: CurveKeys
) -> None:
    impostor = ScriptedMaster(context, keys.generate())
    try:
        controller = start_controller(impostor.endpoint, master_timeout=0.5)
        pinned = curve.controller_dir / "master.public"
        controller.wait_for_log(
            f"the handshake with {impostor.endpoint} failed: it is not the master whose key is pinned in {pinned}"
        )
        controller.wait_for_log(
            f"no answer from master {impostor.endpoint}: is it running, and is its key the one pinned in {pinned}?"
        )
        controller.wait_for_log("reconnecting in 0.2 s")  # the reconnect rules go on
        assert impostor.sock.poll(0) == 0  # not a single message got through
        assert controller.process.poll() is None
    finally:
        impostor.close()


def test_a_plaintext_master_gets_nothing_either(
    context: zmq.Context[zmq.Socket[bytes]], start_controller: Callable[..., ControllerProcess]
) -> None:
    plaintext = ScriptedMaster(context, None)
    try:
        controller = start_controller(plaintext.endpoint)
        controller.wait_for_log(f"the handshake with {plaintext.endpoint} failed")
        assert plaintext.sock.poll(0) == 0
    finally:
        plaintext.close()


def test_a_world_readable_secret_key_stops_the_start_with_one_line(
    master: ScriptedMaster, start_controller: Callable[..., ControllerProcess], curve: CurveKeys
) -> None:
    secret = curve.controller_dir / "controller.secret"
    secret.chmod(0o644)
    controller = start_controller(master.endpoint)
    assert controller.exit_code() == 2
    assert errors(controller) == [
        f"ERROR cyclone.controller: permissions 0644 for '{secret}' are too open; chmod 600 it"
    ]
    assert master.sock.poll(0) == 0


@pytest.mark.parametrize(
    ("missing", "advice"),
    [("controller.secret", "run `cyclone keys new --dir"), ("master.public", "run `cyclone keys pin MASTER_KEY")],
)
def test_missing_keys_stop_the_start_with_one_line_saying_what_to_run(
    master: ScriptedMaster,
    start_controller: Callable[..., ControllerProcess],
    curve: CurveKeys,
    missing: str,
    advice: str,
) -> None:
    (curve.controller_dir / missing).unlink()
    controller = start_controller(master.endpoint)
    assert controller.exit_code() == 2
    (line,) = errors(controller)
    assert advice in line
    assert line.endswith("or start with --token TOKEN")


def test_insecure_connects_in_plaintext_and_says_so(
    context: zmq.Context[zmq.Socket[bytes]], start_controller: Callable[..., ControllerProcess], tmp_path: Path
) -> None:
    plaintext = ScriptedMaster(context, None)
    try:
        controller = start_controller(plaintext.endpoint, insecure=True, keys=str(tmp_path / "none"))
        plaintext.welcome()
        plaintext.send(Dispatch([noop("plain")]))
        (result,), _ = plaintext.results(1)
        assert result.status is Status.OK
        assert "WARNING cyclone.controller: controller.insecure: connecting to" in controller.log()
    finally:
        plaintext.close()


def _token(tmp_path: Path, master: keys.Keypair) -> str:
    """A join token of ``master``."""
    master_dir = tmp_path / "master-keys"
    keys.write_keypair(master_dir, keys.MASTER_NAME, master)
    return keys.issue_token(master_dir, master.public, ttl=600, now=time.time())


def test_with_a_token_it_enrolls_once_and_a_restart_does_not_enroll_again(
    master: ScriptedMaster, start_controller: Callable[..., ControllerProcess], curve: CurveKeys, tmp_path: Path
) -> None:
    token = _token(tmp_path, curve.master)
    fresh = tmp_path / "fresh-keys"
    first = start_controller(master.endpoint, keys=str(fresh), token=token)
    enroll = master.expect(Enroll)
    assert base64.urlsafe_b64decode(enroll.secret + "==") == keys.parse_token(token)[1]
    master.send(Enrolled("node1", "node1-*"))
    master.welcome()  # a new connection, then Hello
    first.wait_for_log("recorded the enrollment")
    assert (fresh / "master.public").read_text().strip() == curve.master.public
    assert keys.load_keypair(fresh / "controller.secret")  # 0600 in 0700
    os.kill(first.pid, signal.SIGTERM)
    master.expect(Goodbye)
    assert first.exit_code() == 0
    start_controller(master.endpoint, keys=str(fresh), token=token)
    assert isinstance(master.recv(), Hello)


def test_a_refused_enrollment_is_one_line_and_exit_2(
    master: ScriptedMaster, start_controller: Callable[..., ControllerProcess], curve: CurveKeys, tmp_path: Path
) -> None:
    token = _token(tmp_path, curve.master)
    controller = start_controller(master.endpoint, keys=str(tmp_path / "fresh-keys"), token=token)
    master.expect(Enroll)
    master.send(Refuse("the join token is unknown, used or expired: ask for a new one"))
    assert controller.exit_code() == 2
    assert errors(controller) == [
        "ERROR cyclone.controller: master refused to enroll this controller with its join token: "
        "the join token is unknown, used or expired: ask for a new one"
    ]


def test_a_token_of_another_master_than_the_one_pinned_is_refused_at_start(
    master: ScriptedMaster, start_controller: Callable[..., ControllerProcess], curve: CurveKeys, tmp_path: Path
) -> None:
    token = _token(tmp_path, keys.generate())
    controller = start_controller(master.endpoint, token=token)
    assert controller.exit_code() == 2
    (line,) = errors(controller)
    assert "pins another master key than the join token's" in line
