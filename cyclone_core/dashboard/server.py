"""The dashboard's HTTP server: a page and its JSON, read-only, behind a token.

It listens on loopback unless told otherwise (``master.http_bind``), on its own port
(``master.http_port``), beside the Prometheus endpoint rather than on it: Prometheus scrapes
without credentials, the page needs them.  A login node's loopback is shared by its users, so
the page opens with a random token, printed once to whoever started the master (Jupyter
style), or read from ``master.http_token_file``.  The first request carries it in the query
string (``/?token=...``); it is checked in constant time, kept in an ``HttpOnly``,
``SameSite=Strict`` cookie, and the browser is sent to the address without it, which can be
shared (whoever opens it needs the token too).  Without a valid token every request is
answered 403 with no data.

Only GET is served (every other method: 405); files come from a fixed table of the package's
``static`` files (no path reaches the file system); query strings are ignored but for the
token, and bounded.  Every answer says ``Content-Security-Policy: default-src 'self'`` and
``X-Content-Type-Options: nosniff`` and sends no CORS headers.  A few threads serve it, one per
connection, at most :data:`MAX_CONNECTIONS` at a time, each given :data:`CONNECTION_TIMEOUT`
seconds.
"""

from __future__ import annotations

import hmac
import http.cookies
import logging
import os
import secrets
import socket
import socketserver
import stat
import threading
from collections.abc import Callable, Sequence
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from importlib.resources import files
from typing import Any
from urllib.parse import parse_qs

from cyclone_core.dashboard.panels import Panel
from cyclone_core.dashboard.state import DashboardState
from cyclone_core.engine.metrics import _Server
from cyclone_core.engine.scheduler import Histogram
from cyclone_core.errors import ConfigError

__all__ = ("CONNECTION_TIMEOUT", "MAX_CONNECTIONS", "Dashboard")

log = logging.getLogger("cyclone.dashboard")

#: Seconds one connection may take, reading the request and writing the answer.
CONNECTION_TIMEOUT = 5.0
#: Connections served at once; more are closed at once.
MAX_CONNECTIONS = 16
#: Characters of a request's target (path and query) at most.
_MAX_TARGET = 2048
#: Fields of a query string read at most.
_MAX_FIELDS = 8
#: Characters a token must have at least (one read from a file).
_MIN_TOKEN = 16
#: Path -> (file in ``static``, content type): every file the server can send.
_STATIC = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/dashboard.js": ("dashboard.js", "text/javascript; charset=utf-8"),
    "/dashboard.css": ("dashboard.css", "text/css; charset=utf-8"),
    "/favicon.svg": ("favicon.svg", "image/svg+xml"),
}
_SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
_FAILURE_PREFIX = "/api/failures/"


def _read_token(path: str) -> str:
    """The token in ``path``: its first line, stripped; one line of error if unusable."""
    try:
        with open(path, encoding="utf-8") as file:
            token = file.readline(4096).strip()
            mode = os.fstat(file.fileno()).st_mode
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigError(f"master.http_token_file {path}: cannot read it ({reason})") from None
    if len(token) < _MIN_TOKEN or not token.isascii() or not token.isprintable() or ";" in token:
        raise ConfigError(
            f"master.http_token_file {path}: the token must be one line of at least {_MIN_TOKEN} printable "
            "ASCII characters, without ';'"
        )
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning("master.http_token_file %s can be read by other users (chmod 600 it)", path)
    return token


class _ThreadingServer(socketserver.ThreadingMixIn, _Server):
    """A thread per connection, at most :data:`MAX_CONNECTIONS` at once."""

    daemon_threads = True

    def __init__(self, addr: str, port: int, handler: type[BaseHTTPRequestHandler]) -> None:
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        super().__init__(addr, port, handler)  # type: ignore[arg-type]

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            self.shutdown_request(request)  # too many at once: closed without an answer
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()


class _Handler(BaseHTTPRequestHandler):
    """GET of the page, its files and its JSON; everything else is refused."""

    server_version = "cyclone-dashboard"
    timeout = CONNECTION_TIMEOUT
    # Set on the subclass each server makes.
    dashboard: Dashboard

    def __getattr__(self, name: str) -> Callable[[], None]:
        # do_POST, do_PUT, do_DELETE, ... and any other method name: 405.
        if name.startswith("do_") and name != "do_GET":
            return self._not_allowed
        raise AttributeError(name)

    def _not_allowed(self) -> None:
        self.send_response(HTTPStatus.METHOD_NOT_ALLOWED)
        self.send_header("Allow", "GET")
        self._body(b"only GET is served here\n", "text/plain; charset=utf-8")

    def version_string(self) -> str:
        return self.server_version  # no Python version for strangers

    def end_headers(self) -> None:
        for name, value in _SECURITY_HEADERS.items():
            self.send_header(name, value)
        super().end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)

    def do_GET(self) -> None:
        """Serve the page's files and JSON to a holder of the token."""
        if len(self.path) > _MAX_TARGET:
            self._plain(HTTPStatus.REQUEST_URI_TOO_LONG, "request target too long")
            return
        path, _, query = self.path.partition("?")
        if query and self._login(path, query):
            return
        if not self.dashboard.valid(self._cookie()):
            self._forbidden()
            return
        self._serve(path)

    def _login(self, path: str, query: str) -> bool:
        """With a token in ``query``: keep it in a cookie and send the browser to the address
        without it (or refuse a wrong one).  Whether the request was answered."""
        dashboard = self.dashboard
        try:
            given = parse_qs(query, max_num_fields=_MAX_FIELDS).get("token")
        except ValueError:  # more fields than that: nobody's page asks so
            self._plain(HTTPStatus.BAD_REQUEST, "too many query fields")
            return True
        if given is None:
            return False  # other fields are ignored
        if not dashboard.valid(given[0]):
            self._forbidden()
            return True
        self.send_response(HTTPStatus.SEE_OTHER)
        self.send_header("Location", path if path in _STATIC else "/")
        self.send_header("Set-Cookie", f"{dashboard.cookie}={dashboard.token}; HttpOnly; SameSite=Strict; Path=/")
        self._body(b"", "text/plain; charset=utf-8")
        return True

    def _serve(self, path: str) -> None:
        """A static file or the JSON at ``path``, or 404."""
        state = self.dashboard.state
        if path in _STATIC:
            name, kind = _STATIC[path]
            self.send_response(HTTPStatus.OK)
            self._body(self.dashboard.files[name], kind)
            return
        body: bytes | None = None
        if path == "/api/state":
            body = state.state_json()
        elif path == "/api/panels":
            body = state.panels_json()
        elif path.startswith(_FAILURE_PREFIX):
            body = state.failure_json(path[len(_FAILURE_PREFIX) :])
        if body is None:
            self._plain(HTTPStatus.NOT_FOUND, "not found")
            return
        self.send_response(HTTPStatus.OK)
        self._body(body, "application/json")

    def _cookie(self) -> str:
        header = self.headers.get("Cookie")
        if not header or len(header) > 8192:
            return ""
        try:
            morsel = http.cookies.SimpleCookie(header).get(self.dashboard.cookie)
        except http.cookies.CookieError:
            return ""
        return morsel.value if morsel is not None else ""

    def _forbidden(self) -> None:
        self._plain(
            HTTPStatus.FORBIDDEN, "forbidden: open the dashboard's address with its token, as the master printed it"
        )

    def _plain(self, status: HTTPStatus, text: str) -> None:
        self.send_response(status)
        self._body(f"{text}\n".encode(), "text/plain; charset=utf-8")

    def _body(self, body: bytes, kind: str) -> None:
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class Dashboard:
    """The master's web dashboard: its data (:attr:`state`) and the server of its page.

    :param port: TCP port; 0 picks a free one (see :attr:`port`).
    :param addr: address to listen on: loopback unless told otherwise.
    :param panels: the plugins' panels.
    :param token_file: a file holding the token; empty: a random token (:attr:`login_url`).
    """

    def __init__(
        self, port: int, addr: str = "127.0.0.1", *, panels: Sequence[Panel] = (), token_file: str = ""
    ) -> None:
        self.token_file = token_file
        #: What opens the page (compared in constant time).
        self.token = _read_token(token_file) if token_file else secrets.token_urlsafe(24)
        self.state = DashboardState(panels)
        static = files("cyclone_core.dashboard").joinpath("static")
        self.files = {name: static.joinpath(name).read_bytes() for name, _ in _STATIC.values()}
        handler = type("_DashboardHandler", (_Handler,), {"dashboard": self})
        try:
            self._server = _ThreadingServer(addr, port, handler)
        except OSError as exc:
            raise ConfigError(f"dashboard {addr}:{port}: cannot listen ({exc.strerror or exc})") from None
        #: The address and the port actually listened on.
        self.address: str = self._server.server_name
        self.port: int = self._server.server_port
        #: The cookie's name: one per port, so two dashboards of one host keep their own.
        self.cookie = f"cyclone_dashboard_{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="cyclone-dashboard", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        """The page's address, without the token (the one to share)."""
        host = self.address
        if host in ("0.0.0.0", "::"):  # noqa: S104  (every interface: the host's name reaches it)
            host = socket.gethostname()
        elif ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}/"

    @property
    def login_url(self) -> str:
        """The address with the token: what opens the page."""
        return f"{self.url}?token={self.token}"

    def announcement(self) -> str:
        """The line that tells the user who started the master how to open the page."""
        if self.token_file:
            return f"dashboard: {self.url}?token=... (the token is in {self.token_file})"
        return f"dashboard: {self.login_url}"

    def valid(self, token: str) -> bool:
        """Whether ``token`` is the dashboard's (in constant time)."""
        return hmac.compare_digest(token.encode("utf-8", "replace"), self.token.encode())

    def publish(self, snapshot: dict[str, Any], latency: Histogram) -> None:
        """The master's status ``snapshot`` and round-trip ``latency``: see :meth:`DashboardState.publish`."""
        self.state.publish(snapshot, latency)

    def close(self) -> None:
        """Stop serving (after the connections being served)."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()
