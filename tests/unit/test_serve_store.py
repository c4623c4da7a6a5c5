"""The store of `gavel serve` (experiments/serve/store.py) and its API key tokens: a key's secret is never stored
(only its SHA-256, compared in constant time), every count survives a reopen, a nonce is accepted once; the same
contract on SQLite and, where PostgreSQL's programs are installed, on a temporary PostgreSQL cluster."""

from __future__ import annotations

import os
import pwd
import time

import pytest
from helpers.serving import add_key

from gavel.experiments.serve import tokens
from gavel.experiments.serve.settings import DEFAULT_STORE
from gavel.experiments.serve.store import RequestRecord, Store, StoreError
from gavel.experiments.server import ServerError, free_port, postgres_bin, start_postgres, stop_postgres


def test_a_token_is_random_and_parses_back_to_its_lookup_and_secret():
    first, second = tokens.new_token(), tokens.new_token()
    assert first.token != second.token and first.lookup != second.lookup
    lookup, secret = tokens.parse(first.token)
    assert lookup == first.lookup and tokens.secret_hash(secret) == first.secret_sha256
    assert secret not in first.secret_sha256
    for bad in ("", "gvl_", "gvl_zz_" + "a" * 43, first.token + " ", "Bearer " + first.token, first.token[:-20]):
        assert tokens.parse(bad) is None, bad


def test_the_secret_is_compared_in_constant_time(monkeypatch):
    calls = []

    def spy(a, b):
        calls.append((a, b))
        return a == b

    monkeypatch.setattr(tokens.hmac, "compare_digest", spy)
    new = tokens.new_token()
    _, secret = tokens.parse(new.token)
    assert tokens.secret_matches(secret, new.secret_sha256)
    assert not tokens.secret_matches(secret + "x", new.secret_sha256)
    assert not tokens.secret_matches(secret, None)  # an unknown key costs a comparison too
    assert len(calls) == 3 and all(len(a) == len(b) == 64 for a, b in calls)


def test_headers_carry_the_token_as_bearer_or_api_key():
    assert tokens.from_headers({"authorization": "Bearer gvl_x"}) == "gvl_x"
    assert tokens.from_headers({"authorization": "bearer  gvl_x "}) == "gvl_x"
    assert tokens.from_headers({"x-api-key": "gvl_y"}) == "gvl_y"
    assert tokens.from_headers({"authorization": "Basic abc"}) is None
    assert tokens.from_headers({}) is None


def store_contract(store: Store) -> None:
    """What both backends must do alike."""
    token = add_key(store, "alice", 10, window=2.0, rate=5)
    key = store.key_by_name("alice")
    assert key.kind == "key" and key.quota == 10 and key.window_hours == 2.0 and key.rate == 5 and not key.banned
    assert store.key_by_lookup(tokens.parse(token)[0]).id == key.id
    assert store.key_by_lookup("0" * 12) is None
    with pytest.raises(StoreError, match="NAME='alice': a key or device of that name exists"):
        add_key(store, "alice", 1)
    device = store.add_key("cam", "device", quota=3, window_hours=1.0, rate=None, created=1.0, public_key="PEM")
    assert device.kind == "device" and device.lookup is None and device.secret_sha256 is None

    assert store.window(key.id) is None
    store.save_window(key.id, 100.0, 4)
    store.save_window(key.id, 100.0, 6)
    store.save_window(key.id, 8000.0, 1)
    assert store.window(key.id) == (8000.0, 1)

    for at, answered, rejected, status in ((10.0, 3, 0, 200), (50.0, 0, 1, 403), (70.0, 0, 0, 429)):
        store.record(RequestRecord(key.id, device.id, at, "v2", 3, answered, rejected, 3 - answered - rejected, status,
                                   None if status == 200 else ("detected" if status == 403 else "quota")))  # fmt: skip
    store.record(RequestRecord(key.id, None, 80.0, "v2", 0, 0, 0, 0, 422, "invalid"))
    assert store.charges_since(key.id, 20.0) == [(50.0, 1)]
    assert store.charges_since(device.id, 0.0, device=True) == [(10.0, 3), (50.0, 1)]
    usage = {u.key.name: u for u in store.usage()}
    alice = usage["alice"]
    assert (alice.requests, alice.answered, alice.rejected, alice.refused, alice.errors) == (4, 3, 1, 5, 1)
    assert (alice.window_start, alice.window_used) == (8000.0, 1)
    assert (usage["cam"].requests, usage["cam"].answered) == (3, 3)

    store.ban(key.id, 90.0, "flagged")
    store.ban(key.id, 95.0, "again")  # the first ban's time and reason are kept
    banned = store.key_by_name("alice")
    assert banned.banned and banned.banned_at == 90.0 and banned.banned_why == "flagged"
    assert store.banned_ids() == {key.id}
    assert not store.unban("alice").banned and store.banned_ids() == set()
    assert store.revoke("alice", 99.0).revoked_at == 99.0
    with pytest.raises(StoreError, match="no key or device of that name"):
        store.unban("nobody")

    assert store.use_nonce(device.id, "n-0000001", 100.0)
    assert not store.use_nonce(device.id, "n-0000001", 101.0)
    store.forget_nonces(before=200.0)
    assert store.use_nonce(device.id, "n-0000001", 300.0)

    store.claim_for_serving()
    store.claim_for_serving()  # the same store again: still its own
    rival = Store(store.location)
    with pytest.raises(StoreError, match="another gavel serve answers from it; allowed: one server per store"):
        rival.claim_for_serving()
    rival.close()

    store.count_unauthenticated("missing", 1.0)
    store.count_unauthenticated("missing", 2.0)
    store.count_unauthenticated("invalid", 3.0)
    assert store.unauthenticated() == {"missing": 2, "invalid": 1}


def test_the_sqlite_store_keeps_its_contract_and_every_count_across_a_reopen(tmp_path):
    path = tmp_path / "sub" / "ledger.db"
    store = Store(str(path))
    store_contract(store)
    store.close()
    again = Store(str(path))
    again.claim_for_serving()  # closed, the first store let go of it
    assert again.window(again.key_by_name("alice").id) == (8000.0, 1)
    assert {u.key.name: u.requests for u in again.usage()} == {"alice": 4, "cam": 3}
    assert again.unauthenticated() == {"missing": 2, "invalid": 1}
    mode = again._db.execute("PRAGMA journal_mode").fetchone()[0]
    again.close()
    assert mode == "wal"


def test_the_token_never_reaches_the_store_s_bytes(tmp_path):
    path = tmp_path / "ledger.db"
    store = Store(str(path))
    issued = [add_key(store, f"k{i}", 5) for i in range(20)]
    secrets_ = [tokens.parse(token)[1] for token in issued]
    files = [p for p in tmp_path.iterdir() if p.name.startswith("ledger.db")]  # the WAL too, before a checkpoint
    written = b"".join(p.read_bytes() for p in files)
    store.close()
    written += path.read_bytes()
    for token, secret in zip(issued, secrets_):
        assert token.encode() not in written and secret.encode() not in written
        assert tokens.secret_hash(secret).encode() in written  # what is kept instead


def test_an_unopenable_store_is_one_line(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(StoreError, match="serve.store='.*': cannot open it as a SQLite file"):
        Store(str(tmp_path / "file" / "ledger.db"))
    with pytest.raises(StoreError, match="cannot connect to PostgreSQL"):
        Store(f"postgresql://nobody:pw@127.0.0.1:{free_port()}/none")


def test_the_default_store_is_the_config_s_and_no_run_reads_the_serve_block():
    from gavel.experiments.config import compose_config
    from gavel.experiments.settings import RunSettings

    saved = os.environ.pop("GAVEL_SERVE_STORE", None)
    try:
        cfg = compose_config(["serve.port=9999"])
        assert cfg.serve.store == DEFAULT_STORE
        assert "serve" not in RunSettings.from_config(cfg).resolved  # a run's params and config digest unchanged
    finally:
        if saved is not None:
            os.environ["GAVEL_SERVE_STORE"] = saved


@pytest.mark.slow
def test_the_postgresql_store_keeps_the_same_contract_and_counts_across_a_reconnect(tmp_path_factory):
    try:
        postgres_bin()
    except ServerError as error:
        pytest.skip(str(error))
    if os.geteuid() == 0 and "postgres" not in {user.pw_name for user in pwd.getpwall()}:
        pytest.skip("running as root, and no 'postgres' user to run PostgreSQL as")
    import shutil
    import tempfile
    from pathlib import Path

    # Not under tmp_path: as root, PostgreSQL runs as `postgres`, which must reach the folder.
    directory = Path(tempfile.mkdtemp(prefix="gavel-serve-pg-"))
    directory.chmod(0o711)
    try:
        started = time.monotonic()
        url = start_postgres(directory, free_port()).replace("postgresql+psycopg2://", "postgresql://")
        store = Store(url)
        assert "@" not in store.description  # no password in what gets printed
        store_contract(store)
        store.close()
        again = Store(url)
        again.claim_for_serving()
        assert again.window(again.key_by_name("alice").id) == (8000.0, 1)
        assert {u.key.name: u.requests for u in again.usage()} == {"alice": 4, "cam": 3}
        again.close()
        print(f"PostgreSQL cluster up and contract checked in {time.monotonic() - started:.1f} s")
    finally:
        stop_postgres(directory)
        shutil.rmtree(directory, ignore_errors=True)
