"""Keys, principals, the docs cookie, ownership in the store, and hidden server paths."""

from __future__ import annotations

import hmac
import json
import os
import sqlite3
from pathlib import Path

import pytest

from vidshard.errors import ConfigError
from vidshard.service import auth
from vidshard.service.auth import (
    ANONYMOUS,
    DOCS_SESSION_S,
    KeyRing,
    Principal,
    scoped_idempotency_key,
    upload_owner,
    write_upload_owner,
)
from vidshard.service.redact import PathRedactor, Viewer
from vidshard.service.settings import load_settings
from vidshard.service.store import JobRecord, JobStore

SECRETS = ("alice-secret-1", "bob-secret-22", "ops-secret-333")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch, tmp_path):
    """No VIDSHARD_* from the machine running the tests; cwd in tmp_path."""
    for name in list(os.environ):
        if name.upper().startswith("VIDSHARD_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def ring() -> KeyRing:
    return KeyRing(
        [("alice", SECRETS[0], False), ("bob", SECRETS[1], False), ("ops", SECRETS[2], True)]
    )


# --- identifying keys -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (SECRETS[0], Principal("alice", False)),  # a non-admin key
        (SECRETS[2], Principal("ops", True)),  # an admin key
        (None, None),  # no key sent
        ("", None),  # an empty header
        (SECRETS[0][:-1], None),  # a prefix of a key
        (SECRETS[0] + "x", None),  # a key with more after it
        (SECRETS[0].upper(), None),  # keys are case-sensitive
        ("alice", None),  # a key's name is not its key
        (f" {SECRETS[1]}", None),  # not trimmed here (the header parser trims bearer tokens)
    ],
)
def test_identify(given, expected):
    assert ring().identify(given) == expected


def test_without_keys_everyone_is_the_anonymous_admin():
    empty = KeyRing([])
    assert not empty.enabled
    assert empty.identify(None) is ANONYMOUS and empty.identify("anything") is ANONYMOUS
    assert ANONYMOUS.admin and ANONYMOUS.name is None


def test_every_key_is_compared_whichever_matches(monkeypatch):
    """The time taken does not say which key matched: each call compares all of them."""
    calls: list[int] = []
    real = hmac.compare_digest

    def counting(a, b):
        calls.append(1)
        return real(a, b)

    monkeypatch.setattr(auth.hmac, "compare_digest", counting)
    for given in (SECRETS[0], SECRETS[2], "wrong"):
        calls.clear()
        ring().identify(given)
        assert len(calls) == 3, given


def test_the_legacy_api_key_is_an_admin_named_api_key():
    settings = load_settings(api_key="legacy", api_keys={"alice": "a-key"})
    keys = KeyRing.from_settings(settings)
    assert keys.identify("legacy") == Principal("api_key", True)
    assert keys.identify("a-key") == Principal("alice", False)


@pytest.mark.parametrize(
    ("owner", "principal", "owns"),
    [
        ("alice", Principal("alice", False), True),  # one's own
        ("bob", Principal("alice", False), False),  # another key's
        (None, Principal("alice", False), False),  # made before keys: admins only
        ("bob", Principal("ops", True), True),  # an admin sees all
        (None, Principal("ops", True), True),
        (None, ANONYMOUS, True),  # no keys: everyone is admin
    ],
)
def test_owns(owner, principal, owns):
    assert principal.owns(owner) is owns


# --- the docs cookie ---------------------------------------------------------------------


def test_docs_token_round_trips_and_expires():
    keys = ring()
    token = keys.docs_token(Principal("alice", False), now_s=1000.0)
    assert SECRETS[0] not in token
    assert keys.docs_principal(token, now_s=1000.0) == Principal("alice", False)
    assert keys.docs_principal(token, now_s=1000.0 + DOCS_SESSION_S) is not None
    assert keys.docs_principal(token, now_s=1001.0 + DOCS_SESSION_S) is None  # expired


def forged(token: str) -> list[str]:
    name, expiry, mac = token.split(":")
    return [
        f"ops:{expiry}:{mac}",  # another key's name with alice's MAC
        f"{name}:{int(expiry) + 3600}:{mac}",  # a later expiry
        f"{name}:{expiry}:{'0' * len(mac)}",  # a made-up MAC
        f"{name}:{expiry}:{mac[:-1]}",  # a cut MAC
        f"{name}:{expiry}",  # malformed
        f"{name}:{expiry}:{mac}:x",
        f"{name}:-{expiry}:{mac}",
        f"carol:{expiry}:{mac}",  # no such key
        "",
    ]


def test_forged_docs_tokens_are_refused():
    keys = ring()
    token = keys.docs_token(Principal("alice", False), now_s=1000.0)
    for bad in forged(token):
        assert keys.docs_principal(bad, now_s=1000.0) is None, bad
    assert keys.docs_principal(None) is None


def test_a_docs_token_dies_with_its_key():
    token = ring().docs_token(Principal("alice", False), now_s=1000.0)
    removed = KeyRing([("bob", SECRETS[1], False)])
    changed = KeyRing([("alice", "a-new-secret", False)])
    assert removed.docs_principal(token, now_s=1000.0) is None
    assert changed.docs_principal(token, now_s=1000.0) is None


# --- ownership helpers ---------------------------------------------------------------


def test_idempotency_keys_are_per_key():
    alice, bob = Principal("alice", False), Principal("bob", False)
    assert scoped_idempotency_key(ANONYMOUS, "k1") == "k1"  # as before keys
    assert scoped_idempotency_key(alice, None) is None
    assert scoped_idempotency_key(alice, "k1") == scoped_idempotency_key(alice, "k1")
    assert scoped_idempotency_key(alice, "k1") != scoped_idempotency_key(bob, "k1")
    assert scoped_idempotency_key(alice, "k1") != "k1"
    assert len(scoped_idempotency_key(alice, "x" * 255) or "") <= 255  # fits the column


def test_upload_owner_round_trips(tmp_path):
    write_upload_owner(tmp_path, Principal("alice", False))
    assert upload_owner(tmp_path) == "alice"
    anonymous = tmp_path / "anonymous"
    anonymous.mkdir()
    write_upload_owner(anonymous, ANONYMOUS)
    assert upload_owner(anonymous) is None and not any(anonymous.iterdir())
    assert upload_owner(tmp_path / "missing") is None


# --- settings ------------------------------------------------------------------------


def test_named_keys_from_toml(tmp_path):
    config = tmp_path / "vidshard.toml"
    config.write_text(
        '[serve]\npublic_docs = true\n\n[serve.api_keys]\nbob = "b-1"\n\n'
        '[serve.api_keys.alice]\nkey = "a-1"\n\n[serve.api_keys.ops]\nkey = "o-1"\nadmin = true\n'
    )
    settings = load_settings(config)
    keys = {n: (k.key.get_secret_value(), k.admin) for n, k in settings.api_keys.items()}
    assert keys == {"bob": ("b-1", False), "alice": ("a-1", False), "ops": ("o-1", True)}
    assert settings.public_docs is True


def test_named_keys_from_the_environment(monkeypatch):
    keys = {"alice": {"key": "a-1"}, "ops": {"key": "o-1", "admin": True}, "bob": "b-1"}
    monkeypatch.setenv("VIDSHARD_API_KEYS", json.dumps(keys))
    monkeypatch.setenv("VIDSHARD_PUBLIC_DOCS", "false")
    settings = load_settings()
    assert {n: k.admin for n, k in settings.api_keys.items()} == {
        "alice": False,
        "ops": True,
        "bob": False,
    }
    assert settings.public_docs is False
    assert "o-1" not in repr(settings)


@pytest.mark.parametrize(
    ("keys", "legacy", "expected"),
    [
        ({"bad name": "s3cr3t-a"}, None, "key name 'bad name'"),  # a space
        ({"-dash": "s3cr3t-a"}, None, "starting with a letter or a digit"),
        ({"a" * 65: "s3cr3t-a"}, None, "1 to 64"),
        ({"a:b": "s3cr3t-a"}, None, "key name 'a:b'"),  # ':' would break the docs cookie
        ({"alice": ""}, None, "alice: the key must not be empty"),
        ({"alice": "s3cr3t-a", "bob": "s3cr3t-a"}, None, "bob and alice have the same key"),
        ({"bob": "s3cr3t-a"}, "s3cr3t-a", "bob and api_key have the same key"),
        ({"api_key": "s3cr3t-b"}, "s3cr3t-a", "'api_key' is the name of the api_key setting"),
        ({"alice": {"key": "s3cr3t-a", "admn": True}}, None, "api_keys.alice.admn: Extra"),
        ({"alice": {"admin": True}}, None, "api_keys.alice.key: Field required"),
        ({"alice": {"key": "s3cr3t-a", "admin": "s3cr3t-b"}}, None, "api_keys.alice.admin"),
        ({"alice": ["s3cr3t-a"]}, None, "api_keys.alice: Input should be"),
    ],
)
def test_bad_keys_are_named_never_echoed(keys, legacy, expected):
    with pytest.raises(ConfigError) as refused:
        load_settings(api_keys=keys, api_key=legacy)
    message = str(refused.value)
    assert expected in message
    assert "s3cr3t" not in message
    assert "unknown setting" not in message


def test_a_malformed_keys_variable_is_not_echoed(monkeypatch):
    monkeypatch.setenv("VIDSHARD_API_KEYS", '{"alice": {"key": "s3cr3t-a"')
    with pytest.raises(ConfigError) as refused:
        load_settings()
    assert "api_keys" in str(refused.value) and "s3cr3t" not in str(refused.value)


# --- the store -----------------------------------------------------------------------

# The jobs table as vidshard 0.1.0 made it, before owners (and input identities).
OLD_SCHEMA = """
CREATE TABLE vidshard_jobs (
    seq INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT, id VARCHAR(32) NOT NULL UNIQUE,
    task VARCHAR(128) NOT NULL, state VARCHAR(16) NOT NULL, priority INTEGER NOT NULL,
    params JSON NOT NULL, input_path TEXT NOT NULL, input_kind VARCHAR(16) NOT NULL,
    output_path TEXT, idempotency_key VARCHAR(255) UNIQUE, created_at FLOAT NOT NULL,
    started_at FLOAT, finished_at FLOAT, updated_at FLOAT NOT NULL,
    frames_done INTEGER NOT NULL, frames_total INTEGER, error TEXT, error_type VARCHAR(128),
    cancel_requested BOOLEAN NOT NULL, attempts INTEGER NOT NULL
);
CREATE INDEX ix_vidshard_jobs_state ON vidshard_jobs (state);
INSERT INTO vidshard_jobs VALUES (1, '0123456789abcdef0123456789abcdef', 'upscale',
    'succeeded', 0, '{}', '/videos/in.mp4', 'path', NULL, NULL, 1.0, 1.0, 2.0, 2.0, 10, 10,
    NULL, NULL, 0, 1);
"""


def test_an_old_database_opens_and_gains_owners(tmp_path):
    path = tmp_path / "jobs.db"
    with sqlite3.connect(path) as conn:
        conn.executescript(OLD_SCHEMA)
    store = JobStore(f"sqlite:///{path}")
    store.create_all()
    try:
        old = store.get("0123456789abcdef0123456789abcdef")
        assert old is not None and old.owner is None and old.state == "succeeded"
        mine, _ = store.add(
            JobRecord(task="upscale", input_path="/v/a.mp4", input_kind="path", owner="alice")
        )
        assert store.get(mine.id).owner == "alice"
        assert [r.id for r in store.list(owner="alice")[0]] == [mine.id]
        assert store.list()[1] == 2
    finally:
        store.close()
    reopened = JobStore(f"sqlite:///{path}")  # a second start finds the column there
    reopened.create_all()
    assert reopened.get(mine.id).owner == "alice"
    reopened.close()


def test_listing_by_owner_counts_only_theirs(tmp_path):
    store = JobStore(f"sqlite:///{tmp_path / 'jobs.db'}")
    store.create_all()
    for owner in ("alice", "bob", "alice", None, "alice"):
        store.add(JobRecord(task="upscale", input_path="/v/a.mp4", input_kind="path", owner=owner))
    page, total = store.list(limit=2, owner="alice")
    assert total == 3 and len(page) == 2 and {r.owner for r in page} == {"alice"}
    assert store.list(owner="bob")[1] == 1 and store.list(owner="carol")[1] == 0
    assert store.list(["queued"], owner="alice")[1] == 3
    assert store.list()[1] == 5
    with pytest.raises(TypeError, match="owner"):  # a job never changes hands
        store.update(page[0].id, owner="bob")
    store.close()


# --- hidden server paths -------------------------------------------------------------


@pytest.fixture
def redactor(tmp_path):
    roots = {name: tmp_path / name for name in ("clips", "models", "data", "out")}
    for root in roots.values():
        root.mkdir()
    settings = load_settings(
        data_dir=roots["data"],
        output_root=roots["out"],
        input_roots=[roots["clips"]],
        model_dirs=[roots["models"]],
    )
    return PathRedactor.from_settings(settings), roots


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        # an input: relative to its root, as the client named it
        ("{clips}/sub/in.mp4: not a media file", "sub/in.mp4: not a media file"),
        # an output or a work file: its name alone
        ("cannot write {out}/0a1b/.x.vidshard/seg-0001.mp4", "cannot write seg-0001.mp4"),
        ("{data}/uploads/0a1b/clip.mp4: is empty", "clip.mp4: is empty"),
        # a model file, with its class
        ("model {models}/slow.py:Slow failed to load", "model slow.py:Slow failed to load"),
        # quoted, in brackets, at the end of a sentence, twice
        ("No such file: '{out}/id/a.mp4'", "No such file: 'a.mp4'"),
        ("({clips}/a.mp4) and ({clips}/b.mp4)", "(a.mp4) and (b.mp4)"),
        ("the data dir {data}.", "the data dir <data dir>."),
        # a path in the Python installation (an internal error's file)
        ("{python}/lib/x/y.py line 3", "y.py line 3"),
        # not a server folder: left alone
        ("{data}-old/x.mp4", "{data}-old/x.mp4"),
        ("{data}.bak/x.mp4", "{data}.bak/x.mp4"),
        ("POST /v1/jobs with input_url", "POST /v1/jobs with input_url"),
        ("https://example.com{clips}/a.mp4", "https://example.com{clips}/a.mp4"),
    ],
)
def test_server_paths_in_messages(redactor, message, expected):
    shown, roots = redactor
    import sys

    names = {**{k: str(v) for k, v in roots.items()}, "python": sys.prefix}
    assert shown.text(message.format(**names)) == expected.format(**names)


def test_viewer_shows_admins_everything(redactor):
    shown, roots = redactor
    path = str(roots["clips"] / "sub" / "in.mp4")
    error = f"{roots['out']}/id/x.mp4: broken"
    admin = Viewer(Principal("ops", True), shown)
    other = Viewer(Principal("alice", False), shown)
    assert admin.input(path, "path") == path and admin.text(error) == error
    assert admin.file(str(roots["out"] / "id" / "x.mp4")).startswith(str(roots["out"]))
    assert other.input(path, "path") == "sub/in.mp4"
    assert other.input("/elsewhere/moved.mp4", "path") == "moved.mp4"  # roots changed since
    assert other.input(str(roots["data"] / "uploads" / "id" / "c.mp4"), "upload") == "c.mp4"
    assert other.input("https://host/v.mp4", "url") == "https://host/v.mp4"
    assert other.text(error) == "x.mp4: broken" and other.text(None) is None
    assert other.file(str(roots["out"] / "id" / "x.mp4")) == "x.mp4"
    default_model = f"{roots['models']}/net.pth"
    assert other.params({"model": default_model, "scale": 2}) == {"model": "net.pth", "scale": 2}


def test_symlinked_roots_are_hidden_in_both_forms(tmp_path):
    real = tmp_path / "real-data"
    real.mkdir()
    link = tmp_path / "data"
    link.symlink_to(real)
    settings = load_settings(data_dir=link, input_roots=[tmp_path])
    shown = PathRedactor.from_settings(settings)
    assert shown.text(f"{real}/outputs/id/a.mp4 x") == "a.mp4 x"


def test_a_root_of_slash_does_not_touch_text_between_paths(tmp_path):
    shown = PathRedactor.from_settings(load_settings(data_dir=tmp_path, input_roots=[Path("/")]))
    assert shown.text("a /etc/x.mp4 b / c") == "a etc/x.mp4 b / c"
