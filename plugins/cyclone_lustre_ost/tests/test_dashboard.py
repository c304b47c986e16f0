"""The shipped Grafana dashboard: it loads against the schema it declares, and every query of
every panel returns series from a real Prometheus scraping a real Pushgateway that real runs
of both probes on the stand-ins pushed to."""

from __future__ import annotations

import copy
import importlib.metadata
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from cyclone_lustre_ost.dashboard import SDK_MISSING, expand, load_dashboard, queries, schema_problems

from cyclone_core.testing import unavailable, wait_until

_LABEL_VALUES = re.compile(r"^label_values\((?P<match>.+),\s*(?P<label>\w+)\)$")
#: What Grafana would put in for $__rate_interval with a 1 s scrape interval and a short range.
RATE_INTERVAL = "15s"


def test_dashboard_loads_against_its_schema_version() -> None:
    try:
        importlib.metadata.version("grafana-foundation-sdk")
    except importlib.metadata.PackageNotFoundError:
        unavailable("grafana-foundation-sdk is not installed (pip install -e 'plugins/cyclone_lustre_ost[test]')")
    dashboard = load_dashboard()
    assert dashboard["schemaVersion"] == 38
    assert schema_problems(dashboard) == []
    broken = copy.deepcopy(dashboard)
    broken["panels"][0]["gridPosition"] = broken["panels"][0].pop("gridPos")
    broken["panels"][1]["options"]["yaxis"] = broken["panels"][1]["options"].pop("yAxis")
    broken["templating"]["list"][2]["definition"] = "label_values(fs)"  # newer Grafana only
    assert sorted(schema_problems(broken)) == [
        ".panels[0].gridPosition: not in the schema",
        ".panels[1].options.yaxis: not in the schema",
        ".templating.list[2].definition: not in the schema",
    ]
    assert schema_problems(dashboard | {"schemaVersion": 41}) == ["schemaVersion 41: no schema known (known: [38])"]


def test_the_check_without_grafana_foundation_sdk_is_one_line(tmp_path: Path) -> None:
    copy_ = tmp_path / "dashboard.json"
    copy_.write_text(json.dumps(load_dashboard()))
    # As if it were not installed: importing it fails.
    code = (
        "import sys; sys.modules['grafana_foundation_sdk'] = None; "
        "from cyclone_lustre_ost.dashboard import main; sys.exit(main(sys.argv[1:]))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, "--check", str(copy_)], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 2
    assert done.stderr == f"{copy_}: {SDK_MISSING}\n"


def test_expand_substitutes_grafana_variables() -> None:
    expr = 'rate(x{fs=~"$fs", job="${job}"}[$__rate_interval])'
    assert expand(expr, {"fs": ".*", "job": "cyclone", "__rate_interval": "15s"}) == (
        'rate(x{fs=~".*", job="cyclone"}[15s])'
    )
    with pytest.raises(KeyError, match=r"no value for the template variable \$fs"):
        expand(expr, {})


def _run(tmp_path: Path, name: str, generator: str, options: dict[str, object], gateway: str, local: str) -> None:
    config = tmp_path / f"{name}.toml"
    config.write_text(
        local + f"[generator]\nname = {json.dumps(generator)}\n"
        f"options = {{ {', '.join(f'{k} = {json.dumps(v)}' for k, v in options.items())} }}\n\n"
        f'[sinks.pushgateway]\nurl = "{gateway}"\ninterval = 0.5\ngrouping = {{ instance = "{name}" }}\n'
    )
    command = [
        "cyclone",
        "run",
        "--config",
        str(config),
        "--workers",
        "2",
        "--journal",
        str(tmp_path / f"{name}.sqlite"),
    ]
    proc = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode in (0, 1), proc.stderr  # 1: some probes failed, as arranged


def _series(prometheus, expr: str) -> list[dict]:
    answer = prometheus.get("/api/v1/query", query=expr)
    assert answer["status"] == "success", answer
    return list(answer["data"]["result"])


def _label_values(prometheus, query: str) -> list[str]:
    match = _LABEL_VALUES.match(query)
    assert match, f"not a label_values() query: {query}"
    return list(prometheus.get(f"/api/v1/label/{match['label']}/values", **{"match[]": match["match"]})["data"])


def test_every_panel_returns_series(prometheus, pushgateway, lustre_standin, tmp_path: Path) -> None:
    if shutil.which("cyclone") is None:
        unavailable("the cyclone command is not installed")
    try:
        importlib.metadata.version("cyclone-pushgateway")
    except importlib.metadata.PackageNotFoundError:
        unavailable("cyclone-pushgateway is not installed (pip install -e plugins/cyclone_pushgateway)")
    fs = lustre_standin(osts=[0, 1, 2, 3, 10], inactive=[3], drained=[2], place_on={1: 0}, mdt_count=2)
    fs.tools().mkdir_on_mdt(str(fs.mount / "mdt1"), 0)  # on the wrong MDT: its checks are errors
    probe = {
        "path": str(fs.mount),
        "lfs_bin": fs.lfs_bin,
        "rounds": 1,
        "total_size": "1M",
        "slow_threshold": 1e-9,  # every probe is slow
        "drained": "2",
    }
    _run(tmp_path, "ost-probes", "lustre-ost-io", probe, pushgateway.url, fs.toml())
    checks = {"path": str(fs.mount), "lfs_bin": fs.lfs_bin, "mode": "lustre", "rounds": 1, "timeout_ms": 10000}
    _run(tmp_path, "file-create", "file-create", checks, pushgateway.url, fs.toml())

    dashboard = load_dashboard()
    for values in ({"fs": ".*", "job": "cyclone"}, {"fs": "testfs", "job": "cyclone"}):
        values["__rate_interval"] = RATE_INTERVAL
        for where, query in queries(dashboard):
            if query.startswith("label_values("):
                found = wait_until(lambda q=query: _label_values(prometheus, q), timeout=60, what=f"values of {where}")
                assert "testfs" in found
                continue
            expr = expand(query, values)
            wait_until(lambda e=expr: _series(prometheus, e), timeout=60, what=f"a series for {where}: {expr}")
    # The arranged faults show up where they should.
    failing = {s["metric"]["target"] for s in _series(prometheus, "cyclone_lustre_ost_probe_status == 0")}
    assert failing == {"testfs-OST0003"}
    out_of_service = _series(prometheus, "cyclone_lustre_ost_probe_status >= 2")
    assert [(s["metric"]["target"], s["value"][1]) for s in out_of_service] == [("testfs-OST0002", "2")]
    misplaced = _series(prometheus, "cyclone_lustre_file_creation_check == 0")
    # OST1's objects are placed on OST0; the drained OST2 takes none, so they land elsewhere too.
    assert {(s["metric"]["mdt_index"], s["metric"]["ost_index"]) for s in misplaced} == {("0", "1"), ("0", "2")}
    errors = _series(prometheus, "cyclone_lustre_file_creation_error == 1")
    assert {s["metric"]["mdt_index"] for s in errors} == {"1"}  # mdt1 lives on MDT 0
