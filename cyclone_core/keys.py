"""CurveZMQ keys: keypairs on disk, the master's allowlist and single-use join tokens.

A master has a keypair, every controller has its own; a controller pins the master's public
key, and the master admits only the public keys its allowlist grants.  Secret keys live in
files of mode 0600 inside directories of mode 0700, and are refused otherwise, as ssh refuses
a private key that others can read.

Key directories::

    master:      master.secret   (0600)  TOML: public, secret
                 master.public   (0644)  the master's public key, one line
                 allowed.toml    (0600)  the allowlist: one [[grant]] per admitted key
                 tokens.toml     (0600)  join tokens: SHA-256 of the secret, expiry, ids, admin
                 keys.lock               serialises edits of allowed.toml and tokens.toml
    controller:  controller.secret (0600), controller.public (0644)
                 master.public   (0644)  the pinned master key

Keys are Z85 text of 40 characters, as ZeroMQ writes them.  Nothing here opens a socket: the
engine's ZAP handler asks :meth:`Allowlist.lookup` and :func:`redeem_token`.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import fnmatch
import hashlib
import hmac
import json
import os
import re
import secrets
import stat
import struct
import tempfile
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import zmq
from zmq.utils import z85

from cyclone_core.errors import ConfigError

__all__ = (
    "ALLOWLIST_FILE",
    "CONTROLLER_NAME",
    "MASTER_NAME",
    "MAX_TOKEN_TTL",
    "PINNED_MASTER_FILE",
    "TOKENS_FILE",
    "TOKEN_PREFIX",
    "Allowlist",
    "Grant",
    "Keypair",
    "TokenGrant",
    "clear_tokens",
    "default_grant_name",
    "default_key_dir",
    "generate",
    "issue_token",
    "load_keypair",
    "open_tokens",
    "parse_token",
    "pin_master_key",
    "read_public",
    "redeem_token",
    "validate_key",
    "write_keypair",
)

#: Base names of the master's and a controller's keypair files (``<name>.secret``, ``.public``).
MASTER_NAME = "master"
CONTROLLER_NAME = "controller"
#: The master's allowlist, in its key directory.
ALLOWLIST_FILE = "allowed.toml"
#: The master's join tokens, in its key directory.
TOKENS_FILE = "tokens.toml"
#: The master key a controller pinned, in the controller's key directory.
PINNED_MASTER_FILE = f"{MASTER_NAME}.public"
#: Format marker and version at the start of a join token.
TOKEN_PREFIX = "cyclone1-"  # noqa: S105 (a format marker, not a secret)
#: Longest lifetime of a join token, in seconds (7 days).
MAX_TOKEN_TTL = 7 * 86400.0

_LOCK_FILE = "keys.lock"
_KEY_CHARS = 40
_TOKEN_SECRET_BYTES = 16
_RAW_KEY_BYTES = 32
# Used and expired tokens are kept this long, then pruned.
_TOKEN_KEEP = 86400.0
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@+-]{0,63}")
# Controller ids (see the protocol's ID_PATTERN) and fnmatch's wildcards.
_IDS = re.compile(r"[A-Za-z0-9._:@+*?\[\]!-]{1,128}")
_TOKEN_BODY = re.compile(r"[A-Za-z0-9_-]+")
_DIGEST = re.compile(r"[0-9a-f]{64}")


# -- keys ---------------------------------------------------------------------------------


def _z85_decode(text: str) -> bytes | None:
    """The bytes of Z85 ``text``, or ``None`` when it is not Z85."""
    try:
        return z85.decode(text)
    except (ValueError, KeyError, struct.error):  # a bad length, character or 5-character group
        return None


def _z85_encode(raw: bytes) -> str:
    """Z85 text of ``raw`` (its length a multiple of 4)."""
    return z85.encode(raw).decode("ascii")


def validate_key(text: str, what: str = "public key") -> str:
    """``text`` if it is a CurveZMQ key in Z85 (40 characters), else a one-line ConfigError."""
    if len(text) != _KEY_CHARS or _z85_decode(text) is None:
        shown = text if len(text) <= 60 else text[:57] + "..."
        raise ConfigError(f"{what} {shown!r} is not a CurveZMQ key (40 characters of Z85)")
    return text


@attrs.frozen
class Keypair:
    """A CurveZMQ keypair, both keys as Z85 text of 40 characters."""

    public: str
    secret: str = attrs.field(repr=False)


def generate() -> Keypair:
    """A new random keypair."""
    public, secret = zmq.curve_keypair()
    return Keypair(public.decode("ascii"), secret.decode("ascii"))


def default_key_dir() -> Path:
    """Where keys live unless told otherwise: ``$CYCLONE_KEYS``, else
    ``$XDG_CONFIG_HOME/cyclone/keys`` (``~/.config/cyclone/keys``)."""
    if explicit := os.environ.get("CYCLONE_KEYS"):
        return Path(explicit).expanduser()
    config_home = os.environ.get("XDG_CONFIG_HOME", "")
    base = Path(config_home) if os.path.isabs(config_home) else Path.home() / ".config"
    return base / "cyclone" / "keys"


# -- permissions --------------------------------------------------------------------------


def _check_owner(path: Path, st: os.stat_result) -> None:
    if st.st_uid != os.geteuid():
        raise ConfigError(f"'{path}' is owned by uid {st.st_uid}, not by uid {os.geteuid()} running cyclone; chown it")


def _check_dir(directory: Path, too_open: int = 0o077) -> None:
    """Refuse a key directory that others may use (``too_open`` mode bits) or that is not ours."""
    st = directory.stat()
    if not stat.S_ISDIR(st.st_mode):
        raise ConfigError(f"'{directory}' is not a directory")
    _check_owner(directory, st)
    if st.st_mode & too_open:
        fix = "chmod 700" if too_open == 0o077 else "chmod go-w"
        raise ConfigError(f"permissions {stat.S_IMODE(st.st_mode):04o} for '{directory}' are too open; {fix} it")


def _check_file(path: Path, st: os.stat_result, too_open: int) -> None:
    _check_owner(path, st)
    if st.st_mode & too_open:
        fix = "chmod 600" if too_open == 0o077 else "chmod go-w"
        raise ConfigError(f"permissions {stat.S_IMODE(st.st_mode):04o} for '{path}' are too open; {fix} it")


def _read_checked(path: Path, too_open: int, missing: str) -> tuple[str, os.stat_result]:
    """The text of ``path`` and its stat, after checking it and its directory for ``too_open``
    mode bits and ownership; ``missing`` is the error line when it does not exist."""
    if not os.path.lexists(path):
        raise ConfigError(missing)
    _check_dir(Path(os.path.realpath(path)).parent, too_open)
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        raise ConfigError(missing) from None
    except OSError as exc:
        raise ConfigError(f"cannot read '{path}': {exc.strerror}") from None
    with os.fdopen(fd, "rb") as file:
        st = os.fstat(file.fileno())  # of the file read, not of a name that may change meanwhile
        _check_file(path, st, too_open)
        data = file.read()
    try:
        return data.decode("utf-8"), st
    except UnicodeDecodeError:
        raise ConfigError(f"'{path}' is not UTF-8 text") from None


def _make_dir(directory: Path) -> None:
    """Create ``directory`` with mode 0700, or check that an existing one is private."""
    directory.parent.mkdir(parents=True, exist_ok=True)
    try:
        directory.mkdir(mode=0o700)
    except FileExistsError:
        _check_dir(directory)
    else:
        directory.chmod(0o700)  # whatever the umask


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_file(path: Path, text: str, mode: int, *, replace: bool = True) -> None:
    """Write ``path`` atomically: a temporary file in the same directory, created 0600 with
    O_EXCL (mkstemp), written, set to ``mode``, fsynced, then renamed over ``path`` or, when
    ``replace`` is false, linked to it (which fails if ``path`` exists)."""
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            file.write(text)
            file.flush()
            os.fchmod(file.fileno(), mode)
            os.fsync(file.fileno())
        if replace:
            os.replace(temporary, path)
        else:
            try:
                os.link(temporary, path)
            except FileExistsError:
                raise ConfigError(
                    f"'{path}' already exists; refusing to overwrite a secret key (--force replaces it)"
                ) from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
    _fsync_dir(path.parent)


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    """Hold the key directory's lock: edits of allowed.toml and tokens.toml never interleave."""
    try:
        fd = os.open(directory / _LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    except FileNotFoundError:
        raise ConfigError(f"no key directory '{directory}'; run 'cyclone keys init' (on the master) first") from None
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


# -- keypair files ------------------------------------------------------------------------


def write_keypair(directory: Path, name: str, pair: Keypair, *, force: bool = False) -> Path:
    """Write ``<name>.secret`` (TOML, mode 0600) and ``<name>.public`` (0644) into
    ``directory`` (created 0700 if missing); return the secret file's path.

    An existing directory that others may use is refused, and so is an existing secret file
    unless ``force``.
    """
    _make_dir(directory)
    secret_path = directory / f"{name}.secret"
    if not force and os.path.lexists(secret_path):
        raise ConfigError(f"'{secret_path}' already exists; refusing to overwrite a secret key (--force replaces it)")
    text = (
        "# A Cyclone CurveZMQ keypair. Keep it secret: mode 0600, in a directory of mode 0700.\n"
        f"public = {json.dumps(pair.public)}\nsecret = {json.dumps(pair.secret)}\n"
    )
    _write_file(secret_path, text, 0o600, replace=force)
    _write_file(directory / f"{name}.public", pair.public + "\n", 0o644)
    return secret_path


def load_keypair(path: Path) -> Keypair:
    """The keypair in secret file ``path``.

    Refused with a one-line ConfigError: a file that others may read or write, a directory that
    others may use, either not owned by the current user, keys that are not Z85, a public key
    that does not belong to the secret.
    """
    hint = "cyclone keys init" if path.name == f"{MASTER_NAME}.secret" else "cyclone keys new"
    text, _ = _read_checked(path, 0o077, f"no key file '{path}'; create it with '{hint}'")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"'{path}' is not valid TOML: {exc}") from None
    public, secret = data.get("public"), data.get("secret")
    if not isinstance(public, str) or not isinstance(secret, str):
        raise ConfigError(f"'{path}' needs the strings 'public' and 'secret'")
    validate_key(public, f"'{path}': public key")
    if len(secret) != _KEY_CHARS or _z85_decode(secret) is None:
        raise ConfigError(f"'{path}': the secret key is not a CurveZMQ key (40 characters of Z85)")
    if zmq.curve_public(secret.encode("ascii")).decode("ascii") != public:
        raise ConfigError(f"'{path}': the public key does not belong to the secret key; write a new pair")
    return Keypair(public, secret)


def read_public(text_or_path: str) -> str:
    """A public key given as Z85 text, or as the path of a file holding it (a ``.public`` file)."""
    text = text_or_path.strip()
    if len(text) == _KEY_CHARS and _z85_decode(text) is not None:
        return text
    path = Path(text_or_path).expanduser()
    try:
        content = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        shown = text if len(text) <= 60 else text[:57] + "..."
        raise ConfigError(
            f"{shown!r} is neither a public key (40 characters of Z85) nor a readable .public file"
        ) from None
    return validate_key(content, f"'{path}': public key")


def pin_master_key(directory: Path, public: str) -> Path:
    """Store the master's public key as ``master.public`` in a controller's key directory
    (created 0700 if missing); return its path.

    Refused in the master's own directory when the key is not the master's.
    """
    validate_key(public, "master public key")
    _make_dir(directory)
    own = directory / f"{MASTER_NAME}.secret"
    if own.exists() and load_keypair(own).public != public:
        raise ConfigError(f"'{directory}' holds the master's own keypair; pin another master's key in another --dir")
    path = directory / PINNED_MASTER_FILE
    _write_file(path, public + "\n", 0o644)
    return path


# -- the allowlist ------------------------------------------------------------------------


def _check_name(value: str) -> str:
    if not _NAME.fullmatch(value):
        raise ConfigError(
            f"grant name {value!r} is not a name (letters, digits and ._:@+-, starting with a letter or digit)"
        )
    return value


def _check_ids(value: str) -> str:
    if not _IDS.fullmatch(value):
        raise ConfigError(f"ids pattern {value!r} is not a pattern of controller ids (such as 'node01-*' or '*')")
    return value


@attrs.frozen
class Grant:
    """One admitted public key: what it is called and what it may do.

    ``ids`` is an fnmatch pattern of the controller ids the key may register as; ``admin``
    lets it ask for status and send admin requests; ``group`` marks a shared group key used by
    many controllers at once (the master gives it a higher controller limit).
    """

    name: str = attrs.field(validator=lambda _grant, _field, value: _check_name(value))
    key: str = attrs.field(validator=lambda _grant, _field, value: validate_key(value))
    ids: str = attrs.field(default="*", validator=lambda _grant, _field, value: _check_ids(value))
    admin: bool = False
    group: bool = False

    def allows(self, controller_id: str) -> bool:
        """Whether this key may register as controller ``controller_id``."""
        return fnmatch.fnmatchcase(controller_id, self.ids)


def default_grant_name(ids: str, key: str) -> str:
    """A name for a grant given none: its ids pattern without wildcards (``node01-*`` gives
    ``node01``), else ``key-`` and 8 hex digits of the key's SHA-256."""
    name = re.sub(r"[*?\[\]!]", "", ids).strip("-._:@+")
    if _NAME.fullmatch(name):
        return name
    return "key-" + hashlib.sha256(key.encode("ascii")).hexdigest()[:8]


_GRANT_FIELDS = {"name": str, "key": str, "ids": str, "admin": bool, "group": bool}


def _toml_tables(comment: str, table: str, rows: list[dict[str, Any]]) -> str:
    """A TOML document of ``[[table]]`` entries with string, bool and number values.

    Strings are those validated here (ASCII names, patterns, keys, digests), for which a JSON
    string is a TOML basic string.
    """
    lines = [comment]
    for row in rows:
        lines += ["", f"[[{table}]]"]
        for key, value in row.items():
            text = ("true" if value else "false") if isinstance(value, bool) else json.dumps(value)
            lines.append(f"{key} = {text}")
    return "\n".join(lines) + "\n"


def _parse_toml(path: Path, text: str, table: str) -> list[dict[str, Any]]:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"'{path}' is not valid TOML: {exc}") from None
    rows = data.pop(table, [])
    if data or not isinstance(rows, list) or not all(isinstance(row, dict) for row in rows):
        raise ConfigError(f"'{path}' may hold only [[{table}]] tables")
    return rows


def _stamp(st: os.stat_result) -> tuple[int, int, int]:
    return (st.st_ino, st.st_size, st.st_mtime_ns)


class Allowlist:
    """The master's allowlist: ``allowed.toml`` in its key directory, one ``[[grant]]`` table per
    admitted public key (names unique, keys unique)."""

    def __init__(self, path: Path, grants: list[Grant] | None = None) -> None:
        """An allowlist of ``grants`` to be saved at ``path`` (:meth:`load` reads one)."""
        self.path = path
        self._by_key: dict[str, Grant] = {}
        self._stamp: tuple[int, int, int] | None = None
        for grant in grants or ():
            self.add(grant)

    @classmethod
    def load(cls, path: Path) -> Allowlist:
        """Read ``path``: refused if it is missing, malformed, writable by others or not ours."""
        allowlist = cls(path)
        allowlist._by_key, allowlist._stamp = allowlist._read()
        return allowlist

    @classmethod
    @contextlib.contextmanager
    def edit(cls, path: Path) -> Iterator[Allowlist]:
        """Load ``path`` and save it when the block ends without an error, holding the key
        directory's lock meanwhile, so two edits never lose one another's grants."""
        with _locked(path.parent):
            allowlist = cls.load(path)
            yield allowlist
            allowlist.save()

    def _read(self) -> tuple[dict[str, Grant], tuple[int, int, int]]:
        missing = f"no allowlist '{self.path}'; run 'cyclone keys init' (on the master) first"
        text, st = _read_checked(self.path, 0o022, missing)
        by_key: dict[str, Grant] = {}
        names: set[str] = set()
        for number, row in enumerate(_parse_toml(self.path, text, "grant"), 1):
            where = f"'{self.path}', grant {number}"
            for key, value in row.items():
                if key not in _GRANT_FIELDS or not isinstance(value, _GRANT_FIELDS[key]):
                    raise ConfigError(f"{where}: unknown or mistyped field {key!r} = {value!r}")
            try:
                grant = Grant(**row)
            except TypeError:
                raise ConfigError(f"{where}: needs a 'name' and a 'key'") from None
            except ConfigError as exc:
                raise ConfigError(f"{where}: {exc}") from None
            if grant.name in names or grant.key in by_key:
                raise ConfigError(f"{where}: name {grant.name!r} or its key is already granted above")
            names.add(grant.name)
            by_key[grant.key] = grant
        return by_key, _stamp(st)

    @property
    def grants(self) -> list[Grant]:
        """Every grant, in file order."""
        return list(self._by_key.values())

    def lookup(self, key: str) -> Grant | None:
        """The grant of public ``key`` (Z85), or ``None`` when it is not admitted."""
        return self._by_key.get(key)

    def add(self, grant: Grant) -> None:
        """Admit ``grant``; a name or a key already granted is an error."""
        for other in self._by_key.values():
            if other.name == grant.name:
                raise ConfigError(f"a grant named {grant.name!r} exists already; revoke it or choose another --name")
        if (holder := self._by_key.get(grant.key)) is not None:
            raise ConfigError(f"key {grant.key} is granted already, as {holder.name!r}")
        self._by_key[grant.key] = grant

    def remove(self, name: str) -> Grant:
        """Remove and return the grant named ``name``."""
        for key, grant in self._by_key.items():
            if grant.name == name:
                del self._by_key[key]
                return grant
        known = ", ".join(sorted(grant.name for grant in self._by_key.values())) or "none"
        raise ConfigError(f"no grant named {name!r} in '{self.path}' (known: {known})")

    def save(self) -> None:
        """Write the file atomically (temporary file, fsync, rename), mode 0600."""
        rows = [attrs.asdict(grant) for grant in self._by_key.values()]
        comment = (
            "# Public keys the Cyclone master admits (CurveZMQ), with the controller ids each may use.\n"
            "# Edit with 'cyclone keys allow' and 'cyclone keys revoke'; a running master re-reads it."
        )
        _write_file(self.path, _toml_tables(comment, "grant", rows), 0o600)
        self._stamp = _stamp(self.path.stat())

    def reload_if_changed(self) -> bool:
        """Re-read the file if its inode, size or mtime changed since it was last read; return
        whether it did.  Cheap: one stat when nothing changed.

        A file that is missing or fails to load keeps the grants loaded before and raises a
        one-line ConfigError, once per change of the file.
        """
        try:
            stamp: tuple[int, int, int] | None = _stamp(self.path.stat())
        except FileNotFoundError:
            stamp = None
        if stamp == self._stamp:
            return False
        self._stamp = stamp  # a broken file is reported once, not on every call
        try:
            self._by_key, self._stamp = self._read()
        except ConfigError as exc:
            raise ConfigError(f"{exc}; keeping the {len(self._by_key)} grants loaded before") from None
        return True


# -- join tokens --------------------------------------------------------------------------


@attrs.frozen
class TokenGrant:
    """What a redeemed join token grants the key it enrolls."""

    ids: str
    admin: bool

    def grant(self, name: str, key: str) -> Grant:
        """The allowlist entry for ``key``, enrolled with this token under ``name``."""
        return Grant(name=name, key=key, ids=self.ids, admin=self.admin)


def _digest(secret: bytes) -> str:
    return hashlib.sha256(secret).hexdigest()


def _load_tokens(key_dir: Path) -> list[dict[str, Any]]:
    path = key_dir / TOKENS_FILE
    if not os.path.lexists(path):
        return []  # no token issued yet
    text, _ = _read_checked(path, 0o022, f"no token file '{path}'")
    rows = _parse_toml(path, text, "token")
    for number, row in enumerate(rows, 1):
        if not (
            isinstance(row.get("digest"), str)
            and _DIGEST.fullmatch(row["digest"])
            and isinstance(row.get("expires"), int | float)
            and isinstance(row.get("ids"), str)
            and isinstance(row.get("admin"), bool)
            and isinstance(row.get("used", 0.0), int | float)
        ):
            raise ConfigError(
                f"'{path}', token {number}: needs digest (SHA-256, hex), expires, ids and admin (and maybe used)"
            )
    return rows


def _save_tokens(key_dir: Path, rows: list[dict[str, Any]], now: float) -> None:
    def current(row: dict[str, Any]) -> bool:
        return row["expires"] > now - _TOKEN_KEEP and row.get("used", now) > now - _TOKEN_KEEP

    comment = "# Cyclone join tokens: the SHA-256 of each one-time secret, never the secret itself."
    _write_file(key_dir / TOKENS_FILE, _toml_tables(comment, "token", [r for r in rows if current(r)]), 0o600)


def clear_tokens(key_dir: Path) -> None:
    """Forget every join token of the master in ``key_dir`` (a new master key voids them)."""
    with _locked(key_dir):
        _save_tokens(key_dir, [], 0.0)


def issue_token(
    key_dir: Path, master_public: str, *, ttl: float, ids: str = "*", admin: bool = False, now: float
) -> str:
    """A new single-use join token valid for ``ttl`` seconds from ``now`` (epoch seconds).

    ``tokens.toml`` in the master's ``key_dir`` keeps only the SHA-256 of its secret, its
    expiry and what it grants.  The token text is ``cyclone1-`` and the base64url of the
    master's raw public key (for pinning) and a 128-bit random secret: one word to paste.
    """
    validate_key(master_public, "master public key")
    if not 0 < ttl <= MAX_TOKEN_TTL:
        raise ConfigError(f"a token's lifetime must be more than 0 and at most {MAX_TOKEN_TTL:.0f} seconds (7 days)")
    _check_ids(ids)
    secret = secrets.token_bytes(_TOKEN_SECRET_BYTES)
    row = {"digest": _digest(secret), "expires": now + ttl, "ids": ids, "admin": admin}
    with _locked(key_dir):
        _save_tokens(key_dir, [*_load_tokens(key_dir), row], now)
    raw = (_z85_decode(master_public) or b"") + secret
    return TOKEN_PREFIX + base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def parse_token(text: str) -> tuple[str, bytes]:
    """The master's public key (Z85) and the one-time secret carried by join token ``text``."""
    text = text.strip()
    body = text.removeprefix(TOKEN_PREFIX)
    if body == text:
        if re.match(r"cyclone\d+-", text):
            raise ConfigError("a join token of another Cyclone version; ask this master for a new one")
        raise ConfigError(f"not a Cyclone join token (one starts with {TOKEN_PREFIX!r}); ask for a new one")
    size = _RAW_KEY_BYTES + _TOKEN_SECRET_BYTES
    if len(body) != (size * 4 + 2) // 3 or not _TOKEN_BODY.fullmatch(body):
        raise ConfigError("the join token is damaged (cut short or mistyped); copy it again, in one piece")
    raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
    return _z85_encode(raw[:_RAW_KEY_BYTES]), raw[_RAW_KEY_BYTES:]


def open_tokens(key_dir: Path, *, now: float) -> int:
    """How many join tokens of the master in ``key_dir`` can still be redeemed at ``now``."""
    return sum(1 for row in _load_tokens(key_dir) if "used" not in row and row["expires"] > now)


def redeem_token(key_dir: Path, secret: bytes, *, now: float) -> TokenGrant | None:
    """Use up the token whose secret is ``secret``: what it grants, or ``None`` when there is no
    such token, or it expired, or it was used already.  The use is saved before returning."""
    digest = _digest(secret)
    with _locked(key_dir):
        rows = _load_tokens(key_dir)
        found = None
        for row in rows:  # compare every digest, in constant time each
            if hmac.compare_digest(row["digest"], digest):
                found = row
        if found is None or "used" in found or found["expires"] <= now:
            return None
        found["used"] = now
        _save_tokens(key_dir, rows, now)
    return TokenGrant(ids=found["ids"], admin=found["admin"])
