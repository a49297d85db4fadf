"""Every account the server knows, from the environment and from the account store, and
which host key belongs to whom: the `AccountSource` the registry and the login step use.

Environment accounts keep the official derived host key (devices switch between ankihost and
the official server without logging in again) unless ANKIHOST_ENV_DEVICE_KEYS gives them a key
per device. Store accounts always get a key per device. Keys are looked up in memory (a dict of
key hashes, loaded once); when and from where each device was last seen, and each user's last
sync, are kept in memory and written to the store by `flush` every few seconds.
All changes to accounts and devices go through here, so the caches never go stale.

Threads: lookups (`credential`, `seen`, `synced`) run on the event loop and take only `_lock`,
held for dict updates, never for store I/O. Changes, the device a login adds, and `flush` run in
worker threads and are serialised by `_changes`, so a login checked against a password that
changed meanwhile adds no device, and nothing is written for an account removed meanwhile.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from dataclasses import dataclass, replace

from ankihost.accounts import passwords
from ankihost.accounts.audit import Audit
from ankihost.accounts.env import EnvAccount, EnvAccounts
from ankihost.accounts.store import (
    Account,
    AccountStore,
    Activity,
    Device,
    StoredAccount,
    UnknownAccount,
    key_hash,
    new_host_key,
)
from ankihost.errors import AuthFailed

log = logging.getLogger(__name__)
STORE = "store"


@functools.cache
def _decoy() -> passwords.Verifier:
    """Verified for an unknown name when the store has accounts, so it costs what a real check
    does. Made on first use: every command line run would otherwise pay an argon2id hash."""
    return passwords.parse_hash(passwords.hash_new_password("ankihost-decoy-password-never-valid"))


@dataclass(frozen=True, repr=False)
class StoreAccount(Account):
    verifier: passwords.Verifier | None = None

    @classmethod
    def of(cls, stored: StoredAccount) -> StoreAccount:
        return cls(stored.name, STORE, stored.quota_bytes, passwords.parse_hash(stored.password_hash))


@dataclass(frozen=True)
class Credential:
    """Who a host key belongs to: the account, and the device (None for a shared key)."""

    account: Account
    device: Device | None


class AccountDirectory:
    def __init__(
        self, env: EnvAccounts, store: AccountStore, audit: Audit, *, env_device_keys: bool
    ) -> None:
        self.env = env
        self.store = store
        self.audit = audit
        self.env_device_keys = env_device_keys
        self._lock = threading.Lock()  # the dicts below (taken after _changes, never before)
        self._changes = threading.Lock()  # changes of accounts and devices, and flush
        self._accounts = {a.name: StoreAccount.of(a) for a in store.accounts()}
        self._devices = dict(store.devices())  # key hash → device
        self._key_of = {(d.account, d.id): h for h, d in self._devices.items()}
        self._activity = store.activity()
        self._dirty_devices: dict[tuple[str, str], Device] = {}
        self._dirty_activity: set[str] = set()

    # -- the AccountSource interface ---------------------------------------------------------

    def names(self) -> list[str]:
        return [*self.env.names(), *self._accounts]

    def by_name(self, name: str) -> Account | None:
        return self.env.by_name(name) or self._accounts.get(name)

    def by_host_key(self, host_key: str) -> Account | None:
        credential = self.credential(host_key)
        return None if credential is None else credential.account

    def credential(self, host_key: str) -> Credential | None:
        if not host_key:
            return None
        if not self.env_device_keys and (env := self.env.by_host_key(host_key)) is not None:
            return Credential(env, None)
        device = self._devices.get(key_hash(host_key))
        account = self.by_name(device.account) if device is not None else None
        if account is None or not self._keeps_device_keys(account):
            return None  # (an env account's keys from when ANKIHOST_ENV_DEVICE_KEYS was on)
        return Credential(account, device)

    def _keeps_device_keys(self, account: Account) -> bool:
        return self.env_device_keys or not isinstance(account, EnvAccount)

    def login(self, name: str, password: str, client: str = "", ip: str = "") -> str:
        account = self._checked(name, password)
        if isinstance(account, EnvAccount) and not self.env_device_keys:
            self.audit.record("login", name, client=client, ip=ip)
            return account.host_key
        key = new_host_key()
        with self._changes:
            if not _same_password(account, self.by_name(name)):
                raise AuthFailed(f"{name!r} was changed or removed during the login")
            device = self.store.add_device(name, key, client, ip)
            with self._lock:
                self._devices[key_hash(key)] = device
                self._key_of[(name, device.id)] = key_hash(key)
        self.audit.record("login", name, device=device.id, client=client, ip=ip)
        return key

    def check_password(self, name: str, password: str) -> Account:
        """The account if the password is right (AuthFailed if not), with no device key made:
        for signing in to the account page."""
        return self._checked(name, password)

    def _checked(self, name: str, password: str) -> Account:
        """The account if the password is right; else AuthFailed, after the same work."""
        stored = self._accounts.get(name)
        if stored is None:
            if self.env.by_name(name) is None and self._accounts:
                _decoy().verify(password)
                raise AuthFailed(f"unknown user {name!r}")
            return self.env.check(name, password)
        if stored.verifier is None or not stored.verifier.verify(password):
            raise AuthFailed(f"wrong password for {name!r}")
        return stored

    def end_keys_of_changed_env_passwords(self) -> list[str]:
        """With ANKIHOST_ENV_DEVICE_KEYS, an env account whose SYNC_USERn value changed since the
        last start loses its device keys, as its shared key would (with the official server
        too). Run by the server at start-up only: an admin command's environment may not be
        the server's. Returns the names whose devices were logged out."""
        if not self.env_device_keys:
            return []
        known = self.store.env_fingerprints()
        changed = []
        for name in self.env.names():
            account = self.env.by_name(name)
            assert account is not None
            fingerprint = known.get(name)
            if fingerprint is not None and passwords.parse_hash(fingerprint).verify(account.host_key):
                continue
            self.store.set_env_fingerprint(name, passwords.hash_new_password(account.host_key))
            if fingerprint is not None:
                revoked = self.revoke(name, None)
                self.audit.record("account.env_password_changed", name, devices_revoked=len(revoked))
                changed.append(name)
        return changed

    # -- what devices and users did ---------------------------------------------------------

    def seen(self, credential: Credential, client: str, ip: str) -> None:
        """A request with this credential: remember the device's last use (in memory)."""
        device = credential.device
        if device is None:
            return
        now = int(time.time())
        if now == device.last_seen and ip == device.last_ip and client == device.client:
            return
        updated = replace(device, last_seen=now, last_ip=ip, client=client or device.client)
        with self._lock:
            hashed = self._key_of.get((device.account, device.id))
            if hashed is not None:  # (None: revoked meanwhile)
                self._devices[hashed] = updated
                self._dirty_devices[(device.account, device.id)] = updated

    def synced(self, name: str, result: str, client: str, ip: str) -> None:
        """A user's collection sync request ended with `result` ("ok", or what failed)."""
        if self.by_name(name) is None:
            return  # removed while the request ran
        with self._lock:
            self._activity[name] = Activity(name, int(time.time()), result, client, ip)
            self._dirty_activity.add(name)

    def activity(self, name: str) -> Activity | None:
        return self._activity.get(name)

    def flush(self) -> None:
        """Write what changed since the last flush to the store (from a worker thread); say if
        the store's file was deleted (and written again) or replaced meanwhile."""
        with self._changes:
            if problem := self.store.check_file():
                log.error("account store: %s", problem)
            with self._lock:
                devices, self._dirty_devices = list(self._dirty_devices.values()), {}
                names, self._dirty_activity = self._dirty_activity, set()
                activity = [self._activity[n] for n in names if n in self._activity]
            if devices:
                self.store.touch_devices(devices)
            if activity:
                self.store.save_activity(activity)

    # -- changes (admin operations) ---------------------------------------------------------

    def store_names(self) -> list[str]:
        return list(self._accounts)

    def devices(self, name: str) -> list[Device]:
        with self._lock:
            found = [d for d in self._devices.values() if d.account == name]
        return sorted(found, key=lambda d: d.first_seen)

    def device_count(self) -> int:
        """How many devices of all accounts have a key of their own."""
        return len(self._devices)

    def add(self, name: str, password: str, quota_bytes: int | None) -> StoreAccount:
        """A new store account (DuplicateAccount if the name is taken in the store); it starts
        with no device keys, whatever an old account of that name left."""
        phc = passwords.hash_new_password(password)
        with self._changes:
            account = StoreAccount.of(self.store.add_account(name, phc, quota_bytes))
            with self._lock:
                self._accounts[name] = account
                self._activity.pop(name, None)
                self._forget_devices(name, None)
        return account

    def set_password(self, name: str, password: str) -> int:
        """A new password for a store account; every device key is revoked (returns how many)."""
        phc = passwords.hash_new_password(password)
        with self._changes:
            current = self._stored(name)
            revoked = self.store.set_password(name, phc)
            with self._lock:
                self._accounts[name] = replace(current, verifier=passwords.parse_hash(phc))
                self._forget_devices(name, None)
        return revoked

    def set_quota(self, name: str, quota_bytes: int | None) -> None:
        with self._changes:
            current = self._stored(name)
            self.store.set_quota(name, quota_bytes)
            with self._lock:
                self._accounts[name] = replace(current, quota_bytes=quota_bytes)

    def remove(self, name: str) -> None:
        with self._changes:
            self._stored(name)
            self.store.remove_account(name)
            with self._lock:
                self._accounts.pop(name, None)
                self._activity.pop(name, None)
                self._dirty_activity.discard(name)
                self._forget_devices(name, None)

    def revoke(self, name: str, ids: list[str] | None) -> list[str]:
        """Revoke the account's devices with these ids (None: all); the ids revoked."""
        with self._changes:
            if self.by_name(name) is None:
                raise UnknownAccount(f"there is no account {name!r}")
            gone = self.store.revoke_devices(name, ids)
            with self._lock:
                self._forget_devices(name, set(gone))
        return gone

    def _stored(self, name: str) -> StoreAccount:
        """The store account of that name; UnknownAccount if there is none (any more)."""
        account = self._accounts.get(name)
        if account is None:
            raise UnknownAccount(f"there is no account {name!r} in the account store")
        return account

    def _forget_devices(self, name: str, ids: set[str] | None) -> None:
        for hashed, device in list(self._devices.items()):
            if device.account == name and (ids is None or device.id in ids):
                del self._devices[hashed]
                del self._key_of[(name, device.id)]
                self._dirty_devices.pop((name, device.id), None)


def _same_password(checked: Account, current: Account | None) -> bool:
    """Whether `current` is still the account whose password `checked` was verified against."""
    if current is None:
        return False
    if isinstance(checked, StoreAccount) and isinstance(current, StoreAccount):
        return current.verifier is checked.verifier
    return current is checked
