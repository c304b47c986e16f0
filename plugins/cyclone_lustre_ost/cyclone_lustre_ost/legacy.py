"""Reading Cyclone 2.x generator configuration: INI sections and the XML task file.

A 2.x generator INI names, in ``[task] task_file`` and ``task_name``, an XML file whose task
template carries the task arguments (``<property><block_size_bytes>1048576</...>``).  The
generators here translate both into their own options.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Mapping

__all__ = ("legacy_bool", "legacy_task_properties", "translate")

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def legacy_bool(value: str, where: str) -> bool:
    """2.x booleans: ``on``/``off``, ``true``/``false``, ``yes``/``no``, ``1``/``0``."""
    text = value.strip().lower()
    if text not in _TRUE | _FALSE:
        raise ValueError(f"{where}: expected on or off, got {value!r}")
    return text in _TRUE


def legacy_task_properties(task_file: str, task_name: str) -> dict[str, str]:
    """The ``<property>`` children of the task named ``task_name`` in a 2.x XML task file."""
    try:
        # A local configuration file the operator wrote, not untrusted input.
        root = ET.parse(task_file).getroot()  # noqa: S314
    except (OSError, ET.ParseError) as exc:
        raise ValueError(f"[task] task_file {task_file}: {exc}") from None
    for task in root.iter("task"):
        if task.get("name") == task_name or not task_name:
            properties = task.find("property")
            if properties is None:
                return {}
            return {child.tag: (child.text or "").strip() for child in properties}
    raise ValueError(f"[task] task_file {task_file}: no task named {task_name!r}")


def translate(values: Mapping[str, str], names: Mapping[str, str]) -> dict[str, str]:
    """Rename the 2.x keys present in ``values`` (``names``: old -> new); empty values are
    left out so that the new option's default applies."""
    return {new: values[old] for old, new in names.items() if values.get(old, "").strip()}
