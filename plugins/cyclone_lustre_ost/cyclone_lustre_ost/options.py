"""attrs converters and validators shared by the option classes; errors name the option."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import attrs

from cyclone_core import ByteSize

__all__ = ("as_size", "between", "one_of", "positive")


def as_size(value: object) -> ByteSize:
    """Converter: ``4096``, ``"64K"``, ``"1M"`` -> :class:`ByteSize`."""
    return ByteSize.parse(value)


def positive(_instance: object, attribute: attrs.Attribute[Any], value: float | None) -> None:
    """Validator: greater than zero (``None`` passes: "not set")."""
    if value is not None and value <= 0:
        raise ValueError(f"{attribute.name} must be positive, got {value}")


def between(low: float, high: float) -> Callable[[object, attrs.Attribute[Any], float], None]:
    """Validator: ``low <= value <= high``."""

    def check(_instance: object, attribute: attrs.Attribute[Any], value: float) -> None:
        if not low <= value <= high:
            raise ValueError(f"{attribute.name} must be between {low:g} and {high:g}, got {value}")

    return check


def one_of(choices: Sequence[str]) -> Callable[[object, attrs.Attribute[str], str], None]:
    """Validator: one of ``choices``; the error lists them."""

    def check(_instance: object, attribute: attrs.Attribute[str], value: str) -> None:
        if value not in choices:
            raise ValueError(f"{attribute.name} must be one of {', '.join(choices)}; got {value!r}")

    return check
