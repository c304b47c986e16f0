"""``cyclone keys ...``: the CurveZMQ keys of the master and the controllers, the master's
allowlist and join tokens.

What a script wants (a public key, a token, the listing) goes to stdout; what a person wants
(which files were written, what to do next) goes to stderr.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Annotated

import attrs
import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from cyclone_core import keys
from cyclone_core.cli import app
from cyclone_core.errors import UsageError

__all__ = ("keys_app", "parse_ttl")

keys_app = typer.Typer(
    help="Manage CurveZMQ keys: the master's keypair and allowlist, controller keypairs, join tokens.",
    no_args_is_help=True,
)
app.add_typer(keys_app, name="keys")

DirOption = Annotated[
    Path | None,
    typer.Option("--dir", help="Key directory [default: $CYCLONE_KEYS, else ~/.config/cyclone/keys]."),
]
IdsOption = Annotated[str, typer.Option("--ids", help="Controller ids the key may use: a pattern such as 'node01-*'.")]
AdminOption = Annotated[bool, typer.Option("--admin", help="May also ask for status and send admin requests.")]
ForceOption = Annotated[bool, typer.Option("--force", help="Replace an existing keypair.")]

_TTL = re.compile(r"(\d+(?:\.\d*)?)([smhd]?)")
_TTL_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_ttl(text: str) -> float:
    """Seconds in ``90s``, ``10m``, ``2h``, ``1d`` or plain seconds; at most 7 days."""
    match = _TTL.fullmatch(text.strip())
    if match is None:
        raise UsageError(f"--ttl {text!r} is not a duration such as 90s, 10m, 2h or 600")
    seconds = float(match[1]) * _TTL_UNITS[match[2]]
    if not 0 < seconds <= keys.MAX_TOKEN_TTL:
        raise UsageError(f"--ttl {text!r} must be more than 0 and at most 7 days")
    return seconds


def _note(message: str) -> None:
    typer.echo(message, err=True)


@keys_app.command("init")
def init(directory: DirOption = None, force: ForceOption = False) -> None:
    """Create the master's keypair, an empty allowlist and an empty token list; print its public key."""
    key_dir = directory or keys.default_key_dir()
    pair = keys.generate()
    secret = keys.write_keypair(key_dir, keys.MASTER_NAME, pair, force=force)
    allowlist = key_dir / keys.ALLOWLIST_FILE
    if not allowlist.exists():  # with --force, the controllers admitted so far stay admitted
        keys.Allowlist(allowlist).save()
    keys.clear_tokens(key_dir)  # tokens carry the master's public key: a new key voids them
    typer.echo(pair.public)
    _note(
        f"master keypair: {secret} (0600), {key_dir / 'master.public'}; allowlist: {allowlist}\n"
        f"next: 'cyclone keys pin {key_dir / 'master.public'}' on each controller, or 'cyclone keys token'"
    )


@keys_app.command("new")
def new(
    directory: DirOption = None,
    name: Annotated[str, typer.Option("--name", help="Base name of the key files.")] = keys.CONTROLLER_NAME,
    force: ForceOption = False,
) -> None:
    """Create a controller keypair and print its public key (only the key, on stdout)."""
    key_dir = directory or keys.default_key_dir()
    pair = keys.generate()
    secret = keys.write_keypair(key_dir, name, pair, force=force)
    typer.echo(pair.public)
    public = secret.with_suffix(".public")
    _note(f"wrote {secret} (0600) and {public}; admit it on the master with 'cyclone keys allow'")


@keys_app.command("allow")
def allow(  # noqa: PLR0917  (typer passes options as parameters)
    public_key: Annotated[str, typer.Argument(help="A public key (Z85 text) or a .public file.")],
    ids: IdsOption = "*",
    name: Annotated[
        str | None, typer.Option("--name", help="Name of the grant [default: from --ids, else from the key].")
    ] = None,
    admin: AdminOption = False,
    group: Annotated[bool, typer.Option("--group", help="A shared group key, used by many controllers.")] = False,
    directory: DirOption = None,
) -> None:
    """Admit a controller's public key to the master's allowlist."""
    key = keys.read_public(public_key)
    grant = keys.Grant(name=name or keys.default_grant_name(ids, key), key=key, ids=ids, admin=admin, group=group)
    path = (directory or keys.default_key_dir()) / keys.ALLOWLIST_FILE
    with keys.Allowlist.edit(path) as allowlist:
        allowlist.add(grant)
    _note(f"allowed {grant.name!r} ({key}) as controller ids {grant.ids!r}")


@keys_app.command("revoke")
def revoke(
    name: Annotated[str, typer.Argument(help="Name of the grant (see 'cyclone keys list').")],
    directory: DirOption = None,
) -> None:
    """Remove a grant: a running master drops its controllers within seconds."""
    path = (directory or keys.default_key_dir()) / keys.ALLOWLIST_FILE
    with keys.Allowlist.edit(path) as allowlist:
        grant = allowlist.remove(name)
    _note(f"revoked {grant.name!r} ({grant.key})")


@keys_app.command("list")
def list_grants(
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON list instead of a table.")] = False,
    directory: DirOption = None,
) -> None:
    """List the keys the master admits."""
    path = (directory or keys.default_key_dir()) / keys.ALLOWLIST_FILE
    rows = [attrs.asdict(grant) for grant in keys.Allowlist.load(path).grants]
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    table = Table()
    headers = ("name", "key", "ids", "admin", "group")
    for header in headers:
        table.add_column(header, overflow="fold")
    for row in rows:
        # Text, not markup: a Z85 key may contain '[' and ']'.
        table.add_row(*(Text(("yes" if row[h] else "no") if isinstance(row[h], bool) else row[h]) for h in headers))
    Console().print(table)


@keys_app.command("token")
def token(
    ttl: Annotated[str, typer.Option("--ttl", help="Lifetime: 90s, 10m, 2h or seconds; at most 7 days.")] = "10m",
    ids: IdsOption = "*",
    admin: AdminOption = False,
    directory: DirOption = None,
) -> None:
    """Print a single-use join token: a new controller enrolls its key with it once."""
    seconds = parse_ttl(ttl)
    key_dir = directory or keys.default_key_dir()
    master = keys.load_keypair(key_dir / f"{keys.MASTER_NAME}.secret")
    now = time.time()
    text = keys.issue_token(key_dir, master.public, ttl=seconds, ids=ids, admin=admin, now=now)
    typer.echo(text)
    expires = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(now + seconds))
    _note(f"single use, valid until {expires}; on the new node: cyclone controller --token TOKEN --master ...")


@keys_app.command("pin")
def pin(
    master_key: Annotated[str, typer.Argument(help="The master's public key (Z85 text) or its master.public file.")],
    directory: DirOption = None,
) -> None:
    """Store the master's public key in a controller's key directory: it talks to no other master."""
    path = keys.pin_master_key(directory or keys.default_key_dir(), keys.read_public(master_key))
    _note(f"pinned the master key in {path}")
