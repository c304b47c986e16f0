"""``cyclone status``: ask a master for its snapshot and show it."""

from __future__ import annotations

import time
from typing import Any

import zmq
from rich.console import Console
from rich.table import Table

from cyclone_core.engine import protocol
from cyclone_core.engine.curve import ClientKeys
from cyclone_core.errors import CycloneError
from cyclone_core.plural import plural

__all__ = ("fetch_status", "format_duration", "render_status")


def fetch_status(endpoint: str, timeout: float = 5.0, keys: ClientKeys | None = None) -> dict[str, Any]:
    """The snapshot of the master at ``endpoint``, asked with ``keys`` (``None``: in plaintext);
    :class:`CycloneError` if it does not answer within ``timeout`` seconds, refuses, or answers
    something else."""
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    sock = context.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    if keys is not None:
        keys.apply(sock)
    try:
        try:
            sock.connect(endpoint)
        except zmq.ZMQError as exc:
            raise CycloneError(f"cannot connect to master at {endpoint}: {exc.strerror}") from None
        sock.send(protocol.encode(protocol.StatusRequest()))
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0 and sock.poll(int(left * 1000) + 1):
            try:
                reply = protocol.decode(sock.recv())
            except protocol.ProtocolError as exc:
                raise CycloneError(f"master at {endpoint} answered something else: {exc}") from None
            if isinstance(reply, protocol.StatusReply):
                return reply.snapshot
            if isinstance(reply, protocol.Refuse):
                raise CycloneError(f"master at {endpoint} refused: {reply.reason}")
        hint = ""
        if keys is not None:
            hint = f": is it running, is its key the one in {keys.directory}, and does it admit this key?"
        raise CycloneError(f"no answer from a master at {endpoint} within {timeout:g} s{hint}")
    finally:
        sock.close(0)
        context.term()


def _ago(epoch: float) -> str:
    seconds = max(time.time() - epoch, 0.0)
    return f"{seconds:.1f} s ago" if seconds < 120 else f"{seconds / 60:.0f} min ago"


def format_duration(seconds: float) -> str:
    """``1h 02m 03s`` or ``2m 03s``."""
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m {secs:02d}s" if hours else f"{minutes}m {secs:02d}s"


def render_status(snapshot: dict[str, Any], console: Console) -> None:
    """Print ``snapshot`` as a few lines and two tables."""
    state = " (stopping)" if snapshot.get("draining") else ""
    generator = snapshot.get("generator") or {}
    console.print(
        f"master {snapshot.get('master_id', '?')}, run {snapshot.get('run_id', '?')}, "
        f"up {format_duration(snapshot.get('uptime_s', 0.0))}{state}",
        highlight=False,
    )
    if generator:
        done = "done" if generator.get("exhausted") else "running"
        if generator.get("total") is not None:
            done += f", {plural(generator['total'], 'task')} in all"
        error = f", failed: {generator['error']}" if generator.get("error") else ""
        console.print(f"generator {generator.get('name')}: {done}{error}", highlight=False)
    console.print(
        f"tasks: {snapshot['submitted']} submitted, {snapshot['queued']} queued, {snapshot['in_flight']} in flight, "
        f"{snapshot['succeeded']} succeeded, {snapshot['failed']} failed, {snapshot['quarantined']} quarantined "
        f"({plural(snapshot.get('timed_out', 0), 'attempt')} timed out, {snapshot.get('crashed', 0)} crashed, "
        f"{snapshot.get('lost', 0)} lost); {snapshot.get('tasks_per_second', 0.0):.1f} tasks/s",
        highlight=False,
    )
    controllers = Table(title=f"controllers ({len(snapshot['controllers'])})", title_justify="left")
    for header in ("id", "host", "pid", "workers", "in flight", "last seen"):
        controllers.add_column(header)
    for ctl in snapshot["controllers"]:
        name = ctl["id"] + (" (draining)" if ctl.get("draining") else "")
        controllers.add_row(
            name, ctl["host"], str(ctl["pid"]), str(ctl["workers"]), str(ctl["in_flight"]), _ago(ctl["last_seen"])
        )
    console.print(controllers)
    sinks = Table(title="sinks", title_justify="left")
    for header in ("sink", "backlog", "delivered", "errors", "last error"):
        sinks.add_column(header, overflow="fold")
    for sink in snapshot.get("sinks", []):
        error = sink.get("last_error") or "-"
        if sink.get("last_error") and not sink.get("failing"):
            error += " (recovered)"
        sinks.add_row(sink["name"], str(sink["backlog"]), str(sink["delivered"]), str(sink["errors"]), error)
    console.print(sinks)
    if snapshot.get("protocol_errors"):
        console.print(f"{snapshot['protocol_errors']} bad messages received (see the master's log)", highlight=False)
