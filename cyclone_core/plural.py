"""Counted nouns in messages: ``1 controller``, ``2 controllers``."""

from __future__ import annotations

__all__ = ("plural",)


def plural(count: int, noun: str) -> str:
    """``count`` (with thousands separators) and ``noun``, with an ``s`` unless ``count`` is 1."""
    return f"{count:,} {noun}{'' if count == 1 else 's'}"
