"""Cyclone result sink ``pushgateway``: push the metrics of results to a Prometheus Pushgateway.

Registered under the ``cyclone`` entry-point group.
"""

from __future__ import annotations

from collections.abc import Sequence

from cyclone_core import ResultSink, hookimpl
from cyclone_pushgateway.sink import PushgatewaySink

__all__ = ("PushgatewaySink",)


@hookimpl
def cyclone_sinks() -> Sequence[type[ResultSink]]:
    """The ``pushgateway`` sink."""
    return [PushgatewaySink]
