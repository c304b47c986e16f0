"""The Python API attached to a running master: a notebook submits tasks to ``cyclone master
--generator queue`` and takes its results, with real master and controller processes."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from engine_support import FAST_CONTROLLER, FAST_MASTER, ClusterKeys, Proc, toml

from cyclone_core import Client, CycloneError, Result, Status, TaskSpec
from cyclone_core.builtins.tasks import FailTask, NoopTask, SleepTask
from cyclone_core.testing import free_port, wait_until


def _start_master(cyclone: Callable[..., Proc], tmp_path: Path, keys: ClusterKeys, generator: dict[str, Any]) -> str:
    """A master (and its config file, with a controller table) on a free port; its endpoint."""
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    tables = {
        "master": {"bind": endpoint, "keys": str(keys.master_dir), **FAST_MASTER},
        "controller": {"master": endpoint, "keys": str(keys.controller_dir), "workers": 4, **FAST_CONTROLLER},
        "generator": generator,
        "sinks.probe": {"path": str(tmp_path / "probe.jsonl"), "flush_interval": 0.05},
    }
    config = tmp_path / "cyclone.toml"
    config.write_text(toml(tables))
    master = cyclone("master", "--config", str(config))
    wait_until(lambda: "listening on" in master.output(), 30, "the master to listen")
    return endpoint


def _take(client: Client, count: int | None) -> list[Result]:
    """The results ``client`` takes (``count`` of them, or until the run ends), within a deadline."""
    taken: list[Result] = []

    def take() -> None:
        for result in client.results():
            taken.append(result)
            if len(taken) == count:
                break

    thread = threading.Thread(target=take, daemon=True)
    thread.start()
    wait_until(lambda: not thread.is_alive(), 120, f"{count or 'all'} results")
    return taken


def _spec(index: int) -> TaskSpec:
    if index % 40 == 7:
        return TaskSpec(task=FailTask(message=f"boom {index}"), key=str(index))
    return TaskSpec(task=SleepTask(seconds=0.002) if index % 2 else NoopTask(), key=str(index))


def test_a_notebook_attaches_submits_and_takes_each_result_once(cyclone, tmp_path: Path) -> None:
    keys = ClusterKeys.make(tmp_path / "keys")
    endpoint = _start_master(cyclone, tmp_path, keys, {"name": "queue"})
    cyclone("controller", "--config", str(tmp_path / "cyclone.toml"))
    with Client(endpoint, keys=keys.master_dir, timeout=30) as client:
        assert client.submit([_spec(i) for i in range(150)], done=False) == 150
        assert client.submit((_spec(i) for i in range(150, 200)), done=False) == 50
        results = _take(client, 200)
        assert Counter(r.key for r in results) == Counter(str(i) for i in range(200))
        failed = {r.key: r for r in results if not r.ok}
        assert set(failed) == {str(i) for i in range(200) if i % 40 == 7}
        for key, result in failed.items():
            assert result.status in (Status.FAILED, Status.QUARANTINED)
            assert f"boom {key}" in (result.error or "")
        summary = client.summary()
        assert summary["submitted"] == 200
        assert summary["succeeded"] + summary["failed"] + summary["quarantined"] == 200
        # The last word: the run ends once the master has handed out everything, and the
        # client is told so (no result is taken twice).
        assert client.submit([], done=True) == 0
        assert _take(client, None) == []
        assert client.missed == 0


def test_a_key_without_the_admin_role_may_not_submit(cyclone, tmp_path: Path) -> None:
    keys = ClusterKeys.make(tmp_path / "keys")
    endpoint = _start_master(cyclone, tmp_path, keys, {"name": "queue"})
    with Client(endpoint, keys=keys.controller_dir, timeout=30) as client:
        with pytest.raises(CycloneError, match="needs a key with the admin role") as refused:
            client.submit([NoopTask()])
        assert "\n" not in str(refused.value)


def test_a_master_whose_generator_takes_no_tasks_refuses_them(cyclone, tmp_path: Path) -> None:
    keys = ClusterKeys.make(tmp_path / "keys")
    endpoint = _start_master(cyclone, tmp_path, keys, {"name": "benchmark", "options": {"count": 10**9}})
    with (
        Client(endpoint, keys=keys.master_dir, timeout=30) as client,
        pytest.raises(CycloneError, match="does not take tasks: start it with --generator queue"),
    ):
        client.submit([NoopTask()])
