"""``cyclone keys ...``: a whole enrollment through typer's CliRunner, and the one-line errors and
stdout-only-the-key contract on real ``cyclone`` processes."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from cyclone_core import keys
from cyclone_core.cli import app, load_commands
from cyclone_core.cli.keys_cmds import parse_ttl
from cyclone_core.errors import UsageError

ONLY_BUILTINS = {"CYCLONE_LOAD_PLUGINS": "builtins"}


@pytest.fixture(scope="module")
def runner() -> CliRunner:
    load_commands()
    return CliRunner()


def _keys(runner: CliRunner, *args: str) -> Any:
    done = runner.invoke(app, ["keys", *args], env={"COLUMNS": "250"})
    assert done.exit_code == 0, (done.stdout, done.stderr, done.exception)
    return done


def test_enrollment_from_init_to_token(runner: CliRunner, tmp_path: Path) -> None:
    master_dir, node_dir = tmp_path / "master", tmp_path / "node01"
    master_public = _keys(runner, "init", "--dir", str(master_dir)).stdout.strip()
    assert keys.load_keypair(master_dir / "master.secret").public == master_public
    assert keys.Allowlist.load(master_dir / "allowed.toml").grants == []
    assert (master_dir / "tokens.toml").exists()

    node_public = _keys(runner, "new", "--dir", str(node_dir)).stdout.strip()
    assert keys.load_keypair(node_dir / "controller.secret").public == node_public
    _keys(runner, "pin", str(master_dir / "master.public"), "--dir", str(node_dir))
    assert keys.read_public(str(node_dir / "master.public")) == master_public

    _keys(runner, "allow", str(node_dir / "controller.public"), "--ids", "node01-*", "--dir", str(master_dir))
    admin_public = keys.generate().public
    _keys(runner, "allow", admin_public, "--name", "ops", "--admin", "--dir", str(master_dir))
    group_public = keys.generate().public
    _keys(runner, "allow", group_public, "--group", "--name", "site", "--dir", str(master_dir))

    listed = json.loads(_keys(runner, "list", "--json", "--dir", str(master_dir)).stdout)
    assert listed == [
        {"name": "node01", "key": node_public, "ids": "node01-*", "admin": False, "group": False},
        {"name": "ops", "key": admin_public, "ids": "*", "admin": True, "group": False},
        {"name": "site", "key": group_public, "ids": "*", "admin": False, "group": True},
    ]
    table = _keys(runner, "list", "--dir", str(master_dir)).stdout
    for row in listed:
        assert row["name"] in table
        assert row["key"] in table  # shown as it is: a key's '[' is not rich markup

    assert "revoked 'node01'" in _keys(runner, "revoke", "node01", "--dir", str(master_dir)).stderr
    allowlist = keys.Allowlist.load(master_dir / "allowed.toml")
    assert allowlist.lookup(node_public) is None
    assert [grant.name for grant in allowlist.grants] == ["ops", "site"]

    token = _keys(runner, "token", "--ttl", "10m", "--ids", "node02-*", "--dir", str(master_dir)).stdout.strip()
    pinned, secret = keys.parse_token(token)
    assert pinned == master_public
    assert keys.redeem_token(master_dir, secret, now=0.0) == keys.TokenGrant(ids="node02-*", admin=False)
    assert keys.redeem_token(master_dir, secret, now=0.0) is None


def test_default_key_dir_comes_from_cyclone_keys(runner: CliRunner, tmp_path: Path) -> None:
    done = runner.invoke(app, ["keys", "new"], env={"CYCLONE_KEYS": str(tmp_path / "k")})
    assert done.exit_code == 0, done.stderr
    assert keys.load_keypair(tmp_path / "k" / "controller.secret").public == done.stdout.strip()


def test_init_force_keeps_the_allowlist_and_voids_the_tokens(runner: CliRunner, tmp_path: Path) -> None:
    master_dir = tmp_path / "master"
    first = _keys(runner, "init", "--dir", str(master_dir)).stdout.strip()
    _keys(runner, "allow", keys.generate().public, "--name", "n1", "--dir", str(master_dir))
    token = _keys(runner, "token", "--dir", str(master_dir)).stdout.strip()

    refused = runner.invoke(app, ["keys", "init", "--dir", str(master_dir)])
    assert refused.exit_code != 0
    assert keys.load_keypair(master_dir / "master.secret").public == first

    second = _keys(runner, "init", "--force", "--dir", str(master_dir)).stdout.strip()
    assert second != first
    assert [grant.name for grant in keys.Allowlist.load(master_dir / "allowed.toml").grants] == ["n1"]
    assert keys.redeem_token(master_dir, keys.parse_token(token)[1], now=0.0) is None


@pytest.mark.parametrize(
    ("text", "seconds"), [("90s", 90.0), ("10m", 600.0), ("2h", 7200.0), ("1d", 86400.0), ("45", 45.0), ("1.5m", 90.0)]
)
def test_parse_ttl(text: str, seconds: float) -> None:
    assert parse_ttl(text) == seconds


@pytest.mark.parametrize("text", ["", "10x", "-5m", "0", "8d", "1w", "m"])
def test_parse_ttl_refuses(text: str) -> None:
    with pytest.raises(UsageError, match="--ttl"):
        parse_ttl(text)


# -- real processes ----------------------------------------------------------------------


def test_keys_new_prints_only_the_key_on_stdout(run_cyclone: Any, tmp_path: Path) -> None:
    done = run_cyclone("keys", "new", env={**ONLY_BUILTINS, "CYCLONE_KEYS": str(tmp_path / "k")})
    assert done.returncode == 0, done.stderr
    public = keys.load_keypair(tmp_path / "k" / "controller.secret").public
    assert done.stdout == public + "\n"
    assert "controller.secret" in done.stderr


@pytest.mark.parametrize(
    ("prepare", "args", "error"),
    [
        (
            None,
            ["keys", "list"],
            "error: no allowlist '{dir}/allowed.toml'; run 'cyclone keys init' (on the master) first",
        ),
        ("init", ["keys", "revoke", "nobody"], "error: no grant named 'nobody' in '{dir}/allowed.toml' (known: none)"),
        ("init", ["keys", "allow", "not-a-key"], "error: 'not-a-key' is neither a public key"),
        ("init", ["keys", "token", "--ttl", "3 weeks"], "error: --ttl '3 weeks' is not a duration"),
        ("init", ["keys", "init"], "error: '{dir}/master.secret' already exists; refusing to overwrite a secret key"),
        ("open", ["keys", "token"], "error: permissions 0644 for '{dir}/master.secret' are too open; chmod 600 it"),
        ("open-dir", ["keys", "new"], "error: permissions 0755 for '{dir}' are too open; chmod 700 it"),
    ],
)
def test_errors_are_one_line_and_exit_2(
    run_cyclone: Any, tmp_path: Path, prepare: str | None, args: list[str], error: str
) -> None:
    key_dir = tmp_path / "keys"
    env = {**ONLY_BUILTINS, "CYCLONE_KEYS": str(key_dir)}
    if prepare is not None:
        assert run_cyclone("keys", "init", env=env).returncode == 0
    if prepare == "open":
        (key_dir / "master.secret").chmod(0o644)
    if prepare == "open-dir":
        key_dir.chmod(0o755)
    done = run_cyclone(*args, env=env)
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.startswith(error.format(dir=key_dir))
    assert done.stderr.count("\n") == 1


def test_init_on_a_fresh_machine_makes_a_private_tree(run_cyclone: Any, tmp_path: Path) -> None:
    env = {**ONLY_BUILTINS, "XDG_CONFIG_HOME": str(tmp_path / "config")}
    done = run_cyclone("keys", "init", env=env)
    assert done.returncode == 0, done.stderr
    key_dir = tmp_path / "config" / "cyclone" / "keys"
    modes = {path.name: stat.S_IMODE(path.stat().st_mode) for path in key_dir.iterdir()}
    assert stat.S_IMODE(key_dir.stat().st_mode) == 0o700
    assert modes == {
        "master.secret": 0o600,
        "master.public": 0o644,
        "allowed.toml": 0o600,
        "tokens.toml": 0o600,
        "keys.lock": 0o600,
    }
    assert done.stdout == (key_dir / "master.public").read_text()
    assert os.stat(key_dir).st_uid == os.geteuid()
