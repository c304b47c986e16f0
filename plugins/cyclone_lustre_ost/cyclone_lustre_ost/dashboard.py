"""The Grafana dashboard shipped with this plugin, and checks of a dashboard file.

``cyclone-lustre-probes.json`` (package data) shows the per-OST write and read throughput as
heatmaps over time, failing, slow and out-of-service OSTs, the file-create latency per MDT x OST
and how fresh the probes are, from the metrics the ``pushgateway`` sink pushes.  Import it into
Grafana 10.1 or later (it declares ``schemaVersion`` 38) and pick the Prometheus data source.

``python3 -m cyclone_lustre_ost.dashboard`` prints it; ``... --check FILE`` checks a (possibly
edited) copy against the dashboard schema of the version it declares and lists its queries;
the check needs grafana-foundation-sdk, installed with the plugin's ``test`` extra.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import re
import sys
from importlib.resources import files
from typing import Any

__all__ = ("SCHEMA_RELEASES", "SDK_MISSING", "expand", "load_dashboard", "queries", "schema_problems")

#: The dashboard ``schemaVersion`` -> the Grafana release whose schema it is (Grafana 10.1
#: writes 38); the schema models come from grafana-foundation-sdk of that release.
SCHEMA_RELEASES = {38: "10.1"}
#: The one line a check without grafana-foundation-sdk fails with.
SDK_MISSING = "the schema check needs grafana-foundation-sdk: pip install 'cyclone-lustre-ost[test]'"

_VARIABLE = re.compile(r"\$(?:\{(\w+)(?::\w+)?\}|(\w+))")


def load_dashboard() -> dict[str, Any]:
    """The dashboard shipped with the plugin, as JSON data."""
    text = files("cyclone_lustre_ost").joinpath("dashboards/cyclone-lustre-probes.json").read_text()
    return dict(json.loads(text))


def queries(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """``(where, expr)`` for every PromQL query: each panel target (``panel 'Title' A``) and
    each query variable (``variable fs``)."""
    found = []
    for panel in dashboard.get("panels", []):
        for target in panel.get("targets", []):
            found.append((f"panel {panel.get('title', panel.get('id'))!r} {target.get('refId', '')}", target["expr"]))
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable.get("type") == "query":
            query = variable["query"]
            found.append((f"variable {variable['name']}", query if isinstance(query, str) else query["query"]))
    return found


def expand(expr: str, values: dict[str, str]) -> str:
    """Substitute template variables (``$fs``, ``${fs}``, ``$__rate_interval``) as Grafana does;
    raises :class:`KeyError` naming a variable without a value."""

    def value(match: re.Match[str]) -> str:
        name = match[1] or match[2]
        if name not in values:
            raise KeyError(f"no value for the template variable ${name} in {expr!r}")
        return values[name]

    return _VARIABLE.sub(value, expr)


def schema_problems(dashboard: dict[str, Any]) -> list[str]:
    """What in ``dashboard`` the schema of its ``schemaVersion`` does not know or reads
    differently: loaded with grafana-foundation-sdk's models of that Grafana release (panel
    options by panel type) and written back, every field must come back, unchanged, at its
    place.  The models do not check value types.  Empty when it loads cleanly.

    :raises ImportError: grafana-foundation-sdk is not installed (:data:`SDK_MISSING`)."""
    # Only for checks, and only installed with the test extra.
    try:
        from grafana_foundation_sdk.cog.encoder import JSONEncoder  # noqa: PLC0415
        from grafana_foundation_sdk.cog.plugins import register_default_plugins  # noqa: PLC0415
        from grafana_foundation_sdk.models.dashboard import Dashboard  # noqa: PLC0415
    except ImportError:
        raise ImportError(SDK_MISSING) from None

    declared = dashboard.get("schemaVersion")
    release = SCHEMA_RELEASES.get(declared) if isinstance(declared, int) else None
    sdk = importlib.metadata.version("grafana-foundation-sdk").rpartition("!")[2]
    if release is None:
        return [f"schemaVersion {declared!r}: no schema known (known: {sorted(SCHEMA_RELEASES)})"]
    if not sdk.startswith(f"{release}."):
        return [f"schemaVersion {declared} is Grafana {release}, but grafana-foundation-sdk {sdk} is installed"]
    register_default_plugins()
    back = json.loads(json.dumps(Dashboard.from_json(dashboard), cls=JSONEncoder))
    return _differences(dashboard, back, "")


def _differences(original: Any, loaded: Any, path: str) -> list[str]:
    if isinstance(original, dict):
        if not isinstance(loaded, dict):
            return [f"{path or '.'}: not an object in the schema"]
        problems = []
        for key, value in original.items():
            if key not in loaded:
                problems.append(f"{path}.{key}: not in the schema")
            else:
                problems += _differences(value, loaded[key], f"{path}.{key}")
        return problems
    if isinstance(original, list):
        if not isinstance(loaded, list) or len(original) != len(loaded):
            return [f"{path}: not read as a list of {len(original)}"]
        return [
            p for n, (a, b) in enumerate(zip(original, loaded, strict=True)) for p in _differences(a, b, f"{path}[{n}]")
        ]
    return [] if original == loaded else [f"{path}: {original!r} read as {loaded!r}"]


def main(argv: list[str] | None = None) -> int:
    """Print the dashboard, or check a dashboard file (``--check FILE``)."""
    parser = argparse.ArgumentParser(prog="python3 -m cyclone_lustre_ost.dashboard", description=__doc__)
    parser.add_argument("--check", metavar="FILE", help="check FILE against its schemaVersion and list its queries")
    args = parser.parse_args(argv)
    if args.check is None:
        print(json.dumps(load_dashboard(), indent=2))
        return 0
    try:
        with open(args.check) as file:
            dashboard = json.load(file)
    except (OSError, ValueError) as exc:
        print(f"{args.check}: {exc}", file=sys.stderr)
        return 2
    try:
        problems = schema_problems(dashboard)
    except ImportError as exc:
        print(f"{args.check}: {exc}", file=sys.stderr)
        return 2
    for problem in problems:
        print(f"{args.check}: {problem}", file=sys.stderr)
    for where, expr in queries(dashboard):
        print(f"{where}: {expr}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
