"""Every account the server knows, from the environment and from the account store, and
which host key belongs to whom: the `AccountSource` the registry and the login step use.

Environment accounts keep the official derived host key (devices switch between ankihost and
the official server without logging in again) unless ANKIHOST_ENV_DEVICE_KEYS gives them a key
per device. Store accounts always get a key per device. Keys are looked up in memory (a dict of
key hashes, loaded once); when and from where each device was last seen, and each user's last
sync, are kept in memory and written to the store by `flush` every few seconds.
All changes to accounts and devices go through here, so the caches never go stale.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, replace

from ankihost.accounts import passwords
from ankihost.accounts.audit import Audit
from ankihost.accounts.env import EnvAccount, EnvAccounts
from ankihost.accounts.store import Account, AccountStore, Activity, Device, StoredAccount, key_hash, new_host_key
from ankihost.errors import AuthFailed

STORE = "store"
# Verified for an unknown name when the store has accounts, so it costs what a real check does.
_DECOY_HASH = passwords.hash_new_password("ankihost-decoy-password-never-valid")


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
        self._lock = threading.Lock()
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
        return None if account is None else Credential(account, device)

    def login(self, name: str, password: str, client: str = "", ip: str = "") -> str:
        account = self._checked(name, password)
        if isinstance(account, EnvAccount) and not self.env_device_keys:
            self.audit.record("login", name, client=client, ip=ip)
            return account.host_key
        key = new_host_key()
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
                passwords.parse_hash(_DECOY_HASH).verify(password)
                raise AuthFailed(f"unknown user {name!r}")
            return self.env.check(name, password)
        if stored.verifier is None or not stored.verifier.verify(password):
            raise AuthFailed(f"wrong password for {name!r}")
        return stored

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
        with self._lock:
            self._activity[name] = Activity(name, int(time.time()), result, client, ip)
            self._dirty_activity.add(name)

    def activity(self, name: str) -> Activity | None:
        return self._activity.get(name)

    def flush(self) -> None:
        """Write what changed since the last flush to the store (from a worker thread)."""
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
        stored = self.store.add_account(name, passwords.hash_new_password(password), quota_bytes)
        account = StoreAccount.of(stored)
        with self._lock:
            self._accounts[name] = account
        return account

    def set_password(self, name: str, password: str) -> int:
        """A new password for a store account; every device key is revoked (returns how many)."""
        phc = passwords.hash_new_password(password)
        revoked = self.store.set_password(name, phc)
        with self._lock:
            self._accounts[name] = replace(self._accounts[name], verifier=passwords.parse_hash(phc))
            self._forget_devices(name, None)
        return revoked

    def set_quota(self, name: str, quota_bytes: int | None) -> None:
        self.store.set_quota(name, quota_bytes)
        with self._lock:
            self._accounts[name] = replace(self._accounts[name], quota_bytes=quota_bytes)

    def remove(self, name: str) -> None:
        self.store.remove_account(name)
        with self._lock:
            self._accounts.pop(name, None)
            self._activity.pop(name, None)
            self._forget_devices(name, None)

    def revoke(self, name: str, ids: list[str] | None) -> list[str]:
        """Revoke the account's devices with these ids (None: all); the ids revoked."""
        gone = self.store.revoke_devices(name, ids)
        with self._lock:
            self._forget_devices(name, set(gone))
        return gone

    def _forget_devices(self, name: str, ids: set[str] | None) -> None:
        for hashed, device in list(self._devices.items()):
            if device.account == name and (ids is None or device.id in ids):
                del self._devices[hashed]
                del self._key_of[(name, device.id)]
                self._dirty_devices.pop((name, device.id), None)
