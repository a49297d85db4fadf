"""The SQLite account store on real files: migrations, refusals of files it must not touch,
accounts, devices, activity and the audit trail."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from ankihost.accounts import sqlite as store_module
from ankihost.accounts.sqlite import SCHEMA_VERSION, SqliteAccountStore
from ankihost.accounts.store import Activity, DuplicateAccount, StoreError, key_hash


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "accounts.db"


@pytest.fixture
def store(path: Path):
    opened = SqliteAccountStore.open(path)
    yield opened
    opened.close()


def test_a_new_store_records_each_migration(path: Path) -> None:
    SqliteAccountStore.open(path).close()
    db = sqlite3.connect(path)
    assert db.execute("pragma user_version").fetchone()[0] == SCHEMA_VERSION
    recorded = db.execute("select version, name, applied_at from migrations order by version").fetchall()
    assert [row[:2] for row in recorded] == [(v, name) for v, name, _ in store_module.MIGRATIONS]
    assert all(row[2] > 1_700_000_000 for row in recorded)
    tables = {row[0] for row in db.execute("select name from sqlite_master where type = 'table'")}
    assert {"accounts", "devices", "activity", "audit", "migrations"} <= tables


def test_reopening_applies_nothing_twice_and_keeps_the_data(path: Path) -> None:
    first = SqliteAccountStore.open(path)
    first.add_account("carol", "$argon2id$x", None)
    first.close()
    again = SqliteAccountStore.open(path)
    try:
        assert [a.name for a in again.accounts()] == ["carol"]
    finally:
        again.close()
    db = sqlite3.connect(path)
    assert db.execute("select count() from migrations").fetchone()[0] == len(store_module.MIGRATIONS)


def test_a_store_of_a_newer_ankihost_is_refused_and_left_alone(path: Path) -> None:
    SqliteAccountStore.open(path).close()
    db = sqlite3.connect(path)
    db.execute(f"pragma user_version = {SCHEMA_VERSION + 1}")
    db.close()
    before = path.read_bytes()
    with pytest.raises(StoreError) as refused:
        SqliteAccountStore.open(path)
    message = str(refused.value)
    assert str(path) in message and "newer ankihost" in message and "upgrade" in message
    assert path.read_bytes() == before


def test_an_sqlite_file_of_something_else_is_refused_and_left_alone(path: Path) -> None:
    db = sqlite3.connect(path)
    db.execute("create table notes (id integer primary key, flds text)")
    db.execute("insert into notes values (1, 'mine')")
    db.commit()
    db.close()
    before = path.read_bytes()
    with pytest.raises(StoreError, match="not an ankihost account store") as refused:
        SqliteAccountStore.open(path)
    assert str(path) in str(refused.value)
    assert path.read_bytes() == before  # not even switched to WAL
    assert not Path(f"{path}-wal").exists()


@pytest.mark.parametrize("content", [b"hello, this is a text file\n" * 40, b"\x00" * 100 + b"\xff" * 4000])
def test_a_file_that_is_not_sqlite_is_refused(path: Path, content: bytes) -> None:
    path.write_bytes(content)
    with pytest.raises(StoreError) as refused:
        SqliteAccountStore.open(path)
    assert str(path) in str(refused.value)
    assert path.read_bytes() == content


def test_a_damaged_store_is_refused_with_its_name(path: Path) -> None:
    store = SqliteAccountStore.open(path)
    for i in range(200):
        store.add_audit("cli", "carol", "login", "x" * 200 + str(i))
    store.close()
    raw = bytearray(path.read_bytes())
    raw[4096:8192] = b"\xa5" * 4096  # the second page: garbage
    path.write_bytes(bytes(raw))
    with pytest.raises(StoreError, match="damaged") as refused:
        SqliteAccountStore.open(path)
    assert str(path) in str(refused.value) and "backup" in str(refused.value)


def test_names_are_unique_ignoring_case(store: SqliteAccountStore) -> None:
    store.add_account("Carol", "h1", None)
    for clash in ("carol", "CAROL", "Carol"):
        with pytest.raises(DuplicateAccount, match="already exists"):
            store.add_account(clash, "h2", None)
    assert [(a.name, a.password_hash) for a in store.accounts()] == [("Carol", "h1")]
    store.add_account("Carolyn", "h3", 5)
    assert [a.name for a in store.accounts()] == ["Carol", "Carolyn"]


def test_set_password_revokes_every_device_of_that_account_only(store: SqliteAccountStore) -> None:
    store.add_account("carol", "h1", None)
    store.add_account("dave", "h1", None)
    store.add_device("carol", "key-1", "26.09.3,abc,linux", "10.0.0.1")
    store.add_device("carol", "key-2", "26.09.3,abc,android", "10.0.0.2")
    kept = store.add_device("dave", "key-3", "c", "10.0.0.3")
    assert store.set_password("carol", "h2") == 2
    assert [d for _, d in store.devices()] == [kept]
    assert {a.name: a.password_hash for a in store.accounts()} == {"carol": "h2", "dave": "h1"}


def test_devices_keep_only_a_hash_of_their_key(store: SqliteAccountStore, path: Path) -> None:
    store.add_account("carol", "h", None)
    device = store.add_device("carol", "the-secret-host-key", "client", "10.0.0.1")
    assert store.devices() == [(key_hash("the-secret-host-key"), device)]
    assert len(device.id) == 12 and int(device.id, 16) >= 0
    assert b"the-secret-host-key" not in path.read_bytes() + Path(f"{path}-wal").read_bytes()


def test_revoke_removes_the_named_devices_and_says_which(store: SqliteAccountStore) -> None:
    store.add_account("carol", "h", None)
    one, two, three = (store.add_device("carol", f"k{i}", "c", "ip") for i in range(3))
    assert store.revoke_devices("carol", [two.id, "nosuchid"]) == [two.id]
    assert {d.id for _, d in store.devices()} == {one.id, three.id}
    assert sorted(store.revoke_devices("carol", None)) == sorted([one.id, three.id])
    assert store.devices() == []


def test_remove_keeps_the_audit_trail(store: SqliteAccountStore) -> None:
    store.add_account("carol", "h", 10)
    store.add_device("carol", "k", "c", "ip")
    store.save_activity([Activity("carol", 1_700_000_000, "ok", "client", "ip")])
    store.add_audit("cli", "carol", "account.added", "quota_bytes=10")
    store.add_audit("server", "carol", "login", "device=abc")
    store.remove_account("carol")
    store.add_audit("cli", "carol", "account.removed", "data=kept")
    assert store.accounts() == [] and store.devices() == [] and store.activity() == {}
    events = [e.event for e in store.audit("carol")]
    assert events == ["account.removed", "login", "account.added"]  # newest first


def test_activity_and_device_use_are_saved(store: SqliteAccountStore) -> None:
    from dataclasses import replace

    store.add_account("carol", "h", None)
    device = store.add_device("carol", "k", "old", "10.0.0.1")
    later = replace(device, last_seen=device.last_seen + 60, last_ip="10.0.0.9", client="new")
    store.touch_devices([later])
    assert store.devices() == [(key_hash("k"), later)]
    entry = Activity("carol", 1_700_000_000, "ok", "26.09.3", "10.0.0.9")
    store.save_activity([entry])
    store.save_activity([replace(entry, last_result="meta failed (400)")])
    assert store.activity() == {"carol": replace(entry, last_result="meta failed (400)")}


def test_the_store_file_is_readable_by_its_owner_only_when_made_by_the_lock_holder(tmp_path: Path) -> None:
    """The account store lives in SYNC_BASE/.ankihost, a folder only its owner can enter."""
    from ankihost.admin.lock import SERVER, DataFolderLock
    from ankihost.storage.paths import DataFolder

    folder = DataFolder(tmp_path / "base")
    lock = DataFolderLock(folder)
    lock.acquire(SERVER, "test")
    try:
        SqliteAccountStore.open(folder.accounts_db).close()
        assert folder.state.stat().st_mode & 0o777 == 0o700
    finally:
        lock.release()


def test_login_events_are_pruned_to_the_newest_and_changes_all_stay(
    store: SqliteAccountStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A guessing attack from many addresses adds one audit row per try: only the newest
    MAX_LOGIN_AUDIT_ROWS login events are kept; account and device changes are never pruned."""
    monkeypatch.setattr(store_module, "MAX_LOGIN_AUDIT_ROWS", 300)
    monkeypatch.setattr(store_module, "AUDIT_PRUNE_EVERY_ROWS", 50)
    store.add_audit("cli", "carol", "account.added", "")
    for i in range(2_000):
        store.add_audit("server", None, "login.failed", f"user=x{i} ip=10.0.{i // 256}.{i % 256}")
        if i % 500 == 0:
            store.add_audit("server", "carol", "device.revoked", f"devices={i}")
    entries = store.audit(limit=10_000)
    failures = [e for e in entries if e.event == "login.failed"]
    assert 300 <= len(failures) < 300 + 50
    assert failures[0].detail.startswith("user=x1999")  # the newest are kept
    assert [e.event for e in entries if not e.event.startswith("login")] == ["device.revoked"] * 4 + ["account.added"]


def test_the_real_limits_bound_the_audit_table() -> None:
    assert store_module.MAX_LOGIN_AUDIT_ROWS * 300 < 64 * 1024 * 1024  # rows of ~300 bytes
    assert store_module.AUDIT_PRUNE_EVERY_ROWS < store_module.MAX_LOGIN_AUDIT_ROWS / 10


def test_a_store_deleted_while_open_is_written_again(store: SqliteAccountStore, path: Path) -> None:
    store.add_account("carol", "h", 5)
    store.add_device("carol", "k", "c", "ip")
    assert store.check_file() is None
    for leftover in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        leftover.unlink(missing_ok=True)
    store.add_account("dave", "h2", None)  # goes to the open (deleted) file
    message = store.check_file()
    assert message is not None and "deleted" in message and str(path) in message
    assert store.check_file() is None
    reopened = SqliteAccountStore.open(path)
    try:
        assert [a.name for a in reopened.accounts()] == ["carol", "dave"]
        assert [d.account for _, d in reopened.devices()] == ["carol"]
    finally:
        reopened.close()
    store.add_account("erin", "h3", None)  # the store goes on, on the new file
    assert [a.name for a in store.accounts()] == ["carol", "dave", "erin"]
    assert not list(path.parent.glob("*.restoring"))


def test_a_store_replaced_while_open_is_reported_once(store: SqliteAccountStore, path: Path, tmp_path: Path) -> None:
    other = SqliteAccountStore.open(tmp_path / "other.db")
    other.close()
    path.unlink()
    (tmp_path / "other.db").rename(path)
    message = store.check_file()
    assert message is not None and "replaced" in message and "restart" in message
    assert store.check_file() is None


def test_an_older_store_is_migrated_and_the_migration_recorded(path: Path) -> None:
    """A store of version 1 (as the first release wrote it) gets migration 2, in one
    transaction, recorded beside the first; its data stays."""
    version_1 = [m for m in store_module.MIGRATIONS if m[0] == 1]
    db = sqlite3.connect(path, isolation_level=None)
    store_module._apply(db, *version_1[0])
    db.execute("insert into accounts values ('carol', 'carol', 'h', null, 1)")
    db.close()
    store = SqliteAccountStore.open(path)
    try:
        assert [a.name for a in store.accounts()] == ["carol"]
        store.set_env_fingerprint("alice", "$argon2id$fp")
        assert store.env_fingerprints() == {"alice": "$argon2id$fp"}
    finally:
        store.close()
    db = sqlite3.connect(path)
    assert [row[0] for row in db.execute("select version from migrations order by version")] == [1, 2]
    assert db.execute("pragma user_version").fetchone()[0] == SCHEMA_VERSION == 2
