"""The admin operations, one table for every way of asking: the command line (through the
running server's channel, or by itself when no server runs), the admin page and the account
page (in process, through `AdminContext.acting_as` so the audit trail names them).

An operation is `async def op(ctx, args) -> result`: `args` and the result are plain JSON
values, so the same call crosses the channel unchanged. It changes state only through the
account directory and the registry in `ctx` (never opening a user's collection behind the
registry's back), and refuses with an `AdminError` whose message says what is wrong and how
to fix it. `open_context` builds what the operations need; the server builds it once.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any

from ankihost.accounts.audit import Audit
from ankihost.accounts.directory import AccountDirectory
from ankihost.accounts.env import EnvAccounts
from ankihost.accounts.sqlite import SqliteAccountStore
from ankihost.accounts.store import StoreError
from ankihost.config import ConfigError, Settings
from ankihost.registry import Registry, UserState
from ankihost.storage.paths import DataFolder, folded

NOT_FOUND, CONFLICT, INVALID = 404, 409, 400


class AdminError(Exception):
    """An operation was refused; nothing was changed. `status` is its HTTP equivalent."""

    def __init__(self, message: str, status: int = INVALID) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


def text_arg(args: dict[str, Any], key: str, *, allow_empty: bool = True) -> str:
    """The operation's argument `key`, a string (AdminError "missing" when it is not)."""
    value = args.get(key)
    if not isinstance(value, str) or not (value or allow_empty):
        raise AdminError(f"{key} is missing")
    return value


@dataclass
class AdminContext:
    settings: Settings
    folder: DataFolder
    directory: AccountDirectory
    registry: Registry
    # who asks, for the audit trail ("admin page", "account page"); None: the Audit's own actor
    actor: str | None = None

    def acting_as(self, actor: str) -> AdminContext:
        """The same context, with changes recorded as made by `actor`."""
        return replace(self, actor=actor)

    def user_state(self, name: str) -> UserState:
        """The state of the user called `name`; AdminError 404 when there is none."""
        state = self.registry.by_name(name)
        if state is None:
            raise AdminError(f"there is no user {name!r}", NOT_FOUND)
        return state

    def audit(self, event: str, account: str | None, **detail: object) -> None:
        self.directory.audit.record(event, account, actor=self.actor, **detail)

    def close(self) -> None:
        """Write the account store's pending changes and close it. The users' databases are
        closed by whoever opened the context: the runner (a command alone) or the server's
        shutdown, each user under their lock (`web/app.close_all`)."""
        self.directory.flush()
        self.directory.store.close()


Operation = Callable[[AdminContext, dict[str, Any]], Awaitable[Any]]


def open_context(settings: Settings, actor: str) -> AdminContext:
    """Accounts from the environment and the store, and a registry over them. The caller holds
    the data-folder lock. ConfigError for a bad store or a name defined in both places."""
    folder = DataFolder(settings.base)
    env = EnvAccounts.from_settings(settings)
    try:
        store = SqliteAccountStore.open(folder.accounts_db)
    except StoreError as exc:
        raise ConfigError(str(exc)) from None
    _match_owner(folder)
    folder.remove_leftovers()
    try:
        directory = AccountDirectory(
            env, store, Audit(store, actor), env_device_keys=settings.env_device_keys
        )
        _refuse_names_in_both(settings, env, directory)
    except BaseException:
        store.close()
        raise
    registry = Registry(directory, folder, media_trash_days=settings.media_trash_days)
    return AdminContext(settings, folder, directory, registry)


def _refuse_names_in_both(settings: Settings, env: EnvAccounts, directory: AccountDirectory) -> None:
    for n, (name, _) in enumerate(settings.users, start=1):
        for stored in directory.store_names():
            if folded(stored) == folded(name):
                raise ConfigError(
                    f"SYNC_USER{n} defines {name!r}, and the account store ({directory.store.path}) "
                    f"has an account {stored!r}: remove one of them (`ankihost user remove "
                    f"{stored}` keeps its data)"
                )


def _match_owner(folder: DataFolder) -> None:
    """An admin command run as root (say, `docker exec`) must not leave files the server, running
    as the data folder's owner, cannot write: give them that owner."""
    if os.geteuid() != 0:
        return
    owner = os.stat(folder.base)
    for path in (folder.state, folder.lock, folder.accounts_db):
        for candidate in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
            if candidate.exists():
                os.chown(candidate, owner.st_uid, owner.st_gid)


def operations() -> dict[str, Operation]:
    """Every operation by name (imported here so the table is complete in one place)."""
    from ankihost.admin import accounts, media, snapshots

    return {
        "user.add": accounts.add_user,
        "user.passwd": accounts.change_password,
        "user.remove": accounts.remove_user,
        "user.set": accounts.set_quota,
        "user.list": accounts.list_users,
        "device.list": accounts.list_devices,
        "device.revoke": accounts.revoke_devices,
        "snapshot.list": snapshots.list_snapshots,
        "snapshot.restore": snapshots.restore_snapshot,
        "backup.create": snapshots.create_backup,
        "export.create": snapshots.export_collection,
        "media.trash": media.list_trash,
        "media.restore": media.restore_files,
    }
