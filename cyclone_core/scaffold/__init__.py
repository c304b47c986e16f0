"""``cyclone plugin new``: create a working plugin package from the templates beside this file.

Templates are ``*.tmpl`` files filled with :class:`string.Template` (``${module}``); a
``__module__`` part of a template's path becomes the plugin's package name.
"""

from __future__ import annotations

import re
import string
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path

import attrs

from cyclone_core import __version__
from cyclone_core.errors import UsageError

__all__ = ("PluginNames", "create_plugin")

_NAME = re.compile(r"[a-z][a-z0-9]*(-[a-z0-9]+)*")
_TEMPLATE_SUFFIX = ".tmpl"


@attrs.frozen
class PluginNames:
    """The names a plugin called ``disk-probe`` goes by."""

    #: registered name of its task type and generator, and its entry-point name: ``disk-probe``
    name: str
    #: distribution and project directory: ``cyclone-disk-probe``
    distribution: str
    #: Python package: ``cyclone_disk_probe``
    module: str
    #: class-name prefix: ``DiskProbe``
    prefix: str

    @classmethod
    def from_name(cls, name: str) -> PluginNames:
        """Derive every name from ``name`` (a leading ``cyclone-`` is dropped)."""
        name = name.strip().removeprefix("cyclone-")
        if not _NAME.fullmatch(name):
            raise UsageError(
                f"plugin name {name!r}: use lower-case letters, digits and single hyphens, starting with a letter"
            )
        return cls(
            name=name,
            distribution=f"cyclone-{name}",
            module=f"cyclone_{name.replace('-', '_')}",
            prefix="".join(part.capitalize() for part in name.split("-")),
        )


def _core_version() -> str:
    return ".".join(__version__.split(".")[:2])


def _templates(root: Traversable, parts: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], Traversable]]:
    found = []
    for entry in sorted(root.iterdir(), key=lambda e: e.name):
        if entry.is_dir():
            found += _templates(entry, (*parts, entry.name))
        elif entry.name.endswith(_TEMPLATE_SUFFIX):
            found.append(((*parts, entry.name.removesuffix(_TEMPLATE_SUFFIX)), entry))
    return found


def create_plugin(name: str, directory: Path) -> Path:
    """Write a new plugin project ``cyclone-<name>`` under ``directory`` and return its path.

    The project has a pyproject.toml with the ``cyclone`` entry point, a package with one task
    type and one generator, a README, and tests that pass once it is installed.
    """
    names = PluginNames.from_name(name)
    project = directory / names.distribution
    if project.exists():
        raise UsageError(f"{project} already exists: choose another name or --dir")
    values = {**attrs.asdict(names), "core_version": _core_version()}
    for parts, template in _templates(files(__name__) / "templates"):
        target = project.joinpath(*(part.replace("__module__", names.module) for part in parts))
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(string.Template(template.read_text(encoding="utf-8")).substitute(values), encoding="utf-8")
    return project
