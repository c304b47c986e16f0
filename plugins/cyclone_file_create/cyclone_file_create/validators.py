"""attrs validators for option fields, each failing with one line that names the option."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs

__all__ = ("at_least", "one_of")

Validator = Callable[[Any, "attrs.Attribute[Any]", Any], None]


def at_least(minimum: float) -> Validator:
    """The value must be ``>= minimum``."""

    def check(_: Any, attribute: attrs.Attribute[Any], value: float) -> None:
        if value < minimum:
            raise ValueError(f"{attribute.name}: must be at least {minimum}, got {value!r}")

    return check


def one_of(*choices: str) -> Validator:
    """The value must be one of ``choices``."""

    def check(_: Any, attribute: attrs.Attribute[Any], value: str) -> None:
        if value not in choices:
            raise ValueError(f"{attribute.name}: must be one of {', '.join(choices)}, got {value!r}")

    return check
