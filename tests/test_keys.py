"""Key management (``cyclone_core.keys``) on real files: modes, refusals, the allowlist, tokens.

The checks are on mode bits and ownership, so they hold when the tests run as root, which
bypasses the kernel's permission checks but not these.
"""

from __future__ import annotations

import hashlib
import os
import stat
import time
import tomllib
from pathlib import Path

import pytest
import zmq
import zmq.utils.z85

from cyclone_core import keys
from cyclone_core.errors import ConfigError
from cyclone_core.keys import Allowlist, Grant, Keypair, TokenGrant


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def key_dir(tmp_path: Path) -> Path:
    return tmp_path / "keys"


@pytest.fixture
def master(key_dir: Path) -> Keypair:
    """A master key directory: keypair and an empty allowlist."""
    pair = keys.generate()
    keys.write_keypair(key_dir, keys.MASTER_NAME, pair)
    Allowlist(key_dir / keys.ALLOWLIST_FILE).save()
    return pair


# -- keypairs -----------------------------------------------------------------------------


def test_generate_gives_a_matching_z85_pair() -> None:
    pair = keys.generate()
    assert len(pair.public) == len(pair.secret) == 40
    assert zmq.curve_public(pair.secret.encode()).decode() == pair.public
    assert pair.secret not in repr(pair)


def test_z85_codec_agrees_with_zeromq() -> None:
    for _ in range(50):
        raw = os.urandom(32)
        text = zmq.utils.z85.encode(raw).decode()
        assert keys._z85_encode(raw) == text
        assert keys._z85_decode(text) == raw
    for not_z85 in ("abc", 'a"cde', "#####", "é" * 5):  # length, character, overflow, not ASCII
        assert keys._z85_decode(not_z85) is None


def test_write_keypair_creates_a_private_directory_and_files(key_dir: Path) -> None:
    old = os.umask(0o000)  # the modes must not depend on the umask
    try:
        pair = keys.generate()
        secret = keys.write_keypair(key_dir, "controller", pair)
    finally:
        os.umask(old)
    assert secret == key_dir / "controller.secret"
    assert (_mode(key_dir), _mode(secret), _mode(key_dir / "controller.public")) == (0o700, 0o600, 0o644)
    assert (key_dir / "controller.public").read_text() == pair.public + "\n"
    assert keys.load_keypair(secret) == pair
    assert [p.name for p in key_dir.iterdir() if p.name.endswith(".tmp")] == []


def test_write_keypair_never_overwrites_a_secret_without_force(key_dir: Path) -> None:
    first, second = keys.generate(), keys.generate()
    secret = keys.write_keypair(key_dir, "controller", first)
    with pytest.raises(ConfigError, match="already exists; refusing to overwrite"):
        keys.write_keypair(key_dir, "controller", second)
    assert keys.load_keypair(secret) == first
    assert keys.read_public(str(key_dir / "controller.public")) == first.public

    keys.write_keypair(key_dir, "controller", second, force=True)
    assert keys.load_keypair(secret) == second
    assert _mode(secret) == 0o600
    assert keys.read_public(str(key_dir / "controller.public")) == second.public


def test_write_keypair_does_not_follow_a_planted_symlink(key_dir: Path, tmp_path: Path) -> None:
    key_dir.mkdir(mode=0o700)
    target = tmp_path / "elsewhere"
    (key_dir / "controller.secret").symlink_to(target)
    with pytest.raises(ConfigError, match="already exists"):
        keys.write_keypair(key_dir, "controller", keys.generate())
    assert not target.exists()


@pytest.mark.parametrize("mode", [0o755, 0o777, 0o750, 0o701])
def test_write_keypair_refuses_a_directory_others_may_use(key_dir: Path, mode: int) -> None:
    key_dir.mkdir()
    key_dir.chmod(mode)
    with pytest.raises(ConfigError, match=rf"permissions {mode:04o} for '{key_dir}' are too open; chmod 700 it"):
        keys.write_keypair(key_dir, "controller", keys.generate())
    assert list(key_dir.iterdir()) == []


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o620, 0o602])
def test_load_keypair_refuses_a_secret_others_may_read_or_write(key_dir: Path, mode: int) -> None:
    secret = keys.write_keypair(key_dir, "controller", keys.generate())
    secret.chmod(mode)
    with pytest.raises(ConfigError) as info:
        keys.load_keypair(secret)
    assert str(info.value) == f"permissions {mode:04o} for '{secret}' are too open; chmod 600 it"


@pytest.mark.parametrize("mode", [0o755, 0o777, 0o710])
def test_load_keypair_refuses_a_directory_others_may_use(key_dir: Path, mode: int) -> None:
    secret = keys.write_keypair(key_dir, "controller", keys.generate())
    key_dir.chmod(mode)
    with pytest.raises(ConfigError, match=rf"permissions {mode:04o} for '{key_dir}' are too open; chmod 700 it"):
        keys.load_keypair(secret)


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a file away needs root")
def test_load_keypair_refuses_a_secret_of_another_user(key_dir: Path) -> None:
    secret = keys.write_keypair(key_dir, "controller", keys.generate())
    os.chown(secret, 4321, -1)
    with pytest.raises(ConfigError, match=r"owned by uid 4321, not by uid 0 running cyclone; chown it"):
        keys.load_keypair(secret)
    os.chown(secret, 0, -1)
    os.chown(key_dir, 4321, -1)
    with pytest.raises(ConfigError, match=r"owned by uid 4321"):
        keys.load_keypair(secret)


def test_load_keypair_refuses_a_public_key_of_another_secret(key_dir: Path) -> None:
    secret = keys.write_keypair(key_dir, "controller", keys.generate())
    text = secret.read_text()
    other = keys.generate().public
    secret.write_text(text.replace(keys.load_keypair(secret).public, other))
    with pytest.raises(ConfigError, match="the public key does not belong to the secret key"):
        keys.load_keypair(secret)


@pytest.mark.parametrize(
    ("content", "error"),
    [
        ("public = 'x'\n", "needs the strings 'public' and 'secret'"),
        ("public = [\n", "is not valid TOML"),
        ("public = 'too short'\nsecret = 'also'\n", "is not a CurveZMQ key"),
    ],
)
def test_load_keypair_refuses_a_malformed_file(key_dir: Path, content: str, error: str) -> None:
    secret = keys.write_keypair(key_dir, "controller", keys.generate())
    secret.write_text(content)
    with pytest.raises(ConfigError, match=error):
        keys.load_keypair(secret)


def test_load_keypair_of_a_missing_file_says_how_to_create_it(key_dir: Path) -> None:
    key_dir.mkdir(mode=0o700)
    with pytest.raises(ConfigError, match="create it with 'cyclone keys init'"):
        keys.load_keypair(key_dir / "master.secret")
    with pytest.raises(ConfigError, match="create it with 'cyclone keys new'"):
        keys.load_keypair(key_dir / "controller.secret")


def test_read_public_takes_text_or_a_file(tmp_path: Path) -> None:
    public = keys.generate().public
    (tmp_path / "a.public").write_text(f"  {public}\n")
    assert keys.read_public(public) == public
    assert keys.read_public(str(tmp_path / "a.public")) == public
    (tmp_path / "bad.public").write_text("nonsense\n")
    with pytest.raises(ConfigError, match="public key 'nonsense' is not a CurveZMQ key"):
        keys.read_public(str(tmp_path / "bad.public"))
    with pytest.raises(ConfigError, match=r"is neither a public key .* nor a readable \.public file"):
        keys.read_public("not-a-key")
    with pytest.raises(ConfigError, match="nor a readable"):
        keys.read_public('"' * 40)  # 40 characters, not Z85


def test_pin_master_key_writes_master_public(key_dir: Path, master: Keypair, tmp_path: Path) -> None:
    controller_dir = tmp_path / "controller"
    path = keys.pin_master_key(controller_dir, master.public)
    assert path == controller_dir / "master.public"
    assert keys.read_public(str(path)) == master.public
    assert (_mode(controller_dir), _mode(path)) == (0o700, 0o644)
    keys.pin_master_key(key_dir, master.public)  # the master's own directory: the same key is fine
    with pytest.raises(ConfigError, match="holds the master's own keypair"):
        keys.pin_master_key(key_dir, keys.generate().public)


def test_default_key_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CYCLONE_KEYS", str(tmp_path / "explicit"))
    assert keys.default_key_dir() == tmp_path / "explicit"
    monkeypatch.delenv("CYCLONE_KEYS")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    assert keys.default_key_dir() == tmp_path / "xdg" / "cyclone" / "keys"
    monkeypatch.delenv("XDG_CONFIG_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert keys.default_key_dir() == tmp_path / "home" / ".config" / "cyclone" / "keys"


# -- grants and the allowlist -------------------------------------------------------------


def test_grant_allows_the_ids_of_its_pattern() -> None:
    grant = Grant(name="node01", key=keys.generate().public, ids="node0[1-3]-*")
    assert grant.allows("node01-4242")
    assert grant.allows("node03-1")
    assert not grant.allows("node04-1")
    assert not grant.allows("NODE01-1")
    assert Grant(name="any", key=grant.key).allows("whatever")


@pytest.mark.parametrize(
    ("fields", "error"),
    [
        ({"name": "-x"}, "grant name '-x' is not a name"),
        ({"name": "a b"}, "is not a name"),
        ({"key": "short"}, "public key 'short' is not a CurveZMQ key"),
        ({"ids": "node 1"}, "ids pattern 'node 1' is not a pattern"),
        ({"ids": ""}, "ids pattern '' is not a pattern"),
    ],
)
def test_grant_validates_its_fields(fields: dict[str, str], error: str) -> None:
    with pytest.raises(ConfigError, match=error):
        Grant(**{"name": "ok", "key": keys.generate().public, **fields})


def test_default_grant_name() -> None:
    key = keys.generate().public
    assert keys.default_grant_name("node01-*", key) == "node01"
    assert keys.default_grant_name("node[01-32]-*", key) == "node01-32"
    derived = keys.default_grant_name("*", key)
    assert derived.startswith("key-")
    assert len(derived) == 12
    assert derived == keys.default_grant_name("*", key)


def test_allowlist_add_lookup_remove_save_load(key_dir: Path, master: Keypair) -> None:
    path = key_dir / keys.ALLOWLIST_FILE
    allowlist = Allowlist.load(path)
    assert allowlist.grants == []
    one = Grant(name="node01", key=keys.generate().public, ids="node01-*")
    two = Grant(name="admin", key=keys.generate().public, admin=True, group=True)
    allowlist.add(one)
    allowlist.add(two)
    assert allowlist.lookup(one.key) == one
    assert allowlist.lookup(keys.generate().public) is None
    allowlist.save()
    assert _mode(path) == 0o600
    assert Allowlist.load(path).grants == [one, two]

    assert allowlist.remove("node01") == one
    allowlist.save()
    again = Allowlist.load(path)
    assert again.grants == [two]
    assert again.lookup(one.key) is None


def test_allowlist_refuses_duplicates_and_unknown_names(key_dir: Path, master: Keypair) -> None:
    allowlist = Allowlist.load(key_dir / keys.ALLOWLIST_FILE)
    grant = Grant(name="node01", key=keys.generate().public)
    allowlist.add(grant)
    with pytest.raises(ConfigError, match="a grant named 'node01' exists already"):
        allowlist.add(Grant(name="node01", key=keys.generate().public))
    with pytest.raises(ConfigError, match="is granted already, as 'node01'"):
        allowlist.add(Grant(name="node02", key=grant.key))
    with pytest.raises(ConfigError, match=r"no grant named 'node9' in '.*' \(known: node01\)"):
        allowlist.remove("node9")
    assert allowlist.grants == [grant]


def test_allowlist_save_keeps_mode_0600_even_after_a_chmod(key_dir: Path, master: Keypair) -> None:
    path = key_dir / keys.ALLOWLIST_FILE
    path.chmod(0o644)
    allowlist = Allowlist.load(path)  # readable by others is allowed, writable is not
    allowlist.add(Grant(name="a", key=keys.generate().public))
    allowlist.save()
    assert _mode(path) == 0o600
    assert [p.name for p in key_dir.iterdir() if p.name.endswith(".tmp")] == []


def test_allowlist_load_refuses_missing_broken_or_writable_files(key_dir: Path, master: Keypair) -> None:
    path = key_dir / keys.ALLOWLIST_FILE
    with pytest.raises(ConfigError, match="run 'cyclone keys init'"):
        Allowlist.load(key_dir / "other.toml")
    path.chmod(0o620)
    with pytest.raises(ConfigError, match=r"permissions 0620 .* are too open; chmod go-w it"):
        Allowlist.load(path)
    path.chmod(0o600)
    key = keys.generate().public
    cases = {
        "[[grant]]\nname = 'a'\n": "grant 1: needs a 'name' and a 'key'",
        f"[[grant]]\nname = 'a'\nkey = '{key}'\nadmin = 'yes'\n": "grant 1: unknown or mistyped field 'admin'",
        f"[[grant]]\nname = 'a'\nkey = '{key}'\ncolour = 1\n": "unknown or mistyped field 'colour'",
        f"[[grant]]\nname = 'a'\nkey = '{key}'\n[[grant]]\nname = 'a'\nkey = '{keys.generate().public}'\n": (
            "grant 2: name 'a' or its key is already granted above"
        ),
        "[[grant]]\nname = 'a'\nkey = 'short'\n": "grant 1: public key 'short' is not a CurveZMQ key",
        "grants = 1\n": r"may hold only \[\[grant\]\] tables",
        "[[grant\n": "is not valid TOML",
    }
    for content, error in cases.items():
        path.write_text(content)
        with pytest.raises(ConfigError, match=error):
            Allowlist.load(path)


def test_reload_if_changed_sees_a_revocation(key_dir: Path, master: Keypair) -> None:
    path = key_dir / keys.ALLOWLIST_FILE
    grant = Grant(name="node01", key=keys.generate().public)
    with Allowlist.edit(path) as editing:
        editing.add(grant)
    running = Allowlist.load(path)  # what a running master holds
    assert running.reload_if_changed() is False
    assert running.lookup(grant.key) == grant

    with Allowlist.edit(path) as editing:
        editing.remove("node01")
    assert running.reload_if_changed() is True
    assert running.lookup(grant.key) is None
    assert running.reload_if_changed() is False


def test_reload_if_changed_keeps_the_old_list_when_the_file_breaks(key_dir: Path, master: Keypair) -> None:
    path = key_dir / keys.ALLOWLIST_FILE
    grant = Grant(name="node01", key=keys.generate().public)
    with Allowlist.edit(path) as editing:
        editing.add(grant)
    running = Allowlist.load(path)
    path.write_text(path.read_text() + "[[grant\n")  # a broken hand edit, appended in place
    with pytest.raises(ConfigError) as info:
        running.reload_if_changed()
    assert "is not valid TOML" in str(info.value)
    assert "keeping the 1 grants loaded before" in str(info.value)
    assert "\n" not in str(info.value)
    assert running.lookup(grant.key) == grant
    assert running.reload_if_changed() is False  # reported once per change, not every second

    path.unlink()
    with pytest.raises(ConfigError, match="no allowlist"):
        running.reload_if_changed()
    assert running.grants == [grant]

    Allowlist(path).save()  # fixed: the new (empty) list applies
    assert running.reload_if_changed() is True
    assert running.grants == []


def test_allowlist_edit_saves_nothing_when_the_block_fails(key_dir: Path, master: Keypair) -> None:
    path = key_dir / keys.ALLOWLIST_FILE
    before = path.read_text()

    def add_then_fail() -> None:
        with Allowlist.edit(path) as editing:
            editing.add(Grant(name="a", key=keys.generate().public))
            editing.remove("missing")

    with pytest.raises(ConfigError, match="no grant named 'missing'"):
        add_then_fail()
    assert path.read_text() == before


# -- join tokens --------------------------------------------------------------------------


def test_token_carries_the_master_key_and_a_secret(key_dir: Path, master: Keypair) -> None:
    token = keys.issue_token(key_dir, master.public, ttl=600, now=1000.0)
    assert token.startswith("cyclone1-")
    assert token.split() == [token]
    public, secret = keys.parse_token(token)
    assert public == master.public
    assert len(secret) >= 16
    assert secret.hex() not in (key_dir / keys.TOKENS_FILE).read_text()
    assert _mode(key_dir / keys.TOKENS_FILE) == 0o600


def test_token_is_single_use(key_dir: Path, master: Keypair) -> None:
    token = keys.issue_token(key_dir, master.public, ttl=600, ids="node07-*", admin=True, now=1000.0)
    _, secret = keys.parse_token(token)
    assert keys.redeem_token(key_dir, secret, now=1001.0) == TokenGrant(ids="node07-*", admin=True)
    assert keys.redeem_token(key_dir, secret, now=1002.0) is None


def test_tokens_expire(key_dir: Path, master: Keypair) -> None:
    _, secret = keys.parse_token(keys.issue_token(key_dir, master.public, ttl=600, now=1000.0))
    assert keys.redeem_token(key_dir, secret, now=1600.0) is None
    _, fresh = keys.parse_token(keys.issue_token(key_dir, master.public, ttl=600, now=1000.0))
    assert keys.redeem_token(key_dir, fresh, now=1599.0) == TokenGrant(ids="*", admin=False)


def test_unknown_secret_redeems_nothing(key_dir: Path, master: Keypair) -> None:
    assert keys.redeem_token(key_dir, os.urandom(16), now=1000.0) is None  # no tokens.toml yet
    keys.issue_token(key_dir, master.public, ttl=600, now=1000.0)
    assert keys.redeem_token(key_dir, os.urandom(16), now=1000.0) is None


def test_tokens_of_one_directory_are_independent(key_dir: Path, master: Keypair) -> None:
    secrets = [keys.parse_token(keys.issue_token(key_dir, master.public, ttl=60, now=0.0))[1] for _ in range(3)]
    assert keys.redeem_token(key_dir, secrets[1], now=1.0) is not None
    assert keys.redeem_token(key_dir, secrets[0], now=1.0) is not None
    assert keys.redeem_token(key_dir, secrets[2], now=1.0) is not None
    assert [keys.redeem_token(key_dir, s, now=2.0) for s in secrets] == [None, None, None]


def test_used_and_expired_tokens_are_pruned_after_a_day(key_dir: Path, master: Keypair) -> None:
    def issue(ttl: float, now: float) -> str:
        secret = keys.parse_token(keys.issue_token(key_dir, master.public, ttl=ttl, now=now))[1]
        return hashlib.sha256(secret).hexdigest()

    def kept() -> set[str]:
        return {row["digest"] for row in tomllib.loads((key_dir / keys.TOKENS_FILE).read_text())["token"]}

    used = keys.parse_token(keys.issue_token(key_dir, master.public, ttl=7 * 86400, now=0.0))[1]
    expired = issue(60, 0.0)
    assert keys.redeem_token(key_dir, used, now=100.0) is not None
    later = issue(60, 86400.0 + 70)  # a day after the expiry of one, not yet after the use of the other
    assert kept() == {hashlib.sha256(used).hexdigest(), later}
    assert expired not in kept()
    latest = issue(60, 86400.0 + 110)  # a day after the use
    assert kept() == {later, latest}


def test_a_broken_token_file_is_a_one_line_error(key_dir: Path, master: Keypair) -> None:
    keys.issue_token(key_dir, master.public, ttl=60, now=0.0)
    path = key_dir / keys.TOKENS_FILE
    path.write_text(path.read_text().replace('digest = "', 'digest = "\u00e9'))
    with pytest.raises(ConfigError, match=r"token 1: needs digest \(SHA-256, hex\)"):
        keys.redeem_token(key_dir, os.urandom(16), now=1.0)


def test_issue_token_checks_its_arguments(key_dir: Path, master: Keypair) -> None:
    with pytest.raises(ConfigError, match="at most 604800 seconds"):
        keys.issue_token(key_dir, master.public, ttl=8 * 86400, now=0.0)
    with pytest.raises(ConfigError, match="more than 0"):
        keys.issue_token(key_dir, master.public, ttl=0, now=0.0)
    with pytest.raises(ConfigError, match="ids pattern"):
        keys.issue_token(key_dir, master.public, ttl=60, ids="a b", now=0.0)
    with pytest.raises(ConfigError, match="master public key"):
        keys.issue_token(key_dir, "nope", ttl=60, now=0.0)


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("", "not a Cyclone join token"),
        ("hello", "not a Cyclone join token"),
        ("cyclone2-AAAA", "a join token of another Cyclone version"),
        ("cyclone1-", "the join token is damaged"),
        ("cyclone1-" + "A" * 63, "the join token is damaged"),
        ("cyclone1-" + "A" * 65, "the join token is damaged"),
        ("cyclone1-" + "A" * 63 + "=", "the join token is damaged"),
        ("cyclone1-" + "A" * 62 + " A", "the join token is damaged"),
    ],
)
def test_parse_token_refuses_malformed_tokens(text: str, error: str) -> None:
    with pytest.raises(ConfigError, match=error) as info:
        keys.parse_token(text)
    assert "\n" not in str(info.value)


def test_a_token_survives_surrounding_whitespace(key_dir: Path, master: Keypair) -> None:
    token = keys.issue_token(key_dir, master.public, ttl=60, now=time.time())
    assert keys.parse_token(f"  {token}\n")[0] == master.public


def test_token_grant_makes_an_allowlist_entry() -> None:
    key = keys.generate().public
    assert TokenGrant(ids="node01-*", admin=False).grant("node01", key) == Grant(name="node01", key=key, ids="node01-*")
