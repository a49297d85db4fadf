"""Accounts from SYNC_USER1..N, validated once at start-up, with the official host keys.

A bad name, a duplicate or an unparsable hash stops start-up with the variable's name, never a
crash at first login. Host key = lowercase hex SHA-1 of the whole `SYNC_USERn` value
(`user:password` or `user:<PHC hash>`), exactly as the official server derives it, so devices
logged in there stay logged in after switching servers.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from ankihost.accounts import passwords
from ankihost.accounts.store import Account
from ankihost.config import ConfigError, Settings
from ankihost.errors import AuthFailed
from ankihost.storage.paths import folded, unsafe_name_reason

SOURCE = "env"
_DECOY_PASSWORD = "ankihost-decoy-password-never-valid"


def derived_host_key(name: str, secret: str) -> str:
    return hashlib.sha1(f"{name}:{secret}".encode()).hexdigest()


@dataclass(frozen=True, repr=False)
class EnvAccount(Account):
    host_key: str = ""
    # Exactly one of these is set: the plain password, or the parsed PHC hash.
    password: str | None = None
    password_hash: passwords.Verifier | None = None

    def check_password(self, given: str) -> bool:
        if self.password_hash is not None:
            return self.password_hash.verify(given)
        return passwords.plain_matches(self.password or "", given)


class EnvAccounts:
    """The `AccountSource` of the SYNC_USERn variables: fixed for the process's lifetime."""

    def __init__(self, accounts: list[EnvAccount]) -> None:
        self._by_name = {a.name: a for a in accounts}
        self._by_key = {a.host_key: a for a in accounts}

    @classmethod
    def from_settings(cls, settings: Settings) -> EnvAccounts:
        return cls(load_accounts(settings))

    def names(self) -> list[str]:
        return list(self._by_name)

    def by_name(self, name: str) -> EnvAccount | None:
        return self._by_name.get(name)

    def by_host_key(self, host_key: str) -> EnvAccount | None:
        return self._by_key.get(host_key) if host_key else None

    def check(self, name: str, password: str) -> EnvAccount:
        """The account, if the password is right; AuthFailed otherwise (same work either way)."""
        account = self._by_name.get(name)
        if account is None:
            self.same_work_as_a_real_check(password)
            raise AuthFailed(f"unknown user {name!r}")
        if not account.check_password(password):
            raise AuthFailed(f"wrong password for {name!r}")
        return account

    def login(self, name: str, password: str, client: str = "", ip: str = "") -> str:
        return self.check(name, password).host_key

    def same_work_as_a_real_check(self, password: str) -> None:
        """For an unknown name, do what checking a real account's password costs: a PBKDF2
        run against a configured hash, or a plain comparison when passwords are not hashed."""
        decoy = next((a.password_hash for a in self._by_name.values() if a.password_hash), None)
        if decoy is not None:
            decoy.verify(password)
        else:
            passwords.plain_matches(_DECOY_PASSWORD, password)


def load_accounts(settings: Settings) -> list[EnvAccount]:
    accounts: list[EnvAccount] = []
    seen: set[str] = set()
    for n, (name, secret) in enumerate(settings.users, start=1):
        variable = f"SYNC_USER{n}"
        if reason := unsafe_name_reason(name):
            raise ConfigError(f"{variable}: user name {name!r} {reason}")
        # Folders of names differing only in case would be one folder on macOS or Windows disks.
        if folded(name) in seen:
            raise ConfigError(f"{variable}: user name {name!r} is defined twice (ignoring case)")
        seen.add(folded(name))
        accounts.append(_make_account(variable, name, secret, settings.passwords_hashed))
    return accounts


def _make_account(variable: str, name: str, secret: str, hashed: bool) -> EnvAccount:
    key = derived_host_key(name, secret)
    if not hashed:
        if secret == "":
            raise ConfigError(f"{variable}: the password of {name!r} is empty")
        if passwords.looks_like_hash(secret):
            raise ConfigError(
                f"{variable}: the password of {name!r} looks like a PHC hash, but "
                "PASSWORDS_HASHED is not set; set PASSWORDS_HASHED=1 to use hashed passwords"
            )
        return EnvAccount(name, SOURCE, host_key=key, password=secret)
    try:
        parsed = passwords.parse_hash(secret)
    except passwords.HashFormatError as exc:
        raise ConfigError(f"{variable}: password hash for {name!r} is invalid: {exc}") from None
    return EnvAccount(name, SOURCE, host_key=key, password_hash=parsed)
