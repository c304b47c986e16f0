"""What the dashboard shows, gathered on the master's event loop and read from the server's threads.

The master calls :meth:`DashboardState.publish` once a second with its status snapshot; the
state is also registered as a plugin of the master, so the ``cyclone_results`` and
``cyclone_controller_lost`` hooks feed it the terminal results (outcomes per task type, the
latest failures, the plugins' panels) and the controllers that left.  Everything the server's
threads read is a copy made in :meth:`publish` and swapped in whole, so they never see the
loop's structures change under them; the JSON is built in the server's threads, once per
publish whoever asks.  Every list is bounded.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Sequence
from typing import Any

from cyclone_core.dashboard.panels import Cell, Panel, PanelGrid
from cyclone_core.engine.scheduler import Histogram
from cyclone_core.engine.status import fold
from cyclone_core.hookspecs import hookimpl
from cyclone_core.model import Result, Status

__all__ = ("FAILURES", "SAMPLES", "DashboardState")

#: Samples kept: one a second, ten minutes.
SAMPLES = 600
#: Latest failures kept (with their attempt histories); the page lists the newest of them.
FAILURES = 100
_FAILURES_LISTED = 25
#: Controllers that left, remembered for the page (the newest).
_DEPARTED = 200
#: Controllers listed at most (the page folds hosts; the counts cover them all).
_CONTROLLERS = 2000
#: Task types counted by name; the others are counted together.
_TASK_TYPES = 64
_OTHER_TYPES = "(other types)"
_ERROR_CHARS = 300
_HISTORY = 50
_TASK_ID = re.compile(r"[A-Za-z0-9._:-]{1,200}")


class DashboardState:
    """The dashboard's data: fed by the master's loop, read by the server.

    :param panels: the plugins' panels (``Plugins.dashboard_panels``).
    """

    def __init__(self, panels: Sequence[Panel] = ()) -> None:
        self.grids = [PanelGrid(panel) for panel in panels]
        self._samples: deque[tuple[float, int, int, int, float, float | None, float | None]] = deque(maxlen=SAMPLES)
        self._outcomes: dict[tuple[str, Status], int] = {}
        self._types: set[str] = set()
        self._failures: deque[Result] = deque(maxlen=FAILURES)
        self._departed: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._known: dict[str, tuple[str, int]] = {}  # controller id -> (host, workers), last seen
        self._previous: tuple[float, int, list[int]] | None = None  # time, settled, latency counts
        self._interval = Histogram([])
        self._published: tuple[int, dict[str, Any]] | None = None
        #: Each grid with the version and the cells of its latest copy.
        self._panels: list[tuple[PanelGrid, int, list[Cell]]] = [(grid, -1, []) for grid in self.grids]
        self._seq = 0
        self._lock = threading.Lock()  # the server's threads: one of them builds each JSON
        self._state_json: tuple[int, bytes] = (-1, b"")
        self._panels_json: tuple[tuple[int, ...], bytes] = ((), b"")

    # -- the master's loop -----------------------------------------------------------------

    @hookimpl
    def cyclone_results(self, results: Sequence[Result]) -> None:
        """Count ``results`` by type and status, keep the failures, fold them into the panels."""
        # On the master's loop for every batch: kept to a few operations per result.
        outcomes, types, failures, ok = self._outcomes, self._types, self._failures, Status.OK
        for result in results:
            type_, status = result.task_type, result.status
            if type_ not in types:
                if len(types) < _TASK_TYPES:
                    types.add(type_)
                else:
                    type_ = _OTHER_TYPES
            key = (type_, status)
            outcomes[key] = outcomes.get(key, 0) + 1
            if status is not ok:
                failures.append(result)
        for grid in self.grids:
            grid.add_all(results)

    @hookimpl
    def cyclone_controller_lost(self, controller_id: str, reason: str, requeued: int) -> None:
        """Remember a controller that left or was lost (the page shows it, lost ones in red)."""
        host, workers = self._known.get(controller_id, ("?", 0))
        self._departed.pop(controller_id, None)
        self._departed[controller_id] = {
            "id": controller_id,
            "host": host,
            "workers": workers,
            "reason": reason,
            "requeued": requeued,
            "lost": reason != "goodbye",
            "at": time.time(),
        }
        while len(self._departed) > _DEPARTED:
            self._departed.popitem(last=False)

    def publish(self, snapshot: dict[str, Any], latency: Histogram, now: float | None = None) -> None:
        """Take the master's status ``snapshot`` and round-trip ``latency`` histogram (once a
        second): a sample of the time series, and copies of what the page shows."""
        now = time.time() if now is None else now
        settled = snapshot["succeeded"] + snapshot["failed"] + snapshot["quarantined"]
        counts = list(latency.counts)
        rate = p50 = p99 = None
        previous = self._previous
        if previous is not None and now > previous[0]:
            rate = max(settled - previous[1], 0) / (now - previous[0])
            if len(previous[2]) == len(counts):
                interval = self._interval
                interval.bounds = latency.bounds
                interval.counts = [a - b for a, b in zip(counts, previous[2], strict=True)]
                interval.count = sum(interval.counts)
                p50, p99 = _ms(interval.quantile(0.5)), _ms(interval.quantile(0.99))
        self._previous = (now, settled, counts)
        self._samples.append(
            (round(now, 3), snapshot["queued"], snapshot["in_flight"], settled, round(rate or 0.0, 2), p50, p99)
        )
        controllers = snapshot.get("controllers", [])
        self._known = {c["id"]: (c["host"], c["workers"]) for c in controllers}
        for ctl_id in self._known:
            self._departed.pop(ctl_id, None)  # back again
        self._seq += 1
        self._published = (
            self._seq,
            {
                "snapshot": snapshot,
                "samples": list(self._samples),
                "outcomes": dict(self._outcomes),
                "failures": list(self._failures),
                "departed": list(self._departed.values()),
            },
        )
        self._panels = [
            (grid, version, cells) if grid.version == version else (grid, grid.version, list(grid.cells.values()))
            for grid, version, cells in self._panels
        ]

    # -- the server's threads --------------------------------------------------------------

    def state_json(self) -> bytes:
        """``/api/state``: the latest snapshot, time series, outcomes, failures and controllers."""
        published = self._published
        if published is None:
            return b"{}"
        with self._lock:
            if self._state_json[0] != published[0]:
                self._state_json = (published[0], _dumps(self._state(published[1])))
            return self._state_json[1]

    def panels_json(self) -> bytes:
        """``/api/panels``: every panel with its cells."""
        panels = self._panels
        versions = tuple(version for _, version, _ in panels)
        with self._lock:
            if self._panels_json[0] != versions or not self._panels_json[1]:
                self._panels_json = (versions, _dumps({"panels": [grid.as_dict(cells) for grid, _, cells in panels]}))
            return self._panels_json[1]

    def failure_json(self, task_id: str) -> bytes | None:
        """``/api/failures/<task_id>``: one of the latest failures with its attempt history;
        ``None`` if it is not one of them."""
        published = self._published
        if published is None or not _TASK_ID.fullmatch(task_id):
            return None
        for result in reversed(published[1]["failures"]):
            if result.task_id == task_id:
                return _dumps(_failure(result, history=True))
        return None

    def _state(self, published: dict[str, Any]) -> dict[str, Any]:
        snapshot = published["snapshot"]
        controllers = snapshot.get("controllers", [])
        hosts: dict[str, list[dict[str, Any]]] = {}
        for ctl in controllers[:_CONTROLLERS]:
            hosts.setdefault(ctl["host"], []).append(
                {k: ctl.get(k) for k in ("id", "workers", "in_flight", "draining", "last_seen")}
            )
        departed = published["departed"]
        for gone in departed:
            hosts.setdefault(gone["host"], [])
        outcomes: dict[str, dict[str, int]] = {}
        for (type_, status), count in sorted(published["outcomes"].items()):
            outcomes.setdefault(type_, {})[str(status)] = count
        names = ("t", "queued", "in_flight", "done", "rate", "p50_ms", "p99_ms")
        samples = published["samples"]
        return {
            "now": time.time(),
            "master_id": snapshot.get("master_id"),
            "run_id": snapshot.get("run_id"),
            "uptime_s": snapshot.get("uptime_s"),
            "draining": snapshot.get("draining"),
            "secure": snapshot.get("secure"),
            "generator": snapshot.get("generator"),
            "counts": {
                key: snapshot.get(key, 0)
                for key in (
                    "submitted",
                    "queued",
                    "in_flight",
                    "succeeded",
                    "failed",
                    "quarantined",
                    "timed_out",
                    "crashed",
                    "lost",
                    "retried",
                )
            },
            "done": snapshot["succeeded"] + snapshot["failed"] + snapshot["quarantined"],
            "tasks_per_second": snapshot.get("tasks_per_second"),
            "latency_ms_p50": snapshot.get("latency_ms_p50"),
            "latency_ms_p99": snapshot.get("latency_ms_p99"),
            "controllers": {
                "count": len(controllers),
                "workers": sum(c["workers"] for c in controllers),
                "hosts": fold(host for host, ctls in hosts.items() if ctls),
                "by_host": [{"host": host, "controllers": ctls} for host, ctls in sorted(hosts.items())],
                "departed": departed,
            },
            "series": {name: [sample[i] for sample in samples] for i, name in enumerate(names)},
            "outcomes": outcomes,
            "failures": [_failure(result) for result in reversed(published["failures"][-_FAILURES_LISTED:])],
            "sinks": snapshot.get("sinks", []),
            "panels": [
                {"name": grid.panel.name, "title": grid.panel.title, "version": version}
                for grid, version, _ in self._panels
            ],
        }


def _failure(result: Result, *, history: bool = False) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "task_id": result.task_id,
        "task_type": result.task_type,
        "key": result.key,
        "status": result.status.value,
        "error": (result.error or "")[:_ERROR_CHARS],
        "controller": result.controller,
        "attempt": result.attempt,
        "started_at": result.started_at,
        "duration": result.duration,
    }
    if history:
        entry["history"] = [
            {
                "attempt": attempt.attempt,
                "status": attempt.status.value,
                "error": (attempt.error or "")[:_ERROR_CHARS],
                "controller": attempt.controller,
                "finished_at": attempt.finished_at,
            }
            for attempt in result.history[-_HISTORY:]
        ]
    return entry


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 3)


def _dumps(data: Any) -> bytes:
    return json.dumps(data, separators=(",", ":"), allow_nan=False, default=str).encode()
