"""Full sync: `upload` replaces the user's collection with the client's, `download` sends it.

An upload arrives already decompressed into a temp file in the user's folder. It is checked
as a collection before anything is touched (a schema-11 one, from protocol 8–10, is upgraded
first), then swapped in atomically; a replaced collection with any note, card or review is kept
as a snapshot (a hard link under the lock, compressed after the reply: `snapshots/shelf.py`).
A download is a checkpointed copy of the collection, taken under the user's lock and streamed
after it is released (for protocol 8–10, converted to schema 11 first; the stored file never
is).
"""

from __future__ import annotations

import logging
import shutil
import sqlite3
from functools import partial
from pathlib import Path

from ankihost.accounts import quota
from ankihost.errors import ServerError, SyncError
from ankihost.protocol.request import SyncRequest
from ankihost.protocol.response import Reply, file_reply, refusal_reply, text_reply
from ankihost.registry import UserState
from ankihost.snapshots.shelf import UPLOAD
from ankihost.storage import collection, schema, schema11
from ankihost.storage.paths import atomic_replace, remove_sidecars

log = logging.getLogger(__name__)

UPLOAD_OK = "OK"
CORRUPT_MESSAGE = "Your upload was corrupt. Please use Check Database, or restore from backup."
TOO_LARGE_MESSAGE = "collection exceeds size limit"


def check_upload(path: Path, size: int) -> str | None:
    """Why the uploaded file cannot become the user's collection (None = it can). A schema-11
    file (what clients on protocol 8–10 upload) is checked and upgraded to schema 18 in place.

    Runs before the user's lock is taken: it reads and writes only the temp file.
    """
    if size == 0:
        return "empty upload"
    if schema11.declares_schema11(path):
        problem = schema11.upgrade_in_place(path)
    else:
        problem = schema.upload_problem(path)
    remove_sidecars(path)
    return problem


def install_upload(state: UserState, uploaded: Path) -> Reply:
    """Under the user's lock: abort any session, keep the old collection as a snapshot, swap
    the new one in; unless the new file would take the user past their quota (the stored one
    stays)."""
    if (limit := state.account.quota_bytes) is not None:
        size = uploaded.stat().st_size
        growth = size - state.folder.collection_bytes()
        used_after = size + state.media.index().totals().total_bytes
        if message := quota.refusal(limit, used_after, growth):
            discard_upload(uploaded)
            return refusal_reply(message, "quota", f"over quota ({used_after} bytes)")
    live = state.folder.collection
    if live.exists():
        _keep_as_snapshot(state)
    state.collection.close()
    remove_sidecars(live)
    try:
        atomic_replace(uploaded, live)
    except OSError as exc:
        raise ServerError(f"could not store upload: {exc}") from exc
    return text_reply(UPLOAD_OK)


def _keep_as_snapshot(state: UserState) -> None:
    """Close the collection about to be replaced and keep it as a pending snapshot, unless it
    holds nothing (no note, card or review). One that cannot be opened is kept all the same."""
    try:
        db = state.collection.connection()
        state.collection.abort_session()
        worth_keeping = collection.has_content(db)
    except (SyncError, sqlite3.Error) as exc:
        log.warning("keeping the unreadable collection of %s as a snapshot: %s", state.name, exc)
        worth_keeping = True
    state.collection.close()
    live = state.folder.collection
    collection.fold_wal(live)  # the swap deletes the -wal
    if worth_keeping:
        try:
            state.snapshots.capture_file(live, UPLOAD)
        except OSError as exc:
            raise ServerError(f"could not keep the replaced collection: {exc}") from exc


def discard_upload(uploaded: Path) -> None:
    """Remove an upload that will not be installed; the stored collection is untouched."""
    uploaded.unlink(missing_ok=True)
    remove_sidecars(uploaded)


def refuse_too_large(uploaded: Path, limit: int) -> Reply:
    """The reply for an upload over the size limit (the client shows it)."""
    discard_upload(uploaded)
    return refusal_reply(TOO_LARGE_MESSAGE, "too_large", f"over {limit} bytes decompressed")


def refuse_corrupt(reason: str, uploaded: Path) -> Reply:
    """The reply for an upload that is not a collection we can serve (the client shows it)."""
    discard_upload(uploaded)
    return refusal_reply(CORRUPT_MESSAGE, "corrupt", f"not a collection: {reason}")


def download(state: UserState, request: SyncRequest) -> Reply:
    """Bump usn and mod, then hand out a consistent copy (spec 01 §3.4). Clients on protocol
    8–10 get it as schema 11, converted once the user's lock is released."""
    request.json_object()  # clients send {"_pad": null}; any object is accepted
    state.collection.abort_session()
    db = state.collection.connection()
    collection.mark_downloaded(db)
    if not collection.checkpoint(db):
        raise ServerError("could not checkpoint the collection for download")
    copy = state.folder.new_download_path()
    try:
        shutil.copyfile(state.folder.collection, copy)
    except OSError as exc:
        copy.unlink(missing_ok=True)
        raise ServerError(f"could not copy collection: {exc}") from exc
    if request.is_legacy:
        return file_reply(copy, delete_after=True, before_send=partial(_downgrade, copy))
    return file_reply(copy, delete_after=True)


def _downgrade(copy: Path) -> None:
    """The download copy as schema 11 in rollback-journal mode: what old clients open."""
    schema11.downgrade_in_place(copy)
    remove_sidecars(copy)
