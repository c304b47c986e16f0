"""Helpers of the cluster tests: the keys, configs and environment to run a real master and real
controllers on the virtual cluster of :mod:`netns`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import attrs
from engine_support import FAST_CONTROLLER, FAST_MASTER, FIXTURE_PLUGIN, ClusterKeys, toml
from netns import VirtualCluster

#: The ``cyclone`` console script of this interpreter: the nodes' login shells need not find it.
CYCLONE = str(Path(sys.executable).with_name("cyclone"))
#: The master's port on the head node (the namespace is private: no other test binds it).
MASTER_PORT = 5678


def cyclone_env(**extra: str) -> dict[str, str]:
    """The environment of the ``cyclone`` commands: no developer's CYCLONE_* settings, the probe
    sink importable."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("CYCLONE_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(FIXTURE_PLUGIN), os.environ.get("PYTHONPATH")]))
    env["COLUMNS"] = "250"
    env.update(extra)
    return env


@attrs.frozen
class Daemon:
    """A process started in a host of the virtual cluster, its output in a file."""

    proc: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@attrs.frozen
class ClusterSetup:
    """Keys, a ClusterShell group file and the settings shared by the cluster tests."""

    cluster: VirtualCluster
    keys: ClusterKeys
    directory: Path
    #: ``[master]`` and ``[controller]`` settings: timeouts short enough for tests by default.
    master_settings: dict[str, Any] = attrs.field(factory=lambda: dict(FAST_MASTER))
    controller_settings: dict[str, Any] = attrs.field(factory=lambda: dict(FAST_CONTROLLER))

    @classmethod
    def make(cls, cluster: VirtualCluster, directory: Path, **settings: dict[str, Any]) -> ClusterSetup:
        """Keys (the controllers' shared key admitted) and a ClusterShell group ``@nodes`` (every
        node) under ``directory``; ``settings``: ``master_settings``, ``controller_settings``."""
        keys = ClusterKeys.make(directory / "keys")
        groups = directory / "clustershell"
        groups.mkdir()
        (groups / "groups.txt").write_text(f"nodes: {','.join(cluster.nodes)}\n")
        (groups / "groups.conf").write_text(
            "[Main]\ndefault: local\n\n[local]\n"
            "map: sed -n 's/^$GROUP:\\(.*\\)/\\1/p' $CFGDIR/groups.txt\n"
            "list: sed -n 's/^\\([0-9A-Za-z_-]*\\):.*/\\1/p' $CFGDIR/groups.txt\n"
        )
        return cls(cluster, keys, directory, **settings)

    @property
    def master_endpoint(self) -> str:
        return f"tcp://{self.cluster.head.address}:{MASTER_PORT}"

    def env(self) -> dict[str, str]:
        """The environment of ``cyclone controllers``: the test ssh config, a run directory, the
        ``cyclone`` script, and ClusterShell's groups (``@nodes``)."""
        return cyclone_env(
            CYCLONE_SSH_CONFIG=str(self.cluster.ssh_config),
            CYCLONE_RUN_DIR=str(self.directory / "run"),
            CYCLONE_REMOTE_COMMAND=CYCLONE,
            CLUSTERSHELL_CFGDIR=str(self.directory / "clustershell"),
        )

    def controller_config(self) -> Path:
        """A controller config: the keys, 2 workers, :attr:`controller_settings`."""
        path = self.directory / "controller.toml"
        tables = {"controller": {"keys": str(self.keys.controller_dir), "workers": 2, **self.controller_settings}}
        path.write_text(toml(tables))
        return path

    def master_config(self, directory: Path, *, count: int, seconds: float) -> tuple[Path, Path]:
        """A master config: ``count`` sleep tasks of ``seconds`` each, results into a probe file."""
        out = directory / "probe.jsonl"
        tables: dict[str, dict[str, Any]] = {
            "master": {"bind": self.master_endpoint, "keys": str(self.keys.master_dir), **self.master_settings},
            "generator": {
                "name": "benchmark",
                "options": {"count": count, "task": "sleep", "args": {"seconds": seconds}},
            },
            "sinks.probe": {"path": str(out), "flush_interval": 0.05, "batch_size": 50},
        }
        path = directory / "master.toml"
        path.write_text(toml(tables))
        return path, out

    def start_master(self, directory: Path, *, count: int, seconds: float) -> tuple[Daemon, Path]:
        """``cyclone master`` on the head node running ``count`` sleep tasks; and its probe file."""
        config, out = self.master_config(directory, count=count, seconds=seconds)
        log = directory / "master.log"
        return Daemon(
            self.cluster.spawn("head", [CYCLONE, "master", "--config", str(config)], log, cyclone_env()), log
        ), out

    def start_controller(self, node: str, directory: Path, *options: str) -> Daemon:
        """``cyclone controller --id NODE`` on ``node`` (:meth:`controller_config`)."""
        argv = [CYCLONE, "controller", "--config", str(self.controller_config()), "--master", self.master_endpoint,
                "--id", node, *options]  # fmt: skip
        log = directory / f"controller-{node}.log"
        return Daemon(self.cluster.spawn(node, argv, log, cyclone_env()), log)

    def status(self) -> dict[str, Any] | None:
        """The master's snapshot (``cyclone status --json`` on the head node), or ``None``."""
        result = self.cluster.run(
            "head", CYCLONE, "status", "--master", self.master_endpoint, "--keys", str(self.keys.master_dir),
            "--json", "--timeout", "2", check=False, env=cyclone_env(),
        )  # fmt: skip
        return json.loads(result.stdout) if result.returncode == 0 else None
