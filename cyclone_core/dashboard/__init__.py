"""The master's live web dashboard, and the panels plugins add to it.

Plugins import :class:`Panel` and :class:`Cell` from ``cyclone_core`` to implement the
``cyclone_dashboard_panels`` hook; the server itself is :mod:`cyclone_core.dashboard.server`.
docs/dashboard.md describes the page.
"""

from __future__ import annotations

from cyclone_core.dashboard.panels import CELL_STATUSES, Cell, Panel

__all__ = ("CELL_STATUSES", "Cell", "Panel")
