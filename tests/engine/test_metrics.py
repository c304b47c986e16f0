"""The metrics endpoint on a real socket: where it listens, what it serves, and how few threads
it takes whatever its clients do."""

from __future__ import annotations

import socket
import threading
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from cyclone_core.engine.metrics import MetricsServer
from cyclone_core.engine.scheduler import Histogram
from cyclone_core.errors import ConfigError
from cyclone_core.testing import free_port


def snapshot(**fields: Any) -> dict[str, Any]:
    """A master's status snapshot with what the metrics read."""
    counters = dict.fromkeys(("succeeded", "failed", "quarantined", "crashed", "timed_out", "lost"), 0)
    return {
        **counters,
        "submitted": 3,
        "queued": 1,
        "in_flight": 2,
        "controllers": [],
        "protocol_errors": 0,
        "sinks": [],
        **fields,
    }


@pytest.fixture
def server() -> Iterator[MetricsServer]:
    metrics = MetricsServer(0)
    yield metrics
    metrics.close()


def scrape(port: int, timeout: float = 10.0) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=timeout) as reply:
        return reply.read().decode()


def test_it_listens_on_loopback_unless_told_otherwise(server: MetricsServer) -> None:
    assert server.address == "127.0.0.1"
    with pytest.raises(ConnectionRefusedError):
        # Another address of this host: nothing listens there.
        socket.create_connection((_non_loopback_address(), server.port), timeout=5).close()


def _non_loopback_address() -> str:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # TEST-NET-1: no packet is sent
        except OSError:
            pytest.skip("this host has no network address besides loopback")
        address = str(probe.getsockname()[0])
    if address.startswith("127."):
        pytest.skip("this host has no network address besides loopback")
    return address


def test_refusals_are_served_by_reason(server: MetricsServer) -> None:
    server.publish(snapshot(refusals={"unknown key": 3, "not admin": 1}), Histogram([1.0]))
    text = scrape(server.port)
    assert 'cyclone_refusals_total{reason="unknown key"} 3.0' in text
    assert 'cyclone_refusals_total{reason="not admin"} 1.0' in text
    assert "cyclone_queue_depth 1.0" in text


def test_a_snapshot_without_refusals_serves_none(server: MetricsServer) -> None:
    server.publish(snapshot(), Histogram([1.0]))
    assert "cyclone_refusals_total{" not in scrape(server.port)


def test_silent_clients_take_no_threads_and_scrapes_are_answered_after_them() -> None:
    timeout = 0.3
    server = MetricsServer(0, timeout=timeout)
    try:
        server.publish(snapshot(), Histogram([1.0]))
        before = threading.active_count()
        silent = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(5)]
        try:
            assert threading.active_count() == before
            started = time.monotonic()
            assert "cyclone_queue_depth" in scrape(server.port)
            # Each silent connection is dropped after its timeout, one after the other.
            assert time.monotonic() - started <= 5 * timeout + 5
            assert threading.active_count() == before
            assert all(sock.recv(1) == b"" for sock in silent)  # closed by the server
        finally:
            for sock in silent:
                sock.close()
    finally:
        server.close()


def test_a_port_in_use_is_one_line(server: MetricsServer) -> None:
    with pytest.raises(ConfigError, match=rf"^metrics endpoint 127.0.0.1:{server.port}: cannot listen \("):
        MetricsServer(server.port)


def test_an_address_that_is_not_one_is_one_line() -> None:
    with pytest.raises(ConfigError, match=r"^metrics endpoint no such host\.invalid:\d+: cannot listen"):
        MetricsServer(free_port(), "no such host.invalid")
