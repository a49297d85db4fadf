"""A `UserState` for in-process tests: an environment account over a given folder."""

from __future__ import annotations

from pathlib import Path

from ankihost.accounts.env import EnvAccount
from ankihost.registry import UserState
from ankihost.storage.paths import UserFolder


def make_state(root: Path, name: str = "alice", host_key: str = "hostkey") -> UserState:
    return UserState.create(EnvAccount(name, "env", host_key=host_key, password="pw"), UserFolder(root))
