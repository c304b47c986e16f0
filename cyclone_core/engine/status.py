"""``cyclone status``: ask a master for its snapshot and show it."""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Sequence
from typing import Any

import zmq
from ClusterShell.NodeSet import RESOLVER_NOGROUP, NodeSet, NodeSetException
from ClusterShell.NodeUtils import GroupResolverError, GroupSourceError
from rich.console import Console
from rich.table import Table
from rich.text import Text

from cyclone_core.engine import protocol
from cyclone_core.engine.curve import ClientKeys
from cyclone_core.errors import CycloneError, UsageError
from cyclone_core.plural import plural

__all__ = (
    "BY_HOST_ABOVE",
    "expect_lines",
    "expect_split",
    "expected_hosts",
    "fetch_status",
    "fold",
    "format_duration",
    "host_lines",
    "render_status",
    "wrap",
)

#: Above this many controllers, the status groups them per host: a table with a row each would
#: push everything else off a terminal.
BY_HOST_ABOVE = 16
#: Lost controllers named by id under the table at most (the latest).
_LOST_SHOWN = 10


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


def render_status(
    snapshot: dict[str, Any], console: Console, *, by_host: bool | None = None, expect: NodeSet | None = None
) -> None:
    """Print ``snapshot`` as a few lines and two tables, each line broken only between phrases.

    :param by_host: controllers grouped per host in folded nodesets (``node[01-32]``) instead
        of one row each; ``None``: above :data:`BY_HOST_ABOVE` controllers or with ``expect``.
    :param expect: the hosts that should run controllers; the missing ones are named.
    """
    width = console.width
    state = " (stopping)" if snapshot.get("draining") else ""
    generator = snapshot.get("generator") or {}
    _lines(
        console,
        [
            f"master {snapshot.get('master_id', '?')},",
            f"run {snapshot.get('run_id', '?')},",
            f"up {format_duration(snapshot.get('uptime_s', 0.0))}{state}",
        ],
    )
    if generator:
        _lines(console, _generator_pieces(generator))
    _lines(
        console,
        [
            f"tasks: {snapshot['submitted']} submitted,",
            f"{snapshot['queued']} queued,",
            f"{snapshot['in_flight']} in flight,",
            f"{snapshot['succeeded']} succeeded,",
            f"{snapshot['failed']} failed,",
            f"{snapshot['quarantined']} quarantined",
            f"({plural(snapshot.get('timed_out', 0), 'attempt')} timed out,",
            f"{snapshot.get('crashed', 0)} crashed,",
            f"{snapshot.get('lost', 0)} lost);",
            f"{snapshot.get('tasks_per_second', 0.0):.1f} tasks/s",
        ],
    )
    controllers = snapshot["controllers"]
    if by_host is None:
        by_host = expect is not None or len(controllers) > BY_HOST_ABOVE
    if by_host:
        for line in host_lines(snapshot, width, expect):
            console.print(line, highlight=False, markup=False, soft_wrap=True)
    else:
        _controller_table(snapshot, console)
        if expect is not None:
            for line in expect_lines((ctl["host"] for ctl in controllers), expect, width):
                console.print(line, highlight=False, markup=False, soft_wrap=True)
    sinks = Table(title="sinks", title_justify="left", box=None, padding=(0, 2, 0, 0), pad_edge=False)
    for header in ("sink", "backlog", "delivered", "errors"):
        sinks.add_column(header, no_wrap=True)
    sinks.add_column("last error", overflow="fold")
    for sink in snapshot.get("sinks", []):
        error = sink.get("last_error") or "-"
        if sink.get("last_error") and not sink.get("failing"):
            error += " (recovered)"
        sinks.add_row(*(Text(str(sink[key])) for key in ("name", "backlog", "delivered", "errors")), Text(error))
    console.print(sinks)
    _journal_lines(snapshot, console)
    if snapshot.get("protocol_errors"):
        _lines(console, f"{snapshot['protocol_errors']} bad messages received (see the master's log)".split())


def _journal_lines(snapshot: dict[str, Any], console: Console) -> None:
    """A journal that cannot be written, and the results the sinks rejected (the latest few)."""
    journal = snapshot.get("journal") or {}
    if journal.get("full"):
        _lines(console, f"journal {journal['path']} cannot be written (disk full?): nothing is dispatched".split())
    elif journal.get("low_space"):
        free = (journal.get("free_bytes") or 0) / 1e6
        _lines(console, f"journal {journal['path']}: {free:.1f} MB free on its file system".split())
    dead = snapshot.get("dead_letters") or {}
    if dead.get("count"):
        count = plural(dead["count"], "result")
        _lines(console, f"{count} rejected by sinks (cyclone results --dead-letters), latest:".split())
        for d in dead.get("latest", []):
            _lines(console, f"- {d['task_id']} ({d['sink']}, {_ago(d['at'])}): {d['error']}".split())


def _generator_pieces(generator: dict[str, Any]) -> list[str]:
    pieces = [f"generator {generator.get('name')}:", "done" if generator.get("exhausted") else "running"]
    if generator.get("total") is not None:
        pieces[-1] += ","
        pieces.append(f"{plural(generator['total'], 'task')} in all")
    if generator.get("error"):
        pieces[-1] += ","
        pieces += ["failed:", *str(generator["error"]).split()]
    return pieces


def _controller_table(snapshot: dict[str, Any], console: Console) -> None:
    """One row per controller; the lost ones by id after it."""
    controllers = snapshot["controllers"]
    table = Table(
        title=f"controllers ({len(controllers)})", title_justify="left", box=None, padding=(0, 2, 0, 0), pad_edge=False
    )
    table.add_column("id", overflow="fold")
    table.add_column("host", overflow="fold")
    for header in ("pid", "workers", "in flight", "last seen"):
        table.add_column(header, no_wrap=True)
    for ctl in controllers:
        name = ctl["id"] + (" (draining)" if ctl.get("draining") else "")
        cells = (name, ctl["host"], str(ctl["pid"]), str(ctl["workers"]), str(ctl["in_flight"]), _ago(ctl["last_seen"]))
        table.add_row(*(Text(cell) for cell in cells))
    console.print(table)
    lost = snapshot.get("lost_controllers") or []
    if lost:
        shown = [f"{entry['id']} (lost {_ago(entry['lost_at'])}: {entry['reason']})," for entry in lost[-_LOST_SHOWN:]]
        shown[-1] = shown[-1].rstrip(",")
        more = [f"and {len(lost) - _LOST_SHOWN} more"] if len(lost) > _LOST_SHOWN else []
        if more:
            shown[-1] += ","
        _lines(console, [f"lost ({len(lost)}):", *shown, *more])


def host_lines(snapshot: dict[str, Any], width: int, expect: NodeSet | None = None) -> list[str]:
    """The controllers of ``snapshot`` per host, as lines at most ``width`` wide where phrases
    allow: hosts alike (as many controllers and workers, draining or not) share a line under
    their folded nodeset with their sums; then the hosts whose controllers were lost (and have
    none now), and with ``expect`` the expected hosts without a controller."""
    per_host: dict[str, list[dict[str, Any]]] = {}
    for ctl in snapshot["controllers"]:
        per_host.setdefault(ctl["host"], []).append(ctl)
    groups: dict[tuple[int, int, bool], list[str]] = {}
    for host, ctls in per_host.items():
        shape = (len(ctls), sum(c["workers"] for c in ctls), any(c.get("draining") for c in ctls))
        groups.setdefault(shape, []).append(host)
    rows = []
    for (count, workers, draining), hosts in groups.items():
        in_flight = sum(c["in_flight"] for host in hosts for c in per_host[host])
        nodes = fold(hosts)
        rows.append(
            (
                (-len(hosts), _natural(min(hosts, key=_natural))),
                [
                    f"{nodes} ",
                    f"{plural(count * len(hosts), 'controller')}{' (draining)' if draining else ''},",
                    f"{plural(workers * len(hosts), 'worker')},",
                    f"{in_flight:,} in flight",
                ],
            )
        )
    controllers = len(snapshot["controllers"])
    lines = [f"controllers ({controllers:,}) on {plural(len(per_host), 'host')}"]
    for _, pieces in sorted(rows):  # the most hosts first
        lines += wrap(pieces, width, indent=4)
    lost = [
        entry for entry in snapshot.get("lost_controllers") or [] if entry["host"] and entry["host"] not in per_host
    ]
    if lost:
        lines += wrap(
            ["lost:", f"{fold(entry['host'] for entry in lost)} ", plural(len(lost), "controller")],
            width,
            indent=4,
        )
    if expect is not None:
        lines += expect_lines(per_host, expect, width)
    return lines


def expect_split(hosts: Iterable[str], expect: NodeSet) -> tuple[list[str], list[str]]:
    """The hosts of ``expect`` that are not among ``hosts`` (those with a controller;
    ``node01.cluster`` counts for ``node01``), and the hosts that ``expect`` does not name."""
    hosts = set(hosts)
    present = hosts | {host.split(".", 1)[0] for host in hosts}
    missing = [host for host in expect if host not in present]
    known = set(expect)
    unexpected = [host for host in hosts if host not in known and host.split(".", 1)[0] not in known]
    return missing, unexpected


def expect_lines(hosts: Iterable[str], expect: NodeSet, width: int) -> list[str]:
    """``missing:`` the hosts of ``expect`` without a controller, and ``not expected:`` the
    hosts with one that ``expect`` does not name (:func:`expect_split`)."""
    missing, unexpected = expect_split(hosts, expect)
    lines = wrap(["missing:", fold(missing) if missing else "none"], width, indent=4)
    if unexpected:
        lines += wrap(["not expected:", fold(unexpected)], width, indent=4)
    return lines


def expected_hosts(text: str, option: str = "--expect") -> NodeSet:
    """The hosts ``text`` names as a nodeset (``node[01-32]``, ClusterShell's ``@group``s too);
    :class:`UsageError` naming ``option`` if it names none or is not one."""
    try:
        nodes = NodeSet(text)
    except (NodeSetException, GroupResolverError, GroupSourceError) as exc:
        raise UsageError(f"{option} {text!r} is not a nodeset ClusterShell can read: {exc}") from None
    if not nodes:
        raise UsageError(f"{option} {text!r} names no host")
    return nodes


def fold(hosts: Iterable[str]) -> str:
    """Host names in folded nodeset notation (``node[01-03,07]``); as a plain list should a
    name not be one ClusterShell folds."""
    names = sorted(set(hosts))
    try:
        return str(NodeSet.fromlist(names, resolver=RESOLVER_NOGROUP))
    except NodeSetException:
        return ",".join(names)


def wrap(pieces: Sequence[str], width: int, *, indent: int = 2) -> list[str]:
    """``pieces`` joined by spaces into lines of at most ``width`` characters, broken only
    between pieces (continuation lines indented by ``indent``); a piece longer than a line has
    one of its own."""
    lines: list[str] = []
    line = ""
    for piece in pieces:
        if line and len(line) + 1 + len(piece.rstrip()) > width:
            lines.append(line.rstrip())
            line = " " * indent + piece
        else:
            line = f"{line} {piece}" if line else piece
    if line:
        lines.append(line.rstrip())
    return lines


def _lines(console: Console, pieces: Sequence[str]) -> None:
    for line in wrap(pieces, console.width):
        console.print(line, highlight=False, markup=False, soft_wrap=True)


def _natural(text: str) -> list[Any]:
    """A sort key that puts ``node2`` before ``node10``."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]
