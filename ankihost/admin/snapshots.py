"""Admin operations on users' data: list and restore snapshots, back up the whole server,
export a collection. Each runs where the data is served (the server, or the command itself
when no server runs), under each user's lock and between their syncs; others never wait.

Checking an archive and unpacking one into a new folder touch nothing a server serves: the
command line does those itself (`cli/backup.py`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio

from ankihost.admin.operations import AdminContext, AdminError, text_arg
from ankihost.admin.progress import Meter
from ankihost.errors import SyncError
from ankihost.snapshots import backup, export, restore
from ankihost.snapshots.idle import WAIT_SECS
from ankihost.snapshots.retention import retention_of
from ankihost.snapshots.shelf import Snapshot


def _required(args: dict[str, Any], key: str) -> str:
    return text_arg(args, key, allow_empty=False)


def _path(args: dict[str, Any], key: str) -> Path:
    path = Path(_required(args, key))
    if not path.is_absolute():
        raise AdminError(f"{key} must be an absolute path, not {path}")
    return path


def _wait_secs(args: dict[str, Any]) -> float:
    """How long to wait for the user's sync to end: `wait_secs` when given (the web pages
    wait less than a command does, so a browser is answered), else WAIT_SECS."""
    value = args.get("wait_secs", WAIT_SECS)
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= WAIT_SECS:
        raise AdminError(f"wait_secs must be a number of seconds from 0 to {WAIT_SECS}")
    return float(value)



async def _refused_as_admin_error(work: Any) -> Any:
    """Run the core's coroutine; its refusals (SyncError) become AdminError with their status."""
    try:
        return await work
    except SyncError as exc:
        raise AdminError(exc.reason, exc.status) from None


def describe(snapshot: Snapshot) -> dict[str, Any]:
    header = snapshot.header
    return {
        "id": snapshot.id, "reason": snapshot.reason, "taken": snapshot.taken,
        "file_bytes": snapshot.file_bytes, "damaged": header is None,
        "collection_bytes": header.raw_bytes if header else None,
        "notes": header.notes if header else None, "cards": header.cards if header else None,
        "reviews": header.revlog if header else None,
    }


async def list_snapshots(ctx: AdminContext, args: dict[str, Any]) -> dict[str, Any]:
    name = _required(args, "name")
    state = ctx.user_state(name)
    policy = retention_of(ctx.settings)

    def listing() -> dict[str, Any]:
        state.snapshots.settle(policy)  # pending copies become snapshots first
        return {"name": name, "snapshots": [describe(s) for s in state.snapshots.list()],
                "disk_bytes": state.snapshots.disk_bytes()}

    await _refused_as_admin_error(state.ensure_prepared())  # prepared: a crash's work finished
    result: dict[str, Any] = await _refused_as_admin_error(anyio.to_thread.run_sync(listing))
    return result


async def restore_snapshot(ctx: AdminContext, args: dict[str, Any]) -> dict[str, Any]:
    name, id, wait_secs = _required(args, "name"), _required(args, "id"), _wait_secs(args)
    state = ctx.user_state(name)
    done = await _refused_as_admin_error(
        restore.restore(state, id, retention_of(ctx.settings), Meter(what=name), wait_secs=wait_secs))
    header = done.snapshot.header
    ctx.audit("snapshot.restored", name, snapshot=id, saved=done.saved or "none")
    return {"name": name, "restored": id, "saved": done.saved,
            "notes": header.notes if header else None, "cards": header.cards if header else None}


async def create_backup(ctx: AdminContext, args: dict[str, Any]) -> dict[str, Any]:
    dest = _path(args, "dest")
    result: dict[str, Any] = await _refused_as_admin_error(backup.create(
        ctx.registry, ctx.folder, dest, snapshots=bool(args.get("snapshots")), progress=Meter()))
    ctx.audit("backup.created", None, path=result["path"], files=result["files"])
    return result


async def export_collection(ctx: AdminContext, args: dict[str, Any]) -> dict[str, Any]:
    name, dest, wait_secs = _required(args, "name"), _path(args, "dest"), _wait_secs(args)
    state, media = ctx.user_state(name), bool(args.get("media", True))
    result: dict[str, Any] = await _refused_as_admin_error(export.export(
        state, dest, media=media, progress=Meter(what=name), wait_secs=wait_secs))
    # a page's download goes through a temporary file: its path would mean nothing later
    where = {"to": "download"} if args.get("download") else {"path": result["path"]}
    ctx.audit("collection.exported", name, media=media, **where)
    return {"name": name, **result}
