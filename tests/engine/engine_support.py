"""Helpers of the engine tests: waiting on conditions, real processes, reading results."""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import msgpack
import pytest

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
