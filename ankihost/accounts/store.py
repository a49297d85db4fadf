"""What an account store keeps and must do: accounts made while ankihost runs, each device's
key, each user's last sync, and the audit trail.

`sqlite.SqliteAccountStore` (SYNC_BASE/.ankihost/accounts.db) is the default; a store shared by
several ankihost instances (PostgreSQL) implements the same `AccountStore` interface. The
`directory.AccountDirectory` is the only user of a store: it caches what requests need.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

DEVICE_ID_BYTES = 6  # 12 hex digits: short enough to type, unique within an account


@dataclass(frozen=True)
class Account:
    name: str
    # where the account is defined, as shown to admins ("env": a SYNC_USERn variable;
    # "store": the account store, managed with `ankihost user …`)
    source: str
    # the most the user may store (collection and media), None: no limit
    quota_bytes: int | None = None

    def __repr__(self) -> str:  # never show secrets, whatever a subclass holds
        return f"{type(self).__name__}({self.name!r})"


class StoreError(Exception):
    """The account store cannot be opened or used; the message names the file."""


class DuplicateAccount(StoreError):
    """An account of that name (ignoring case) already exists."""


class UnknownAccount(StoreError):
    """There is no such account (any more): another change removed it first."""


def key_hash(host_key: str) -> bytes:
    return hashlib.sha256(host_key.encode()).digest()


def new_host_key() -> str:
    """A device's host key: 256 random bits, URL-safe ASCII (it travels in a JSON header)."""
    return secrets.token_urlsafe(32)


@dataclass(frozen=True)
class StoredAccount:
    name: str
    password_hash: str
    quota_bytes: int | None
    created_at: int


@dataclass(frozen=True)
class Device:
    id: str
    account: str
    client: str
    first_seen: int
    last_seen: int
    last_ip: str


@dataclass(frozen=True)
class Activity:
    account: str
    last_sync_at: int
    last_result: str
    last_client: str
    last_ip: str


@dataclass(frozen=True)
class AuditEntry:
    id: int
    at: int
    actor: str
    account: str | None
    event: str
    detail: str


class AccountStore(Protocol):
    path: Path  # where it is, for messages

    def close(self) -> None: ...
    def check_file(self) -> str | None:
        """What went wrong with the store's storage since the last call, if anything (and
        was repaired where it can be); asked every few seconds by the server."""
        ...
    def accounts(self) -> list[StoredAccount]: ...
    def add_account(self, name: str, password_hash: str, quota_bytes: int | None) -> StoredAccount:
        """DuplicateAccount when the name, ignoring case, is taken. Devices and activity left
        under that name (by an environment account of old) are removed: a new account starts
        with no device keys."""
        ...
    def set_password(self, name: str, password_hash: str) -> int:
        """Also revokes every device key of the account; returns how many."""
        ...
    def set_quota(self, name: str, quota_bytes: int | None) -> None: ...
    def remove_account(self, name: str) -> None: ...
    def devices(self) -> list[tuple[bytes, Device]]:
        """Every device of every account, with its key hash."""
        ...
    def add_device(self, account: str, host_key: str, client: str, ip: str) -> Device: ...
    def revoke_devices(self, account: str, ids: list[str] | None) -> list[str]: ...
    def touch_devices(self, seen: list[Device]) -> None: ...
    def env_fingerprints(self) -> dict[str, str]:
        """Per environment account with device keys: a PHC hash of its official derived key as
        last seen, to tell when its SYNC_USERn value (the password) changed."""
        ...
    def set_env_fingerprint(self, account: str, fingerprint: str) -> None: ...
    def activity(self) -> dict[str, Activity]: ...
    def save_activity(self, entries: list[Activity]) -> None: ...
    def add_audit(self, actor: str, account: str | None, event: str, detail: str) -> None: ...
    def audit(self, account: str | None = None, limit: int = 200) -> list[AuditEntry]: ...
