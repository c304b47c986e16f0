"""Shared fixtures: run a task spec the way a worker would and report its result back; a real
Pushgateway and a real Prometheus for the dashboard's check."""

from __future__ import annotations

import itertools
import json
import shutil
import subprocess
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cyclone_lustre_ost.local import LustreLocal

from cyclone_core import Result, TaskContext, TaskGenerator, TaskSpec
from cyclone_core.testing import free_port, unavailable, wait_until

_ids = itertools.count(1)


@pytest.fixture
def settle() -> Callable[[TaskGenerator, TaskSpec], Result]:
    """``settle(generator, spec)`` executes the spec's task and feeds the result back.

    The task runs as on a controller configured like the generator's master: the same Lustre
    tools, and the generator's ``path`` as its only root."""

    def run(generator: TaskGenerator, spec: TaskSpec) -> Result:
        task_id = f"test-run:{next(_ids)}"
        local = LustreLocal(
            lfs=getattr(generator, "lfs_bin", "lfs"),
            lctl=getattr(generator, "lctl_bin", "lctl"),
            sudo=getattr(generator, "sudo", False),
            roots=(getattr(generator, "path", "/"),),
        )
        outcome = spec.task.execute(TaskContext(task_id=task_id, local=local))
        result = Result(
            task_id=task_id,
            task_type=spec.task.name,
            status=outcome.status,
            key=spec.key,
            error=outcome.error,
            metrics=outcome.metrics,
            payload=outcome.payload,
        )
        generator.on_result(result)
        return result

    return run


# -- a real Pushgateway and a real Prometheus scraping it, once per test session ---------------


class Server:
    """A server binary on a loopback port, its output in a log file; ``ready`` is its readiness
    URL.  Started once per session, killed at the end."""

    def __init__(self, name: str, command: list[str], port: int, log: Path) -> None:
        self.name = name
        self.command = command
        self.url = f"http://127.0.0.1:{port}"
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start it and wait until ``/-/ready`` answers."""
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                self.command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        wait_until(self._ready, timeout=60, what=f"{self.name} at {self.url}")

    def _ready(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            pytest.fail(f"{self.name} exited with {self.process.returncode}: {self.log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=5) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    def stop(self) -> None:
        """Kill it and wait for it to exit."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=30)

    def get(self, path: str, **params: str) -> Any:
        """GET ``path`` with query parameters; the decoded JSON answer."""
        query = urllib.parse.urlencode(params)
        with urllib.request.urlopen(f"{self.url}{path}?{query}", timeout=10) as response:
            return json.loads(response.read())


def _binary(name: str, package: str) -> str:
    binary = shutil.which(name)
    if binary is None:
        unavailable(f"{name} is not installed (Debian package {package}; scripts/install-system-deps installs it)")
    return binary


@pytest.fixture(scope="session")
def pushgateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A Pushgateway without persistence, for the whole session."""
    binary = _binary("prometheus-pushgateway", "prometheus-pushgateway")
    port = free_port()
    directory = tmp_path_factory.mktemp("pushgateway")
    command = [binary, f"--web.listen-address=127.0.0.1:{port}", "--persistence.file="]
    server = Server("the Pushgateway", command, port, directory / "pushgateway.log")
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def prometheus(tmp_path_factory: pytest.TempPathFactory, pushgateway: Server) -> Iterator[Server]:
    """A Prometheus scraping ``pushgateway`` every second (``honor_labels``, as a Pushgateway
    needs), with its data in a temporary directory, for the whole session."""
    binary = _binary("prometheus", "prometheus")
    port = free_port()
    directory = tmp_path_factory.mktemp("prometheus")
    config = directory / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        "scrape_configs:\n  - job_name: pushgateway\n    honor_labels: true\n"
        f"    static_configs:\n      - targets: ['{pushgateway.url.removeprefix('http://')}']\n"
    )
    command = [
        binary,
        f"--config.file={config}",
        f"--storage.tsdb.path={directory / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
    ]
    server = Server("Prometheus", command, port, directory / "prometheus.log")
    try:
        server.start()
        yield server
    finally:
        server.stop()
