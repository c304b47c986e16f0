"""The ``pushgateway`` result sink: push the metrics of results to a Prometheus Pushgateway.

Every :meth:`PushgatewaySink.write` folds the batch into the sink's state (see
:mod:`cyclone_pushgateway.state`) and pushes the whole state, through ``prometheus_client``
and a registry of the sink's own, to ``<url>/metrics/job/<job>{/<label>/<value>}``.  A push
that fails raises one line; the master offers the batch again later, and since every push
carries the whole state, the next one that succeeds brings the gateway up to date.
"""

from __future__ import annotations

import http.client
import logging
import re
import socket
import urllib.error
import urllib.request
from collections.abc import Sequence
from typing import ClassVar
from urllib.parse import urlsplit

import attrs
from prometheus_client import CollectorRegistry, push_to_gateway, pushadd_to_gateway

from cyclone_core import CycloneError, Result, ResultSink
from cyclone_pushgateway.state import MetricState

__all__ = ("PushgatewaySink",)

log = logging.getLogger("cyclone.sink.pushgateway")

_LABEL = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
# A gateway's answer to a bad push is one line; cap it all the same.
_MAX_REASON = 500


def _url(_: object, attribute: attrs.Attribute[str], value: str) -> None:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"{attribute.name}: expected http://HOST:PORT or https://HOST:PORT, got {value!r}")


def _job(_: object, attribute: attrs.Attribute[str], value: str) -> None:
    if not value:
        raise ValueError(f"{attribute.name}: must not be empty")


def _grouping(_: object, attribute: attrs.Attribute[dict[str, str]], value: dict[str, str]) -> None:
    for name in value:
        if not _LABEL.fullmatch(name) or name.startswith("__") or name == "job":
            raise ValueError(f"{attribute.name}: {name!r} cannot be a grouping label (a label name other than job)")


def _method(_: object, attribute: attrs.Attribute[str], value: str) -> None:
    if value not in ("put", "post"):
        raise ValueError(f"{attribute.name}: expected put or post, got {value!r}")


def _one_line(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _MAX_REASON else text[: _MAX_REASON - 3] + "..."


@attrs.define(kw_only=True)
class PushgatewaySink(ResultSink):
    """Push the metrics of results to a Prometheus Pushgateway, one group per sink.

    The group is ``job`` plus the static ``grouping`` labels.  With ``method = "put"`` each
    push replaces the whole group (series the sink no longer holds disappear); ``"post"``
    replaces only the metric names it pushes.
    """

    name: ClassVar[str] = "pushgateway"

    #: Base URL of the gateway.
    url: str = attrs.field(default="http://127.0.0.1:9091", validator=_url)
    job: str = attrs.field(default="cyclone", validator=_job)
    #: Static labels added to the grouping key, e.g. ``{instance = "node01"}``.
    grouping: dict[str, str] = attrs.field(factory=dict, validator=_grouping)
    #: Seconds between pushes; sets ``flush_interval``.
    interval: float | None = attrs.field(default=None, validator=attrs.validators.optional(attrs.validators.ge(0)))
    #: Seconds each HTTP request may take.
    timeout: float = attrs.field(default=15.0, validator=attrs.validators.gt(0))
    #: ``put`` (replace the group) or ``post`` (replace same-named metrics only).
    method: str = attrs.field(default="put", validator=_method)
    #: Seconds after which a series that was not updated is no longer pushed; 0: never.
    expire: float = attrs.field(default=0.0, validator=attrs.validators.ge(0))
    flush_interval: float = attrs.field(default=15.0, validator=attrs.validators.ge(0))
    batch_size: int = attrs.field(default=10_000, validator=attrs.validators.gt(0))

    _state: MetricState = attrs.field(init=False, repr=False, eq=False)
    _registry: CollectorRegistry = attrs.field(init=False, repr=False, eq=False)

    def __attrs_post_init__(self) -> None:
        if self.interval is not None:
            self.flush_interval = self.interval
        self._state = MetricState(self.expire)
        # A registry of the sink's own: the process's default one would push the master's
        # own process metrics too.
        self._registry = CollectorRegistry(auto_describe=False)
        self._registry.register(self._state)

    @property
    def target(self) -> str:
        """``URL (job J, label value...)``: the gateway and group, as errors name them."""
        group = ", ".join([f"job {self.job}", *(f"{k} {v}" for k, v in sorted(self.grouping.items()))])
        return f"{self.url} ({group})"

    def check(self) -> None:
        """Before the run: the URL's host must resolve, and the gateway's ``/-/ready`` must not
        answer with an HTTP error (a wrong path, or not a gateway there).  A gateway that does
        not answer now may later: logged, and left to the delivery's retries."""
        host = urlsplit(self.url).hostname or ""
        try:
            socket.getaddrinfo(host, None)
        except (OSError, UnicodeError):
            raise CycloneError(f"url {self.url}: cannot resolve the host '{host}'") from None
        ready = self.url.rstrip("/") + "/-/ready"
        try:
            with urllib.request.urlopen(ready, timeout=self.timeout):  # noqa: S310  (http or https: checked)
                pass
        except urllib.error.HTTPError as exc:
            raise CycloneError(
                f"url {self.url}: GET {ready}: HTTP {exc.code} {exc.reason}: not a Pushgateway"
            ) from None
        except (OSError, http.client.HTTPException) as exc:
            reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
            log.warning("pushgateway %s: %s; metrics are pushed once it answers", self.target, _one_line(str(reason)))

    def write(self, results: Sequence[Result]) -> None:
        """Fold ``results`` into the state and push it; raise one line if the push fails."""
        self._state.apply(results)
        self._state.drop_expired()
        push = push_to_gateway if self.method == "put" else pushadd_to_gateway
        try:
            push(self.url, job=self.job, registry=self._registry, grouping_key=self.grouping, timeout=self.timeout)
        except urllib.error.HTTPError as exc:
            raise self._error(f"HTTP {exc.code}: {self._body(exc) or exc.reason}") from exc
        except urllib.error.URLError as exc:
            raise self._error(str(exc.reason)) from exc
        except (OSError, http.client.HTTPException) as exc:
            raise self._error(str(exc) or type(exc).__name__) from exc

    @staticmethod
    def _body(exc: urllib.error.HTTPError) -> str:
        try:
            return exc.read().decode("utf-8", "replace")
        except (OSError, http.client.HTTPException):
            return ""

    def _error(self, reason: str) -> CycloneError:
        return CycloneError(_one_line(f"pushgateway {self.target}: push failed: {reason}"))
