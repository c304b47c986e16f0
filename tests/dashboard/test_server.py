"""The dashboard's server on a live run (``cyclone master --http-port`` and three controllers):
the token, the cookie, what it refuses, its files and headers, and its JSON."""

from __future__ import annotations

import http.client
import json
import re
import socket
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import attrs
import pytest

from cyclone_core.builtins.generators import BenchmarkGenerator
from cyclone_core.config import ControllerSettings, MasterSettings
from cyclone_core.engine.local import LocalControllers
from cyclone_core.engine.master import Master
from cyclone_core.errors import ConfigError
from cyclone_core.model import Result, ResultSink
from cyclone_core.results import read_results
from cyclone_core.testing import free_port, wait_until


def state(live_run: Any) -> dict[str, Any]:
    status, _, body = live_run.get("/api/state")
    assert status == 200
    return dict(json.loads(body))


@pytest.mark.parametrize("path", ["/", "/api/state", "/dashboard.js", "/api/panels", "/nothing"])
def test_without_the_token_every_path_is_403_with_no_data(live_run: Any, path: str) -> None:
    status, headers, body = live_run.get(path, cookie=False)
    assert status == 403
    assert b"run" not in body
    assert b"{" not in body
    assert headers["content-type"].startswith("text/plain")


def test_a_wrong_token_or_cookie_is_403(live_run: Any) -> None:
    assert live_run.get(f"/?token={live_run.token[:-1]}x", cookie=False)[0] == 403
    assert live_run.get("/?token=", cookie=False)[0] == 403
    forged = attrs.evolve(live_run, token=live_run.token[:-1] + "x")  # the cookie of a wrong token
    assert forged.get("/api/state")[0] == 403


def test_the_token_is_kept_in_a_strict_http_only_cookie_and_dropped_from_the_address(live_run: Any) -> None:
    status, headers, body = live_run.get(f"/?token={live_run.token}", cookie=False)
    assert status == 303
    assert headers["location"] == "/"
    assert body == b""
    cookie = headers["set-cookie"]
    assert cookie.startswith(f"cyclone_dashboard_{live_run.port}={live_run.token};")
    assert "HttpOnly" in cookie
    assert "SameSite=Strict" in cookie


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"])
def test_only_get_is_served(live_run: Any, method: str) -> None:
    status, headers, _ = live_run.get("/api/state", method=method)
    assert status == 405
    assert headers["allow"] == "GET"


def test_the_page_and_its_files_with_their_headers(live_run: Any) -> None:
    status, headers, body = live_run.get("/")
    assert status == 200
    assert headers["content-type"] == "text/html; charset=utf-8"
    assert b'<script src="/dashboard.js"' in body
    assert headers["content-security-policy"].startswith("default-src 'self'")
    assert headers["x-content-type-options"] == "nosniff"
    assert not [name for name in headers if name.startswith("access-control-")]
    assert headers["server"] == "cyclone-dashboard"
    for path, kind in (
        ("/dashboard.js", "text/javascript"),
        ("/dashboard.css", "text/css"),
        ("/favicon.svg", "image/svg+xml"),
    ):
        status, headers, body = live_run.get(path)
        assert (status, headers["content-type"].split(";")[0]) == (200, kind)
        assert len(body) > 100


@pytest.mark.parametrize(
    "path",
    [
        "/../server.py",
        "/static/index.html",
        "/%2e%2e/server.py",
        "//etc/passwd",
        "/dashboard.js/",
        "/api/state/x",
        "/api/failures/../../etc",
        "/api/failures/" + "x" * 300,
        "/" + "a" * 3000,
    ],
)
def test_no_other_path_reaches_a_file(live_run: Any, path: str) -> None:
    status, _, body = live_run.get(path)
    assert status in (404, 414)
    assert b"import" not in body
    assert b"root:" not in body


def test_query_strings_other_than_the_token_are_ignored_and_bounded(live_run: Any) -> None:
    status, _, body = live_run.get("/api/state?x=1&callback=evil")
    assert status == 200
    assert body.startswith(b"{")
    assert live_run.get("/api/state?" + "&".join(f"f{i}=1" for i in range(20)))[0] == 400


def test_silent_connections_do_not_hold_up_the_page(live_run: Any) -> None:
    silent = [socket.create_connection(("127.0.0.1", live_run.port)) for _ in range(4)]
    try:
        started = time.monotonic()
        assert live_run.get("/api/state")[0] == 200
        assert time.monotonic() - started < 15  # not after their 5 s each, one after the other (20 s)
    finally:
        for sock in silent:
            sock.close()


def test_the_state_has_the_runs_counts_controllers_outcomes_and_failures(live_run: Any) -> None:
    summary = live_run.summary()
    s = wait_until(lambda: (s := state(live_run))["counts"]["succeeded"] == summary["succeeded"] and s, what="state")
    assert s["run_id"] == summary["run_id"]
    assert s["done"] == live_run.submitted
    probes = (3 if live_run.lustre else 0) + (4 if live_run.file_create else 0)
    assert s["counts"]["failed"] == summary["failed"] == 4 + probes
    controllers = s["controllers"]
    assert controllers["count"] == 3
    assert controllers["workers"] == 6
    ids = {c["id"] for host in controllers["by_host"] for c in host["controllers"]}
    assert ids == {"node01-a", "node01-b", "node02-a"}
    assert controllers["hosts"] == socket.gethostname()  # all on this host
    assert s["outcomes"]["noop"] == {"ok": 40}
    assert s["outcomes"]["fail"] == {"failed": 4}
    assert s["outcomes"]["crash"] == {"quarantined": 1}
    series = s["series"]
    assert len(series["t"]) == len(series["done"]) == len(series["p99_ms"]) >= 2
    assert series["done"][-1] <= s["done"]
    failures = [f for f in s["failures"] if f["task_type"] == "fail"]
    assert len(failures) == 4
    assert all(f["error"].endswith(f["error"].split()[-1]) and "disk quota exceeded" in f["error"] for f in failures)
    assert [sink["name"] for sink in s["sinks"]] == ["sqlite"]


def test_a_failure_opens_on_its_attempt_history(live_run: Any) -> None:
    failure = next(f for f in state(live_run)["failures"] if f["task_type"] == "fail")
    status, _, body = live_run.get(f"/api/failures/{failure['task_id']}")
    assert status == 200
    detail = json.loads(body)
    assert detail["attempt"] == 2  # max_failed_retries = 1: the first attempt is in the history
    assert [a["attempt"] for a in detail["history"]] == [1]
    assert detail["history"][0]["status"] == "failed"
    assert "disk quota exceeded" in detail["history"][0]["error"]
    assert live_run.get("/api/failures/no-such-task")[0] == 404


def test_the_lustre_probes_fill_their_panel(live_run: Any) -> None:
    if not live_run.lustre:
        pytest.skip("cyclone-lustre-ost is not installed")
    listed = {p["name"] for p in state(live_run)["panels"]}
    assert {"lustre-ost-io", "file-create"} <= listed
    status, _, body = live_run.get("/api/panels")
    assert status == 200
    panel = next(p for p in json.loads(body)["panels"] if p["name"] == "lustre-ost-io")
    cells = {(c["row"], c["column"]): c for c in panel["cells"]}
    assert len(cells) == 21
    assert panel["rows"] == ["OST0000-000f", "OST0010-001f"]
    assert cells["OST0000-000f", "0"]["status"] == "ok"
    assert cells["OST0000-000f", "0"]["value"] > 0
    assert cells["OST0000-000f", "5"]["status"] == "failed"  # write error
    assert cells["OST0000-000f", "9"]["status"] == "failed"  # misplaced
    assert "placed on OST0003" in cells["OST0000-000f", "9"]["detail"]
    assert cells["OST0000-000f", "d"]["status"] == "failed"  # inactive
    assert cells["OST0010-001f", "4"]["status"] == "off"  # drained


def test_the_file_create_checks_fill_their_panel(live_run: Any) -> None:
    if not live_run.file_create:
        pytest.skip("cyclone-file-create is not installed")
    panel = next(p for p in json.loads(live_run.get("/api/panels")[2])["panels"] if p["name"] == "file-create")
    cells = {(c["row"], c["column"]): c for c in panel["cells"]}
    assert len(cells) == 8
    assert panel["rows"] == ["MDT0000 OST0000-000f", "MDT0001 OST0000-000f"]
    assert {cells[row, "0"]["status"] for row in panel["rows"]} == {"ok"}
    assert cells["MDT0001 OST0000-000f", "0"]["value"] > 0
    assert cells["MDT0000 OST0000-000f", "9"]["status"] == "failed"  # misplaced
    assert "placed on OST0003" in cells["MDT0000 OST0000-000f", "9"]["detail"]
    assert cells["MDT0000 OST0000-000f", "d"]["status"] == "failed"  # inactive


def test_the_state_counts_match_the_stored_results(live_run: Any) -> None:
    s = wait_until(
        lambda: (s := state(live_run))["sinks"][0]["backlog"] == 0 and s["sinks"][0]["delivered"] > 0 and s,
        what="the sink to catch up",
    )
    stored = list(read_results(live_run.results))
    assert s["done"] == len(stored) == live_run.submitted


# -- an in-process master: secrets, the token file, a port in use --------------------------------


@attrs.define(kw_only=True)
class PasswordSink(ResultSink):
    """A sink that always fails, its error carrying its password as a careless driver's might."""

    name: ClassVar[str] = "password"
    flush_interval: float = 0.05
    password: str = "hunter2-dashboard"

    def write(self, results: Sequence[Result]) -> None:
        raise ConnectionError(f"login as cyclone with password {self.password} refused")


def test_a_sinks_password_and_the_token_never_reach_the_page(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("a-token-from-a-file-0123456789\n")
    token_file.chmod(0o600)
    settings = MasterSettings(
        bind="tcp://127.0.0.1:*",
        insecure=True,
        http_port=free_port(),
        http_token_file=str(token_file),
        journal=str(tmp_path / "journal.sqlite"),
    )
    master = Master(settings, BenchmarkGenerator(count=5), [PasswordSink()], drain_timeout=5, delivery_timeout=0.5)
    endpoint = master.open()
    dashboard = master.dashboard
    assert dashboard is not None
    assert dashboard.token == "a-token-from-a-file-0123456789"
    assert "a-token-from" not in dashboard.announcement()
    assert str(token_file) in dashboard.announcement()
    thread = threading.Thread(target=master.run, daemon=True)
    controllers = LocalControllers(1, ControllerSettings(master=endpoint, insecure=True, workers=1))

    def get(path: str) -> bytes:
        connection = http.client.HTTPConnection("127.0.0.1", dashboard.port, timeout=10)
        try:
            connection.request("GET", path, headers={"Cookie": f"{dashboard.cookie}={dashboard.token}"})
            return connection.getresponse().read()
        finally:
            connection.close()

    try:
        controllers.start()
        thread.start()
        body = wait_until(lambda: b"refused" in (b := get("/api/state")) and b, what="the sink's error on the page")
        assert b"login as cyclone with password *** refused" in body
        assert b"hunter2" not in body
        assert b"a-token-from" not in body
    finally:
        master.request_stop()
        master.request_stop()
        thread.join(30)
        controllers.stop(timeout=5)
        master.close()


def test_a_short_token_file_and_a_port_in_use_are_one_line(tmp_path: Path, live_run: Any) -> None:
    from cyclone_core.dashboard.server import Dashboard  # noqa: PLC0415

    short = tmp_path / "token"
    short.write_text("short\n")
    with pytest.raises(ConfigError, match=r"^master.http_token_file .*: the token must be one line of at least 16"):
        Dashboard(0, token_file=str(short))
    with pytest.raises(ConfigError, match=r"^master.http_token_file .*: cannot read it"):
        Dashboard(0, token_file=str(tmp_path / "missing"))
    with pytest.raises(ConfigError, match=rf"^dashboard 127.0.0.1:{live_run.port}: cannot listen \("):
        Dashboard(live_run.port)


def test_cyclone_run_serves_it_and_prints_its_address_once(run_cyclone: Any, tmp_path: Path) -> None:
    port = free_port()
    done = run_cyclone("run", "-g", "count=5", "--workers", "1", "--http-port", str(port), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stderr.splitlines() if "dashboard" in line]
    assert len(lines) == 1
    assert re.fullmatch(rf"dashboard: http://127\.0\.0\.1:{port}/\?token=[A-Za-z0-9_-]{{32}}", lines[0])
    assert "token" not in done.stdout
