"""``cyclone controller --stay``: one controller process serves run after run."""

from __future__ import annotations

import signal
from collections import Counter
from pathlib import Path

from engine_support import FAST_CONTROLLER, FAST_MASTER, ClusterKeys, read_probe, toml

from cyclone_core.testing import free_port, wait_until


def _config(tmp_path: Path, keys: ClusterKeys, port: int, name: str, count: int) -> tuple[Path, Path]:
    """A run of ``count`` tasks on ``port`` with its own probe file."""
    out = tmp_path / f"{name}.jsonl"
    tables = {
        "master": {"bind": f"tcp://127.0.0.1:{port}", "keys": str(keys.master_dir), **FAST_MASTER},
        "controller": {
            "master": f"tcp://127.0.0.1:{port}",
            "keys": str(keys.controller_dir),
            "workers": 2,
            **FAST_CONTROLLER,
        },
        "generator": {"name": "benchmark", "options": {"count": count, "task": "sleep", "args": {"seconds": 0.002}}},
        "sinks.probe": {"path": str(out), "flush_interval": 0.05, "batch_size": 50},
    }
    path = tmp_path / f"{name}.toml"
    path.write_text(toml(tables))
    return path, out


def _keys(results: list[dict]) -> Counter[str]:
    """How often each task key was delivered, counting each task id once."""
    return Counter(r["key"] for r in {r["task_id"]: r for r in results}.values())


def test_a_controller_that_stays_serves_two_masters_one_after_the_other(cyclone, tmp_path: Path) -> None:
    keys = ClusterKeys.make(tmp_path / "keys")
    port = free_port()
    first, first_out = _config(tmp_path, keys, port, "first", 300)
    second, second_out = _config(tmp_path, keys, port, "second", 200)
    controller = cyclone("controller", "--config", str(first), "--stay")
    master = cyclone("master", "--config", str(first))
    assert master.wait(120) == 0, master.output()
    assert _keys(read_probe(first_out)) == Counter(str(i) for i in range(300))
    wait_until(lambda: "waiting for the next run" in controller.output(), 60, "the controller to wait")
    assert controller.popen.poll() is None, controller.output()
    master = cyclone("master", "--config", str(second))
    assert master.wait(120) == 0, master.output()
    assert _keys(read_probe(second_out)) == Counter(str(i) for i in range(200))
    assert "a new run: master" in controller.output()
    wait_until(lambda: controller.output().count("waiting for the next run") >= 2, 60, "the controller to wait again")
    assert controller.popen.poll() is None, controller.output()
    controller.signal(signal.SIGTERM)
    assert controller.wait(60) == 0, controller.output()
