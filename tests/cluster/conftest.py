"""Fixtures of the cluster tests: a virtual cluster of network namespaces (``head`` and
``node1``..``node3``, each node with its own ``sshd``), built once per session, with keys and a
ClusterShell group (helpers live in ``cluster_support``)."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # netns, relay and cluster_support
sys.path.insert(0, str(Path(__file__).parent.parent / "engine"))  # engine_support

from cluster_support import ClusterSetup
from netns import VirtualCluster, missing_requirements

from cyclone_core.testing import unavailable


@pytest.fixture(scope="session")
def vcluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VirtualCluster]:
    """``head`` and ``node1``..``node3`` on 10.77.0.0/24, ``sshd`` on the nodes; torn down at the end."""
    reason = missing_requirements()
    if reason and os.geteuid() != 0:
        pytest.skip(reason)
    if reason:
        unavailable(reason)
    directory = tmp_path_factory.mktemp("vcluster")
    directory.chmod(0o700)
    with VirtualCluster(directory) as cluster:
        yield cluster


@pytest.fixture(scope="session")
def setup(vcluster: VirtualCluster, tmp_path_factory: pytest.TempPathFactory) -> ClusterSetup:
    """The virtual cluster with keys (the controllers' shared key admitted), a ClusterShell
    group ``@nodes`` = ``node[1-3]``, and a run directory."""
    return ClusterSetup.make(vcluster, tmp_path_factory.mktemp("cluster-setup"))
