"""A live run for the dashboard's tests, started once per session: ``cyclone master`` with
``--http-port`` and the ``queue`` generator, three ``cyclone controller`` processes, and tasks
submitted with :class:`cyclone_core.api.Client` (some fail, some probe a stand-in Lustre)."""

from __future__ import annotations

import contextlib
import http.client
import os
import re
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest

from cyclone_core.api import Client
from cyclone_core.builtins.tasks import CrashTask, FailTask, NoopTask, SleepTask
from cyclone_core.testing import free_port, wait_until

CONTROLLERS = ("node01-a", "node01-b", "node02-a")


@attrs.define
class LiveRun:
    """The processes of the run and how to reach them."""

    directory: Path
    endpoint: str
    port: int
    token: str
    results: Path
    master: subprocess.Popen[bytes]
    controllers: dict[str, subprocess.Popen[bytes]]
    #: Whether the run probes a stand-in Lustre (cyclone-lustre-ost installed).
    cyclone: str = "cyclone"
    env: dict[str, str] = attrs.field(factory=dict)
    lustre: bool = False
    #: Whether it checks file creation on the stand-in too (cyclone-file-create installed).
    file_create: bool = False
    submitted: int = 0

    @property
    def login(self) -> str:
        return f"http://127.0.0.1:{self.port}/?token={self.token}"

    @property
    def cookie(self) -> str:
        return f"cyclone_dashboard_{self.port}={self.token}"

    def get(self, path: str, *, cookie: bool = True, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
        """One request to the dashboard: status, headers (lower-case names), body."""
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            connection.request(method, path, headers={"Cookie": self.cookie} if cookie else {})
            reply = connection.getresponse()
            return reply.status, {k.lower(): v for k, v in reply.getheaders()}, reply.read()
        finally:
            connection.close()

    def client(self) -> Client:
        return Client(self.endpoint, insecure=True)

    def submit(self, tasks: list[Any]) -> None:
        with self.client() as client:
            self.submitted += client.submit(tasks, done=False)

    def start_controller(self, name: str) -> None:
        """Start one more ``cyclone controller`` with two workers, named ``name``."""
        self.controllers[name] = _spawn(
            [
                self.cyclone,
                "controller",
                "--config",
                str(self.directory / "cyclone.toml"),
                "--insecure",
                "--master",
                self.endpoint,
                "--id",
                name,
                "--workers",
                "2",
            ],
            self.directory / f"{name}.log",
            self.env,
        )

    def summary(self) -> dict[str, Any]:
        with self.client() as client:
            return client.summary()


def _spawn(args: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        # A session of its own: the process and its workers are killed together at the end.
        return subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)


def _stop(process: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    if process.poll() is None:
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
    try:
        process.wait(15)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(5)


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    """Make sure nothing of ``process``'s session is left (its workers included)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)


@pytest.fixture(scope="session")
def live_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveRun]:
    """The run, with its first tasks settled; stopped (and every process reaped) at the end."""
    cyclone = shutil.which("cyclone")
    assert cyclone is not None, "the cyclone console script is not installed (pip install -e .)"
    directory = tmp_path_factory.mktemp("dashboard")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CYCLONE_")}
    config = directory / "cyclone.toml"
    lines = [
        "[master]",
        "controller_timeout = 3.0",
        "heartbeat_interval = 0.5",
        "max_failed_retries = 1",
        "[controller]",
        "heartbeat_interval = 0.5",
    ]
    fs = None
    try:
        from cyclone_lustre_ost.testing import standin_lustre  # noqa: PLC0415  (a plugin: optional here)

        fs = standin_lustre(directory, osts=21, mdt_count=2, inactive=[13], io_error=[5], place_on={9: 3}, drained=[20])
        lines.append(fs.toml())
    except ImportError:
        pass
    config.write_text("\n".join(lines) + "\n")
    port, http_port = free_port(), free_port()
    endpoint = f"tcp://127.0.0.1:{port}"
    results = directory / "results.sqlite"
    master_log = directory / "master.log"
    master = _spawn(
        [
            cyclone,
            "master",
            "--config",
            str(config),
            "--insecure",
            "--bind",
            endpoint,
            "--generator",
            "queue",
            "--sink",
            "sqlite",
            "-s",
            f"sqlite.path={results}",
            "-s",
            "sqlite.flush_interval=0.05",
            "--journal",
            str(directory / "journal.sqlite"),
            "--http-port",
            str(http_port),
        ],
        master_log,
        env,
    )
    controllers: dict[str, subprocess.Popen[bytes]] = {}
    run = LiveRun(
        directory,
        endpoint,
        http_port,
        "",
        results,
        master,
        controllers,
        cyclone=cyclone,
        env=env,
        lustre=fs is not None,
    )
    try:
        line = wait_until(
            lambda: (master.poll() is None and re.search(r"dashboard: (\S+)", master_log.read_text())) or master.poll(),
            timeout=30,
            what="the master's dashboard line",
        )
        assert isinstance(line, re.Match), f"the master exited:\n{master_log.read_text()}"
        run.token = line.group(1).split("?token=", 1)[1]
        for name in CONTROLLERS:
            controllers[name] = _spawn(
                [
                    cyclone,
                    "controller",
                    "--config",
                    str(config),
                    "--insecure",
                    "--master",
                    endpoint,
                    "--id",
                    name,
                    "--workers",
                    "2",
                ],
                directory / f"{name}.log",
                env,
            )
        wait_until(lambda: len(run.summary()["controllers"]) == len(CONTROLLERS), timeout=60, what="3 controllers")
        tasks: list[Any] = [NoopTask() for _ in range(40)]
        tasks += [SleepTask(seconds=0.05) for _ in range(10)]
        tasks += [FailTask(message=f"disk quota exceeded on /scratch/run{i}") for i in range(4)]
        tasks.append(CrashTask())  # crashes its worker three times: quarantined
        if fs is not None:
            from cyclone_lustre_ost.probe import LustreOstIoTask  # noqa: PLC0415

            tasks += [
                LustreOstIoTask(
                    path=str(fs.mount),
                    ost=index,
                    fsname=fs.fsname,
                    active=index != 13,
                    admin_state="drained" if index == 20 else "",
                    total_size=65536,
                    block_size=65536,
                )
                for index in range(21)
            ]
            try:
                from cyclone_file_create.task import FileCreateTask  # noqa: PLC0415

                tasks += [
                    FileCreateTask(
                        path=str(fs.mount),
                        mode="lustre",
                        fsname=fs.fsname,
                        mdt_index=mdt,
                        ost_index=ost,
                        ost_active=ost != 13,
                    )
                    for mdt in (0, 1)
                    for ost in (0, 1, 9, 13)
                ]
                run.file_create = True
            except ImportError:
                pass
        run.submit(tasks)
        wait_until(lambda: _settled(run.summary()) == run.submitted, timeout=60, what="the first tasks to settle")
        yield run
    finally:
        for process in controllers.values():
            _stop(process)
        _stop(master)
        for process in [*controllers.values(), master]:
            _kill_group(process)


def _settled(summary: dict[str, Any]) -> int:
    return int(summary["succeeded"] + summary["failed"] + summary["quarantined"])
