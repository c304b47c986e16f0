"""Pytest fixtures for Cyclone plugin authors (loaded automatically through ``pytest11``)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from cyclone_core.plugins import Plugins, get_plugins


@pytest.fixture
def cyclone_plugins() -> Iterator[Plugins]:
    """The process-wide plugin registry; plugins registered on it are removed afterwards."""
    plugins = get_plugins()
    before = {info.name for info in plugins.infos()}
    yield plugins
    for info in plugins.infos():
        if info.name not in before:
            plugins.unregister(info.name)
