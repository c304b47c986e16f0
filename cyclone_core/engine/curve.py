"""CurveZMQ on the client side: the keys a controller or ``cyclone status`` connects with.

The master's ROUTER is a CURVE server.  Every client is a CURVE client that pins the master's
public key, so a socket to any other master completes no handshake, and authenticates with a
keypair of its own, which the master admits or not.  The keys live in a key directory
(:mod:`cyclone_core.keys`).  A controller started with a join token makes what it lacks
first: its keypair and the pinned key; once the master enrolled its key, it records so in the
directory (``controller.enrolled``), and a restart with the same token does not enroll again.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import stat
import tomllib
from pathlib import Path

import attrs
import zmq

from cyclone_core import keys
from cyclone_core.errors import ConfigError
from cyclone_core.settings import ControllerSettings

__all__ = (
    "ENROLLED_FILE",
    "ClientKeys",
    "ControllerKeys",
    "controller_keys",
    "key_dir",
    "private_ipc",
    "status_keys",
)

#: Written in a controller's key directory once its key was enrolled with a join token.
ENROLLED_FILE = f"{keys.CONTROLLER_NAME}.enrolled"


def key_dir(setting: str) -> Path:
    """The key directory a ``keys`` setting names; empty: :func:`cyclone_core.keys.default_key_dir`."""
    return Path(setting).expanduser() if setting else keys.default_key_dir()


@attrs.frozen
class ClientKeys:
    """What a CURVE client socket needs: the master's public key and the client's keypair.

    :param server: the master's public key (Z85).
    :param pair: the client's keypair.
    :param directory: the key directory they come from (named in messages).
    """

    server: str
    pair: keys.Keypair
    directory: Path

    def apply(self, sock: zmq.Socket[bytes]) -> None:
        """Make ``sock`` a CURVE client with these keys (before it connects)."""
        sock.curve_serverkey = self.server.encode("ascii")
        sock.curve_publickey = self.pair.public.encode("ascii")
        sock.curve_secretkey = self.pair.secret.encode("ascii")


def _pinned(directory: Path) -> str:
    """The master key pinned in ``directory``; a one-line error saying what to run if there is none."""
    path = directory / keys.PINNED_MASTER_FILE
    try:
        text = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        raise ConfigError(
            f"no pinned master key in '{directory}': run `cyclone keys pin MASTER_KEY --dir {directory}`, "
            "or start with --token TOKEN"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the pinned master key '{path}': {exc}") from None
    return keys.validate_key(text, f"'{path}': master key")


def _controller_pair(directory: Path) -> keys.Keypair:
    path = directory / f"{keys.CONTROLLER_NAME}.secret"
    if not os.path.lexists(path):
        raise ConfigError(
            f"no controller key in '{directory}': run `cyclone keys new --dir {directory}` and have the master "
            "allow it, or start with --token TOKEN"
        )
    return keys.load_keypair(path)


def status_keys(directory: Path) -> ClientKeys:
    """The keys ``cyclone status`` asks with: on the master's host, the master's own keypair
    (an admin) and its own public key; elsewhere the controller keypair (its grant needs
    ``admin``) and the pinned master key."""
    own = directory / f"{keys.MASTER_NAME}.secret"
    if os.path.lexists(own):
        pair = keys.load_keypair(own)
        return ClientKeys(pair.public, pair, directory)
    pair = _controller_pair(directory)
    return ClientKeys(_pinned(directory), pair, directory)


@attrs.frozen
class ControllerKeys:
    """A controller's keys, and the join token it still has to enroll with.

    :param client: the socket's keys.
    :param enroll: the token's one-time secret (unpadded base64url), while enrollment is due.
    :param token_digest: SHA-256 (hex) of the token's secret, recorded once enrolled.
    """

    client: ClientKeys
    enroll: str | None = None
    token_digest: str = ""

    def record_enrollment(self, name: str, ids: str) -> Path:
        """Record in the key directory that this key was enrolled with the token, as grant
        ``name`` for controller ids ``ids``; returns the file written."""
        path = self.client.directory / ENROLLED_FILE
        lines = [
            "# This controller's key was enrolled with a join token (its SHA-256); a restart with",
            "# the same token does not enroll again.",
            *(f"{field} = {json.dumps(value)}" for field, value in self._record(name, ids).items()),
        ]
        temporary = path.with_name(f".{path.name}.tmp")
        temporary.write_text("\n".join(lines) + "\n", encoding="utf-8")
        temporary.replace(path)
        return path

    def _record(self, name: str, ids: str) -> dict[str, str]:
        return {"token": self.token_digest, "key": self.client.pair.public, "name": name, "ids": ids}


def _enrolled(directory: Path, token_digest: str, public: str) -> bool:
    """Whether ``directory`` records that key ``public`` was enrolled with this token."""
    try:
        record = tomllib.loads((directory / ENROLLED_FILE).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return False
    return record.get("token") == token_digest and record.get("key") == public


def controller_keys(settings: ControllerSettings) -> ControllerKeys:
    """The keys of a controller with ``settings`` (not ``insecure``).

    Without a token: ``controller.secret`` and the pinned ``master.public`` must be in the key
    directory.  With one: the token is parsed, the key directory gets a keypair if it has none
    and the master key from the token pinned (refused if another one is pinned), and
    enrollment is due unless the directory records it was done with this token.  Any problem
    is a one-line :class:`ConfigError`.
    """
    directory = key_dir(settings.keys)
    if not settings.token:
        pair = _controller_pair(directory)  # a secret key others can read is the first thing to say
        return ControllerKeys(ClientKeys(_pinned(directory), pair, directory))
    master_key, secret = keys.parse_token(settings.token)
    pinned = directory / keys.PINNED_MASTER_FILE
    if os.path.lexists(pinned) and _pinned(directory) != master_key:
        raise ConfigError(
            f"'{pinned}' pins another master key than the join token's: the token is for another master; "
            "remove the file if the master's key changed"
        )
    if not os.path.lexists(directory / f"{keys.CONTROLLER_NAME}.secret"):
        keys.write_keypair(directory, keys.CONTROLLER_NAME, keys.generate())
    pair = _controller_pair(directory)
    if not os.path.lexists(pinned):
        keys.pin_master_key(directory, master_key)
    digest = hashlib.sha256(secret).hexdigest()
    enroll = None
    if not _enrolled(directory, digest, pair.public):
        enroll = base64.urlsafe_b64encode(secret).decode("ascii").rstrip("=")
    return ControllerKeys(ClientKeys(master_key, pair, directory), enroll, digest)


def private_ipc(endpoint: str) -> bool:
    """Whether ``endpoint`` is an ``ipc://`` socket in a directory only this user may enter
    (as ``cyclone run`` makes one): plaintext there is not readable by anyone else."""
    if not endpoint.startswith("ipc://"):
        return False
    try:
        st = os.stat(Path(endpoint.removeprefix("ipc://")).parent)
    except OSError:
        return False
    return stat.S_ISDIR(st.st_mode) and st.st_uid == os.geteuid() and not st.st_mode & 0o077
