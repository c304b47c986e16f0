"""The reference docs stay in step with the code: every hook and every config key is documented."""

from __future__ import annotations

import json
import re
from pathlib import Path

import attrs
import pluggy
import pytest

from cyclone_core import hookspecs
from cyclone_core.config import _INI_CONTROLLER, _INI_MASTER, Config

DOCS = Path(__file__).parent.parent / "docs"


def _hooks() -> dict[str, tuple[str, ...]]:
    manager = pluggy.PluginManager(hookspecs.PROJECT)
    manager.add_hookspecs(hookspecs)
    return {
        name: caller.spec.argnames
        for name, caller in vars(manager.hook).items()
        if isinstance(caller, pluggy.HookCaller) and caller.spec is not None
    }


HOOKS = _hooks()
HEADING = re.compile(r"^#+ (cyclone_\w+)\((.*)\)\s*$", re.MULTILINE)


def test_hooks_are_found() -> None:
    assert {"cyclone_task_types", "cyclone_generators", "cyclone_sinks", "cyclone_commands"} <= set(HOOKS)


@pytest.mark.parametrize("hook", sorted(HOOKS))
def test_every_hook_is_documented_with_its_arguments(hook: str) -> None:
    documented = dict(HEADING.findall((DOCS / "hooks.md").read_text()))
    assert hook in documented, f"docs/hooks.md has no heading '### {hook}(...)'"
    arguments = tuple(a.strip() for a in documented[hook].split(",") if a.strip())
    assert arguments == HOOKS[hook], f"docs/hooks.md documents {hook}{arguments}, the spec has {HOOKS[hook]}"


def test_no_hook_is_documented_that_does_not_exist() -> None:
    documented = {name for name, _ in HEADING.findall((DOCS / "hooks.md").read_text())}
    assert documented <= set(HOOKS)


def _config_keys() -> dict[str, object]:
    """``table.key`` -> default for every setting, and ``table`` for free-form tables."""
    keys: dict[str, object] = {}
    for table in attrs.fields(Config):
        factory = table.default.factory
        if not attrs.has(factory):
            keys[table.name] = factory()
            continue
        for field in attrs.fields(factory):
            default = field.default.factory() if isinstance(field.default, attrs.Factory) else field.default
            keys[f"{table.name}.{field.name}"] = default
    return keys


CONFIG_KEYS = _config_keys()


@pytest.mark.parametrize("key", sorted(CONFIG_KEYS))
def test_every_config_key_is_documented_with_its_default(key: str) -> None:
    rows = [line for line in (DOCS / "configuration.md").read_text().splitlines() if line.startswith(f"| `{key}` |")]
    assert rows, f"docs/configuration.md has no table row for `{key}`"
    default = json.dumps(CONFIG_KEYS[key])
    assert f"| `{default}` |" in rows[0], f"docs/configuration.md gives `{key}` another default than {default}"


@pytest.mark.parametrize("section_key", sorted({f"{s}.{k}" for s, k in {*_INI_MASTER, *_INI_CONTROLLER}}))
def test_every_2x_ini_key_is_in_the_mapping_table(section_key: str) -> None:
    section, key = section_key.split(".")
    text = (DOCS / "configuration.md").read_text()
    assert re.search(rf"^\| `\[{section}\]` \| [^|]*`{key}`", text, re.MULTILINE), section_key


def test_the_retry_table_in_the_docs_is_the_policy() -> None:
    from cyclone_core.engine.retry import markdown_table  # noqa: PLC0415

    assert markdown_table() in (DOCS / "engine.md").read_text()
