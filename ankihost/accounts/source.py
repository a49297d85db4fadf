"""The interface between the server and where its accounts come from.

The registry and the login step only ever talk to an `AccountSource`: look an account up by
name or by a device's host key, and exchange a name and password for a host key. A source
decides how keys are made and checked; every source refuses unknown names and wrong passwords
alike, after the same amount of work.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Account:
    name: str
    # where the account is defined, as shown to admins ("env": a SYNC_USERn variable)
    source: str

    def __repr__(self) -> str:  # never show secrets, whatever a subclass holds
        return f"{type(self).__name__}({self.name!r})"


class AccountSource(Protocol):
    def names(self) -> list[str]:
        """Every account's name."""
        ...

    def by_name(self, name: str) -> Account | None: ...

    def by_host_key(self, host_key: str) -> Account | None:
        """The account a device's host key belongs to; None for an unknown or revoked key."""
        ...

    def login(self, name: str, password: str) -> str:
        """The host key for a correct name and password; AuthFailed otherwise."""
        ...
