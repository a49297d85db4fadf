"""Admin operations on accounts and devices: add, change the password, remove, set a quota,
list; list and revoke devices. Each takes effect on the running server at once.

Environment accounts (SYNC_USERn) are read-only here: changing them means changing the
variable and restarting, as with the official server, and the refusal says so.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from typing import Any, TypeVar

import anyio

from ankihost.accounts.directory import StoreAccount
from ankihost.accounts.env import EnvAccount
from ankihost.accounts.store import Account, DuplicateAccount, UnknownAccount
from ankihost.admin.operations import CONFLICT, NOT_FOUND, AdminContext, AdminError, text_arg
from ankihost.storage.paths import folded, unsafe_name_reason

MIB = 1024 * 1024
MAX_PASSWORD_CHARS = 1024
T = TypeVar("T")


async def _change(work: Callable[..., T], *args: Any) -> T:
    """A directory change in a worker thread; another command's change that got there first
    (the account is gone, or the name is taken) becomes the refusal it means."""
    try:
        return await anyio.to_thread.run_sync(work, *args)
    except UnknownAccount as exc:
        raise AdminError(str(exc), NOT_FOUND) from None
    except DuplicateAccount as exc:
        raise AdminError(str(exc), CONFLICT) from None



def _account(ctx: AdminContext, name: str) -> Account:
    account = ctx.directory.by_name(name)
    if account is None:
        raise AdminError(f"there is no user {name!r}", NOT_FOUND)
    return account


def _store_account(ctx: AdminContext, name: str, change: str) -> StoreAccount:
    account = _account(ctx, name)
    if not isinstance(account, StoreAccount):
        raise AdminError(
            f"{name!r} is defined by a SYNC_USERn variable in the server's environment, so its "
            f"{change} cannot be changed here: edit that variable and restart the server"
        )
    return account


def _password(args: dict[str, Any]) -> str:
    password = text_arg(args, "password")
    if not password:
        raise AdminError("the password is empty")
    if len(password) > MAX_PASSWORD_CHARS:
        raise AdminError(f"the password is longer than {MAX_PASSWORD_CHARS} characters")
    return password


def _quota(args: dict[str, Any]) -> int | None:
    megs = args.get("quota_mb")
    if megs is None:
        return None
    if not isinstance(megs, int) or isinstance(megs, bool) or megs < 1:
        raise AdminError("the quota must be a whole number of MB, at least 1, or none")
    return megs * MIB


async def add_user(ctx: AdminContext, args: dict[str, Any]) -> dict[str, Any]:
    name = text_arg(args, "name")
    if reason := unsafe_name_reason(name):
        raise AdminError(f"the user name {name!r} {reason}")
    clash = next((n for n in ctx.directory.names() if folded(n) == folded(name)), None)
    if clash is not None:
        where = "" if isinstance(ctx.directory.by_name(clash), StoreAccount) else (
            " (defined by a SYNC_USERn variable in the server's environment)")
        raise AdminError(f"a user named {clash!r} already exists{where}", CONFLICT)
    quota, password = _quota(args), _password(args)
    await _change(ctx.directory.add, name, password, quota)
    ctx.audit("account.added", name, quota_bytes=quota or "none")
    return {"name": name, "folder": str(ctx.folder.user(name).root)}


async def change_password(ctx: AdminContext, args: dict[str, Any]) -> dict[str, Any]:
    name = text_arg(args, "name")
    _store_account(ctx, name, "password")
    password = _password(args)
    revoked = await _change(ctx.directory.set_password, name, password)
    await ctx.registry.evict(name)  # roll back a sync of a device that just lost its key
    ctx.audit("account.password_changed", name, devices_revoked=revoked)
    return {"name": name, "devices_revoked": revoked}


async def remove_user(ctx: AdminContext, args: dict[str, Any]) -> dict[str, Any]:
    name = text_arg(args, "name")
    _store_account(ctx, name, "account")
    await _change(ctx.directory.remove, name)
    await ctx.registry.evict(name, removed=True)
    folder = ctx.folder.user(name).root
    delete = bool(args.get("delete_data"))
    if delete and folder.exists():
        await anyio.to_thread.run_sync(shutil.rmtree, folder)
    ctx.audit("account.removed", name, data="deleted" if delete else f"kept in {folder}")
    return {"name": name, "folder": str(folder), "data_deleted": delete}


async def set_quota(ctx: AdminContext, args: dict[str, Any]) -> dict[str, Any]:
    name = text_arg(args, "name")
    _store_account(ctx, name, "quota")
    quota = _quota(args)
    await _change(ctx.directory.set_quota, name, quota)
    ctx.audit("account.quota_set", name, quota_bytes=quota or "none")
    return {"name": name, "quota_bytes": quota}


async def list_users(ctx: AdminContext, args: dict[str, Any]) -> list[dict[str, Any]]:
    """Every user, or with `name` only that one (404 if there is no such user)."""
    if "name" in args:
        names = [_account(ctx, text_arg(args, "name")).name]
    else:
        names = sorted(ctx.directory.names(), key=str.casefold)
    return await anyio.to_thread.run_sync(lambda: [_describe(ctx, name) for name in names])


def _describe(ctx: AdminContext, name: str) -> dict[str, Any]:
    account = _account(ctx, name)
    folder = ctx.folder.user(name)
    activity = ctx.directory.activity(name)
    shared = isinstance(account, EnvAccount) and not ctx.directory.env_device_keys
    return {
        "name": name,
        "source": account.source,
        "collection_bytes": folder.collection_bytes(),
        "media_bytes": folder.media_bytes(),
        "quota_bytes": account.quota_bytes,
        "last_sync": activity.last_sync_at if activity else None,
        "last_result": activity.last_result if activity else None,
        "last_client": activity.last_client if activity else None,
        "devices": None if shared else len(ctx.directory.devices(name)),
    }


async def list_devices(ctx: AdminContext, args: dict[str, Any]) -> dict[str, Any]:
    name = text_arg(args, "name")
    account = _account(ctx, name)
    if isinstance(account, EnvAccount) and not ctx.directory.env_device_keys:
        return {"name": name, "shared_key": True, "devices": []}
    devices = [
        {"id": d.id, "client": d.client, "first_seen": d.first_seen, "last_seen": d.last_seen,
         "last_ip": d.last_ip}
        for d in ctx.directory.devices(name)
    ]
    return {"name": name, "shared_key": False, "devices": devices}


async def revoke_devices(ctx: AdminContext, args: dict[str, Any]) -> dict[str, Any]:
    name = text_arg(args, "name")
    account = _account(ctx, name)
    if isinstance(account, EnvAccount) and not ctx.directory.env_device_keys:
        raise AdminError(
            f"{name!r} is a SYNC_USERn account whose devices share one login derived from its "
            "password (as with the official server); change the password in SYNC_USERn and "
            "restart to log them all out, or set ANKIHOST_ENV_DEVICE_KEYS=1 for a key per device"
        )
    ids = args.get("ids")
    if ids is not None and not (isinstance(ids, list) and ids and all(isinstance(i, str) for i in ids)):
        raise AdminError("name the devices to revoke, or all of them")
    if ids is not None:
        known = {d.id for d in ctx.directory.devices(name)}
        if unknown := [i for i in ids if i not in known]:
            raise AdminError(f"{name!r} has no device {', '.join(unknown)}", NOT_FOUND)
    revoked = await _change(ctx.directory.revoke, name, ids)
    await ctx.registry.drop_revoked_session(name)  # a sync it had started is rolled back
    ctx.audit("device.revoked", name, devices=",".join(revoked) or "none")
    return {"name": name, "revoked": revoked}

