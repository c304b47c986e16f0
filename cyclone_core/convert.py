"""The one converter between Cyclone's attrs classes and plain data.

Plain data is what TOML, JSON and msgpack carry: dicts, lists, strings, numbers, booleans.
Everything that crosses a process boundary or comes from a user goes through :func:`structure`,
which turns validation errors into one line naming where, which field, and what is wrong.
"""

from __future__ import annotations

import json
import re
from typing import Any, TypeVar

import cattrs

from cyclone_core.errors import ConfigError
from cyclone_core.model import ByteSize

__all__ = ("converter", "parse_scalar", "structure", "unstructure")

T = TypeVar("T")

converter = cattrs.Converter(forbid_extra_keys=True)

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _structure_bool(value: object, _: type) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise ValueError(f"expected true or false, got {value!r}")


def _structure_int(value: object, _: type) -> int:
    # cattrs would accept 1.7 -> 1 and True -> 1; an option value should be a whole number.
    if isinstance(value, bool):
        raise ValueError(f"expected a whole number, got {value!r}")
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().lstrip("+-").isdigit():
        return int(value)
    raise ValueError(f"expected a whole number, got {value!r}")


def _structure_float(value: object, _: type) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    raise ValueError(f"expected a number, got {value!r}")


def _structure_str(value: object, _: type) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)  # "-g name=123" arrives as a number
    raise ValueError(f"expected a string, got {value!r}")


converter.register_structure_hook(bool, _structure_bool)
converter.register_structure_hook(int, _structure_int)
converter.register_structure_hook(float, _structure_float)
converter.register_structure_hook(str, _structure_str)
converter.register_structure_hook(ByteSize, lambda v, _: ByteSize.parse(v))
converter.register_unstructure_hook(ByteSize, int)


def parse_scalar(text: str) -> Any:
    """Interpret a command-line or INI value: JSON if it parses (``10``, ``true``, ``{"a": 1}``),
    else the string itself (``1M``, ``0-11,20``, ``/scratch``)."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def _format_leaf(exc: BaseException, type_: Any) -> str:
    if isinstance(exc, KeyError):
        return "required but missing"
    if isinstance(exc, ValueError | TypeError) and exc.args:
        # attrs validators raise with (message, attribute, ...) args; the message is enough.
        return str(exc.args[0]) if isinstance(exc.args[0], str) else str(exc)
    return cattrs.v.format_exception(exc, type_)


_ATTRS_RULE = re.compile(r"'(?P<name>\w+)' (?P<rule>must be .*?)(?:: (?P<value>.*))?")


def describe_error(exc: Exception) -> str:
    """One line for a conversion error: each failing field as ``path: problem``."""
    if not isinstance(exc, cattrs.BaseValidationError):
        return str(exc)
    lines = []
    for message in cattrs.transform_error(exc, path="", format_exception=_format_leaf):
        text, _, path = message.rpartition(" @ ")
        lines.append(field_problem(path.lstrip("."), text))
    return "; ".join(lines)


def field_problem(path: str, problem: str) -> str:
    """``path: problem``; attrs validators name the field inside their message (``'window'
    must be > 0: 0``), which becomes ``path.window: must be > 0, got 0``."""
    if found := _ATTRS_RULE.fullmatch(problem):
        name = found["name"]
        if path.rpartition(".")[2] != name:
            path = f"{path}.{name}" if path else name
        problem = found["rule"] + (f", got {found['value']}" if found["value"] is not None else "")
    return f"{path}: {problem}" if path else problem


def structure(data: Any, cls: type[T], *, where: str) -> T:
    """Build ``cls`` from plain ``data``; on failure raise :class:`ConfigError` naming ``where``.

    ``where`` says what is being read: ``"sink 'mysql'"``, ``"master.toml [control]"``.
    """
    try:
        return converter.structure(data, cls)
    except (cattrs.BaseValidationError, ValueError, TypeError) as exc:
        raise ConfigError(f"{where}: {describe_error(exc)}") from exc


def unstructure(obj: Any) -> Any:
    """Turn an attrs object into plain data."""
    return converter.unstructure(obj)
