"""The default account store (`store.py` says what a store does): one SQLite file,
`SYNC_BASE/.ankihost/accounts.db`, opened only by the process that holds the data-folder lock
(the server, or an admin command when no server runs). Its own schema goes through recorded
migrations; a file written by a newer ankihost, or one that is not an account store, is refused
with a `StoreError` naming it, before anything is written. Only a device key's SHA-256 is kept.
Each method is one short transaction, safe to call from any thread. Login events in the audit
table are pruned to the newest MAX_LOGIN_AUDIT_ROWS (an attack adds one per try); a file
deleted while the server runs is written again from the open connection (`check_file`).
"""

from __future__ import annotations

import os
import secrets
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ankihost.accounts.store import (
    DEVICE_ID_BYTES,
    Activity,
    AuditEntry,
    Device,
    DuplicateAccount,
    StoredAccount,
    StoreError,
    key_hash,
)
from ankihost.storage.paths import folded

SCHEMA_VERSION = 2
AUDIT_PAGE = 200
# Login events kept in the audit table (successes, failures, lockouts): a guessing attack from
# many addresses adds a row per try, so older ones go; account and device changes all stay.
MAX_LOGIN_AUDIT_ROWS = 100_000
AUDIT_PRUNE_EVERY_ROWS = 1_000
LOGIN_EVENTS = ("login", "login.failed", "login.throttled")
_LOGIN_EVENT_SQL = "event in ({})".format(", ".join(f"'{event}'" for event in LOGIN_EVENTS))

_V1 = """
create table accounts (
  name text primary key,
  name_key text not null unique,  -- casefold(name): one folder on case-insensitive disks
  password_hash text not null,    -- PHC argon2id (or pbkdf2)
  quota_bytes integer,            -- null: no quota
  created_at integer not null
);
create table devices (
  id text not null,
  account text not null,          -- the account's name (from the store or the environment)
  key_hash blob not null unique,  -- SHA-256 of the device's host key
  client text not null,           -- the client's version string at its last request
  first_seen integer not null,
  last_seen integer not null,
  last_ip text not null,
  primary key (account, id)
);
create table activity (
  account text primary key,
  last_sync_at integer not null,
  last_result text not null,
  last_client text not null,
  last_ip text not null
);
create table audit (
  id integer primary key,
  at integer not null,
  actor text not null,
  account text,
  event text not null,
  detail text not null
);
create index audit_by_account on audit (account, id);
"""
_V2 = """
create table env_secrets (
  account text primary key,       -- a SYNC_USERn account with device keys
  fingerprint text not null       -- PHC argon2id of its official derived key (never the secret)
);
"""
# Recorded migrations: (version it brings the file to, what it does, the SQL).
MIGRATIONS: tuple[tuple[int, str, str], ...] = (
    (1, "accounts, devices, activity, audit", _V1),
    (2, "fingerprints of SYNC_USERn values, to end device keys when one changes", _V2),
)
_RECORD = """
create table if not exists migrations (
  version integer primary key, name text not null, applied_at integer not null
)"""


class SqliteAccountStore:
    def __init__(self, db: sqlite3.Connection, path: Path) -> None:
        self.db = db
        self.path = path
        self._lock = threading.Lock()
        self._identity = _identity(path)
        self._replaced_told = False
        self._audit_rows_added = 0

    @classmethod
    def open(cls, path: Path) -> SqliteAccountStore:
        store = cls(_connect(path), path)
        store._prune_login_audit()
        return store

    def close(self) -> None:
        with self._lock:
            self.db.close()

    def check_file(self) -> str | None:
        """Whether the file is still the one opened (asked every few seconds): one deleted
        while the server runs is written again from the open connection, which still sees
        every row; one replaced by another file is reported once. None: all is well."""
        try:
            identity = _identity(self.path)
        except FileNotFoundError:
            self._write_again()
            return f"{self.path} was deleted while the server ran; it was written again"
        if identity == self._identity or self._replaced_told:
            return None
        self._replaced_told = True
        return (f"{self.path} was replaced while the server ran; the server goes on with the "
                "store it opened (changes now are not written to the new file): restart it")

    def _write_again(self) -> None:
        with self._lock:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            copy = self.path.with_name(f"{self.path.name}.restoring")
            copy.unlink(missing_ok=True)
            self.db.execute("vacuum into ?", (str(copy),))
            self.db.close()  # (before the new file is in place: closing removes this -wal)
            os.replace(copy, self.path)
            self.db = _connect(self.path)
            self._identity = _identity(self.path)

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self.db.execute("begin immediate")
            try:
                yield self.db
                self.db.execute("commit")
            except BaseException:
                self.db.execute("rollback")
                raise

    def _read(self, sql: str, args: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
        with self._lock:
            return self.db.execute(sql, args).fetchall()

    # -- accounts ---------------------------------------------------------------------------

    def accounts(self) -> list[StoredAccount]:
        rows = self._read("select name, password_hash, quota_bytes, created_at from accounts "
                          "order by name_key")
        return [StoredAccount(*row) for row in rows]  # type: ignore[arg-type]

    def add_account(self, name: str, password_hash: str, quota_bytes: int | None) -> StoredAccount:
        account = StoredAccount(name, password_hash, quota_bytes, int(time.time()))
        try:
            with self._write() as db:
                db.execute("insert into accounts values (?, ?, ?, ?, ?)", (
                    name, folded(name), password_hash, quota_bytes, account.created_at))
                db.execute("delete from devices where account = ?", (name,))
                db.execute("delete from activity where account = ?", (name,))
        except sqlite3.IntegrityError:
            raise DuplicateAccount(f"an account named {name!r} already exists") from None
        return account

    def set_password(self, name: str, password_hash: str) -> int:
        """New password; every device key of the account is revoked. Returns how many."""
        with self._write() as db:
            db.execute("update accounts set password_hash = ? where name = ?", (password_hash, name))
            return db.execute("delete from devices where account = ?", (name,)).rowcount

    def set_quota(self, name: str, quota_bytes: int | None) -> None:
        with self._write() as db:
            db.execute("update accounts set quota_bytes = ? where name = ?", (quota_bytes, name))

    def remove_account(self, name: str) -> None:
        """The account, its devices and its activity (the audit trail stays)."""
        with self._write() as db:
            db.execute("delete from accounts where name = ?", (name,))
            db.execute("delete from devices where account = ?", (name,))
            db.execute("delete from activity where account = ?", (name,))

    # -- devices ----------------------------------------------------------------------------

    def devices(self) -> list[tuple[bytes, Device]]:
        """Every device of every account, with its key hash (loaded once by the server)."""
        rows = self._read("select key_hash, id, account, client, first_seen, last_seen, last_ip "
                          "from devices order by account, first_seen")
        return [(row[0], Device(*row[1:])) for row in rows]  # type: ignore[misc,arg-type]

    def add_device(self, account: str, host_key: str, client: str, ip: str) -> Device:
        now = int(time.time())
        with self._write() as db:
            while True:
                device = Device(secrets.token_hex(DEVICE_ID_BYTES), account, client, now, now, ip)
                try:
                    db.execute("insert into devices values (?, ?, ?, ?, ?, ?, ?)", (
                        device.id, account, key_hash(host_key), client, now, now, ip))
                    return device
                except sqlite3.IntegrityError:  # an id already used by this account
                    continue

    def revoke_devices(self, account: str, ids: list[str] | None) -> list[str]:
        """Remove the account's devices with these ids (None: all); the ids removed."""
        with self._write() as db:
            found = [row[0] for row in db.execute(
                "select id from devices where account = ?", (account,))]
            gone = found if ids is None else [i for i in ids if i in found]
            db.executemany("delete from devices where account = ? and id = ?",
                           [(account, i) for i in gone])
            return gone

    def touch_devices(self, seen: list[Device]) -> None:
        """Store when and from where (and with which client) devices were last seen."""
        with self._write() as db:
            db.executemany(
                "update devices set last_seen = ?, last_ip = ?, client = ? where account = ? and id = ?",
                [(d.last_seen, d.last_ip, d.client, d.account, d.id) for d in seen],
            )

    def env_fingerprints(self) -> dict[str, str]:
        return {str(row[0]): str(row[1]) for row in self._read("select account, fingerprint from env_secrets")}

    def set_env_fingerprint(self, account: str, fingerprint: str) -> None:
        with self._write() as db:
            db.execute("insert or replace into env_secrets values (?, ?)", (account, fingerprint))

    # -- activity ---------------------------------------------------------------------------

    def activity(self) -> dict[str, Activity]:
        rows = self._read("select account, last_sync_at, last_result, last_client, last_ip "
                          "from activity")
        return {str(row[0]): Activity(*row) for row in rows}  # type: ignore[arg-type]

    def save_activity(self, entries: list[Activity]) -> None:
        with self._write() as db:
            db.executemany("insert or replace into activity values (?, ?, ?, ?, ?)", [
                (a.account, a.last_sync_at, a.last_result, a.last_client, a.last_ip)
                for a in entries
            ])

    # -- audit ------------------------------------------------------------------------------

    def add_audit(self, actor: str, account: str | None, event: str, detail: str) -> None:
        with self._write() as db:
            db.execute("insert into audit (at, actor, account, event, detail) values (?, ?, ?, ?, ?)",
                       (int(time.time()), actor, account, event, detail))
            self._audit_rows_added += 1
        if self._audit_rows_added >= AUDIT_PRUNE_EVERY_ROWS:
            self._prune_login_audit()

    def _prune_login_audit(self) -> None:
        """Remove the login events older than the newest MAX_LOGIN_AUDIT_ROWS."""
        with self._write() as db:
            self._audit_rows_added = 0
            db.execute(f"delete from audit where {_LOGIN_EVENT_SQL} and id <= (select id from audit "
                       f"where {_LOGIN_EVENT_SQL} order by id desc limit 1 offset ?)",
                       (MAX_LOGIN_AUDIT_ROWS,))

    def audit(self, account: str | None = None, limit: int = AUDIT_PAGE) -> list[AuditEntry]:
        """The newest entries first, of one account or of all."""
        where, args = ("where account = ?", (account,)) if account is not None else ("", ())
        rows = self._read(f"select id, at, actor, account, event, detail from audit {where} "
                          "order by id desc limit ?", (*args, limit))
        return [AuditEntry(*row) for row in rows]  # type: ignore[arg-type]


def _connect(path: Path) -> sqlite3.Connection:
    """An open, checked and migrated connection to the store at `path`; StoreError."""
    try:
        db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
    except sqlite3.Error as exc:
        raise StoreError(f"cannot open the account store {path}: {exc}") from exc
    try:
        version = _check(db, path)  # before anything is written, even the WAL switch
        db.execute("pragma journal_mode = wal")
        _migrate(db, version)
    except sqlite3.DatabaseError as exc:
        db.close()
        raise StoreError(f"{path} is not a readable account store: {exc}") from exc
    except BaseException:
        db.close()
        raise
    return db


def _identity(path: Path) -> tuple[int, int]:
    info = os.stat(path)
    return info.st_dev, info.st_ino


def _check(db: sqlite3.Connection, path: Path) -> int:
    """The store's version, if this file is one we may use; StoreError (or sqlite3's
    DatabaseError) otherwise. Reads only."""
    version: int = db.execute("pragma user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        raise StoreError(f"{path} was written by a newer ankihost (account store version "
                         f"{version}, this one knows up to {SCHEMA_VERSION}); upgrade ankihost")
    if version == 0 and _has_foreign_tables(db):
        raise StoreError(f"{path} is an SQLite file but not an ankihost account store")
    problem = db.execute("pragma quick_check(1)").fetchone()[0]
    if problem != "ok":
        raise StoreError(f"{path} is damaged ({problem}); restore it from a backup")
    return version


def _migrate(db: sqlite3.Connection, version: int) -> None:
    for target, name, script in MIGRATIONS:
        if target > version:
            _apply(db, target, name, script)


def _has_foreign_tables(db: sqlite3.Connection) -> bool:
    tables: int = db.execute("select count() from sqlite_master where type = 'table'").fetchone()[0]
    return tables > 0


def _apply(db: sqlite3.Connection, target: int, name: str, script: str) -> None:
    db.execute("begin exclusive")
    try:
        for statement in script.split(";"):
            if statement.strip():
                db.execute(statement)
        db.execute(_RECORD)
        db.execute("insert into migrations values (?, ?, ?)", (target, name, int(time.time())))
        db.execute(f"pragma user_version = {target}")
        db.execute("commit")
    except BaseException:
        db.execute("rollback")
        raise
