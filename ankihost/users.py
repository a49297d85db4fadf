"""The account store: users from SYNC_USER1..N, validated once at start-up.

The only code that turns configuration into `User` records. A bad name, a duplicate or an
unparsable hash stops start-up with the variable's name, never a crash at first login.
"""

from __future__ import annotations

from dataclasses import dataclass

from ankihost import auth
from ankihost.config import ConfigError, Settings
from ankihost.storage.paths import unsafe_name_reason


@dataclass(frozen=True)
class User:
    name: str
    host_key: str
    # Exactly one of these is set: the plain password, or the parsed PHC hash.
    password: str | None = None
    password_hash: auth.PasswordHash | None = None

    def __repr__(self) -> str:  # never show secrets
        return f"User({self.name!r})"

    def check_password(self, given: str) -> bool:
        if self.password_hash is not None:
            return self.password_hash.verify(given)
        return auth.plain_matches(self.password or "", given)


def load_users(settings: Settings) -> list[User]:
    users: list[User] = []
    seen: set[str] = set()
    for n, (name, secret) in enumerate(settings.users, start=1):
        variable = f"SYNC_USER{n}"
        if reason := unsafe_name_reason(name):
            raise ConfigError(f"{variable}: user name {name!r} {reason}")
        # Folders of names differing only in case would be one folder on macOS or Windows disks.
        if name.casefold() in seen:
            raise ConfigError(f"{variable}: user name {name!r} is defined twice (ignoring case)")
        seen.add(name.casefold())
        users.append(_make_user(variable, name, secret, settings.passwords_hashed))
    return users


def _make_user(variable: str, name: str, secret: str, hashed: bool) -> User:
    key = auth.host_key(name, secret)
    if not hashed:
        return User(name, key, password=secret)
    try:
        parsed = auth.PasswordHash.parse(secret)
    except auth.HashFormatError as exc:
        raise ConfigError(f"{variable}: password hash for {name!r} is invalid: {exc}") from None
    return User(name, key, password_hash=parsed)
