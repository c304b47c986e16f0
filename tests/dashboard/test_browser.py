"""The dashboard in a real headless Chromium, driven over W3C WebDriver (chromedriver, plain JSON
over HTTP): during a live run the page loads without console errors, shows the run's counts,
follows it without reloading, and ends on the number of results the sink stored.

Its screenshot is saved in the test's directory; with ``CYCLONE_DOCS_SCREENSHOT=1`` also as
``docs/images/dashboard.png`` (the picture in docs/dashboard.md).
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import subprocess
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cyclone_core.builtins.tasks import SleepTask
from cyclone_core.results import read_results
from cyclone_core.testing import free_port, unavailable, wait_until

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
DOCS_IMAGE = Path(__file__).resolve().parents[2] / "docs" / "images" / "dashboard.png"


class Browser:
    """One WebDriver session of chromedriver at ``base``."""

    def __init__(self, base: str, profile: str) -> None:
        self.base = base
        args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={profile}",
            "--window-size=1400,1000",
            "--hide-scrollbars",
            "--lang=en-US",
        ]
        capabilities = {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": CHROMIUM, "args": args},
            "goog:loggingPrefs": {"browser": "ALL"},
        }
        reply = self._call("POST", "/session", {"capabilities": {"alwaysMatch": capabilities}})
        self.session = f"/session/{reply['sessionId']}"

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.base + path, data=data, method=method, headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=60) as reply:
                return json.loads(reply.read())["value"]
        except urllib.error.HTTPError as exc:
            raise AssertionError(f"WebDriver {method} {path}: {exc.code} {exc.read()[:500]!r}") from None

    def open(self, url: str) -> None:
        self._call("POST", f"{self.session}/url", {"url": url})

    def js(self, script: str, *args: Any) -> Any:
        return self._call("POST", f"{self.session}/execute/sync", {"script": script, "args": list(args)})

    def logs(self) -> list[dict[str, Any]]:
        return list(self._call("POST", f"{self.session}/se/log", {"type": "browser"}))

    def screenshot(self) -> bytes:
        """The whole page, beyond the window (Chromium's own command, through chromedriver)."""
        width, height = self.js("return [document.documentElement.scrollWidth, document.documentElement.scrollHeight]")
        params = {
            "format": "png",
            "captureBeyondViewport": True,
            "clip": {"x": 0, "y": 0, "width": width, "height": height, "scale": 1},
        }
        reply = self._call(
            "POST", f"{self.session}/goog/cdp/execute", {"cmd": "Page.captureScreenshot", "params": params}
        )
        return base64.b64decode(reply["data"])

    def close(self) -> None:
        self._call("DELETE", self.session)


@pytest.fixture(scope="session")
def chromedriver() -> Iterator[str]:
    """chromedriver on a free port, started once; its base URL."""
    for program in (CHROMIUM, CHROMEDRIVER):
        if not os.access(program, os.X_OK):
            unavailable(f"{program} is not installed (Debian packages chromium and chromium-driver)")
    port = free_port()
    process = subprocess.Popen(
        [CHROMEDRIVER, f"--port={port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    base = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        try:
            with urllib.request.urlopen(base + "/status", timeout=5) as reply:
                return bool(json.loads(reply.read())["value"]["ready"])
        except OSError:
            return False

    try:
        wait_until(ready, timeout=30, what="chromedriver")
        yield base
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(5)


@pytest.fixture
def browser(chromedriver: str) -> Iterator[Browser]:
    profile = tempfile.mkdtemp(prefix="cyclone-chromium-")
    session = Browser(chromedriver, profile)
    try:
        yield session
    finally:
        session.close()
        shutil.rmtree(profile, ignore_errors=True)


def tile(browser: Browser, name: str) -> int:
    value = browser.js(f"const t = document.getElementById('count-{name}'); return t ? t.dataset.value : null;")
    return int(value) if value not in (None, "") else -1


def test_the_page_follows_a_live_run(browser: Browser, live_run: Any, tmp_path: Path) -> None:
    browser.open(live_run.login)
    wait_until(lambda: browser.js("return window.cycloneDashboard && window.cycloneDashboard.updates"), what="a draw")
    # The token went into the cookie and out of the address; the script cannot read the cookie.
    assert browser.js("return location.href") == f"http://127.0.0.1:{live_run.port}/"
    assert browser.js("return document.cookie") == ""
    wait_until(lambda: tile(browser, "done") == live_run.submitted, what="the first tasks on the page")
    assert tile(browser, "failed") == live_run.summary()["failed"]
    rows = browser.js("return [...document.querySelectorAll('#controllers tbody tr')].map(r => r.textContent)")
    assert sum("node0" in row for row in rows) == 3
    if live_run.lustre:
        cells = wait_until(
            lambda: browser.js("return document.querySelectorAll('#panel-lustre-ost-io td.cell').length")
        )
        assert cells == 21
        assert browser.js("return document.querySelectorAll('#panel-lustre-ost-io td.s-failed').length") == 3

    # Live: more tasks, and a controller that dies, show up without a reload.
    browser.js("window.notReloaded = true;")
    updates = browser.js("return window.cycloneDashboard.updates")
    live_run.start_controller("node03-a")
    wait_until(lambda: len(live_run.summary()["controllers"]) == 4, what="a fourth controller")
    live_run.submit([SleepTask(seconds=0.01) for _ in range(40)])
    wait_until(lambda: tile(browser, "done") == live_run.submitted, what="the new tasks on the page")
    os.killpg(live_run.controllers["node03-a"].pid, signal.SIGKILL)
    live_run.controllers["node03-a"].wait(10)
    wait_until(
        lambda: browser.js("return [...document.querySelectorAll('#controllers tr.lost')].map(r => r.textContent)"),
        timeout=30,
        what="the lost controller in red",
    )
    assert browser.js("return window.notReloaded") is True
    assert browser.js("return window.cycloneDashboard.updates") > updates

    # The end: the page's done count is the number of results the sink stored.
    def caught_up() -> bool:
        stored = len(list(read_results(live_run.results)))
        return stored == live_run.submitted and tile(browser, "done") == stored

    wait_until(caught_up, what="the sink and the page to have every result")

    # A failure opens on its attempts.
    browser.js("document.querySelector('#failures tbody tr[data-task]').click()")
    history = wait_until(lambda: browser.js("const t = document.getElementById('attempts'); return t && t.rows.length"))
    assert history >= 2  # the heading row and the final attempt at least

    severe = [entry for entry in browser.logs() if entry.get("level") == "SEVERE"]
    assert not severe, severe

    picture = browser.screenshot()
    assert picture.startswith(b"\x89PNG\r\n\x1a\n")
    (tmp_path / "dashboard.png").write_bytes(picture)
    if os.environ.get("CYCLONE_DOCS_SCREENSHOT") == "1":
        DOCS_IMAGE.write_bytes(picture)
