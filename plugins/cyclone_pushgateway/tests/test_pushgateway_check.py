"""The pushgateway sink's check: a URL whose host does not resolve, or that is not a gateway,
stops the run before it starts; a gateway that does not answer is left to the retries."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from cyclone_pushgateway import PushgatewaySink

from cyclone_core import CycloneError
from cyclone_core.testing import free_port


def test_a_url_whose_host_does_not_resolve_stops_cyclone_run_at_once(tmp_path: Path) -> None:
    cyclone = shutil.which("cyclone")
    assert cyclone is not None
    env = {key: value for key, value in os.environ.items() if not key.startswith("CYCLONE_")}
    url = "http://no-such-host.invalid:9091"
    done = subprocess.run(
        [cyclone, "run", "-g", "count=1", "--sink", "pushgateway", "-s", f"pushgateway.url={url}"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr == f"error: sink 'pushgateway': url {url}: cannot resolve the host 'no-such-host.invalid'\n"
    assert done.stdout == ""


def test_a_url_that_is_not_a_gateway_is_found_by_the_check(gateway: Any) -> None:
    with pytest.raises(CycloneError, match=r"/wrong/-/ready: HTTP 404 Not Found: not a Pushgateway$"):
        PushgatewaySink(url=f"{gateway.url}/wrong").check()
    PushgatewaySink(url=gateway.url).check()  # the real one passes


def test_a_gateway_that_does_not_answer_passes_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with caplog.at_level(logging.WARNING, logger="cyclone.sink.pushgateway"):
        PushgatewaySink(url=url).check()
    [message] = [record.getMessage() for record in caplog.records]
    assert message.startswith(f"pushgateway {url} (job cyclone): ")
    assert message.endswith("Connection refused; metrics are pushed once it answers")
