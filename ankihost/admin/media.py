"""Admin operations on a user's media trash: list it, and put files back from it.

Both run under the user's lock through the registry, like a sync step: a restore waits for a
media sync in progress to end and never touches the media behind it. A restored file is a new
server change that every device downloads at its next media sync.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable
from typing import Any, TypeVar

from ankihost.admin.operations import CONFLICT, AdminContext, AdminError, text_arg
from ankihost.errors import SyncError
from ankihost.media import restore
from ankihost.media.trash import SECONDS_PER_DAY
from ankihost.registry import UserState

log = logging.getLogger(__name__)
T = TypeVar("T")
# The most file names one restore may name (the command line's own limit is far above).
MAX_RESTORE_FILES = 10_000



def _files(args: dict[str, Any]) -> list[str]:
    files = args.get("files")
    if not (isinstance(files, list) and files and all(isinstance(f, str) for f in files)):
        raise AdminError("name the media files to restore")
    if len(files) > MAX_RESTORE_FILES:
        raise AdminError(f"at most {MAX_RESTORE_FILES} files at once")
    return files



async def _locked(state: UserState, work: Callable[..., T], *args: Any) -> T:
    try:
        return await state.locked(work, *args)
    except SyncError as exc:  # the account was removed meanwhile
        raise AdminError(f"{state.name!r}: {exc.reason or type(exc).__name__}") from None
    except (OSError, sqlite3.Error) as exc:
        log.exception("media trash of %s", state.name)
        raise AdminError(f"the media of {state.name!r} cannot be read or changed: {exc}") from None


async def list_trash(ctx: AdminContext, args: dict[str, Any]) -> dict[str, Any]:
    name = text_arg(args, "name")
    state = ctx.user_state(name)
    entries = await _locked(state, state.media.trash_entries)
    days = state.media.trash.days
    files = [
        {"file": e.name, "size": e.size, "sha1": e.sha1.hex(), "trashed_at": e.trashed_at,
         "expires_at": e.trashed_at + days * SECONDS_PER_DAY, "usn": e.usn, "id": e.id}
        for e in entries
    ]
    return {"name": name, "days": days, "files": files,
            "total_bytes": sum(e.size for e in entries)}


async def restore_files(ctx: AdminContext, args: dict[str, Any]) -> dict[str, Any]:
    name, files = text_arg(args, "name"), _files(args)
    state = ctx.user_state(name)
    try:
        result = await _locked(state, restore.restore, state.media, files)
    except restore.RestoreRefused as refused:
        raise AdminError(f"nothing was restored: {refused}", CONFLICT) from None
    if result.restored:
        ctx.audit("media.restored", name, files=len(result.restored), usn=result.usn)
    return {"name": name, "restored": result.restored, "already_there": result.already_there,
            "usn": result.usn}
