"""Fixtures for the pushgateway sink's tests: a real Pushgateway of the test's own.

The binary is ``prometheus-pushgateway`` on the PATH (Debian package of that name), or
``CYCLONE_TEST_PUSHGATEWAY``.  A missing binary skips the test with the reason, except under
``CI=true``, where it fails.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from cyclone_core.testing import free_port, unavailable, wait_until

# Metrics every gateway serves about itself; tests look at the rest.
_OWN_PREFIXES = ("go_", "process_", "pushgateway_", "promhttp_", "push_time_seconds", "push_failure_time_seconds")


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=5) as response:
        return bytes(response.read())


class Gateway:
    """A Pushgateway process on a free port, without persistence."""

    def __init__(self, binary: str, log: Path) -> None:
        self.binary = binary
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start it and wait until ``/-/ready`` answers."""
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [self.binary, f"--web.listen-address=127.0.0.1:{self.port}", "--persistence.file="],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        wait_until(self._ready, timeout=30, what=f"the Pushgateway on port {self.port}")

    def _ready(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            pytest.fail(f"the Pushgateway exited with {self.process.returncode}: {self.log.read_text()[-2000:]}")
        try:
            return _get(f"{self.url}/-/ready").strip() == b"OK"
        except OSError:
            return False

    def stop(self) -> None:
        """Kill it and wait for it to exit."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=30)

    def samples(self) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        """Every pushed sample on ``/metrics``: (name, labels) -> value."""
        text = _get(f"{self.url}/metrics").decode()
        return {
            (sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if not sample.name.startswith(_OWN_PREFIXES)
        }

    def types(self) -> dict[str, str]:
        """Metric family name -> type as ``/metrics`` declares it."""
        text = _get(f"{self.url}/metrics").decode()
        return {family.name: family.type for family in text_string_to_metric_families(text)}

    def groups(self) -> list[dict[str, Any]]:
        """The groups of ``GET /api/v1/metrics``."""
        return list(json.loads(_get(f"{self.url}/api/v1/metrics"))["data"])


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[Gateway]:
    """A running Pushgateway, killed after the test."""
    binary = os.environ.get("CYCLONE_TEST_PUSHGATEWAY") or shutil.which("prometheus-pushgateway")
    if not binary or not os.access(binary, os.X_OK):
        unavailable("prometheus-pushgateway is not installed (Debian package prometheus-pushgateway)")
    server = Gateway(binary, tmp_path / "pushgateway.log")
    try:
        server.start()
        yield server
    finally:
        server.stop()
