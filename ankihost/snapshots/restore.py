"""Putting a snapshot back as a user's collection while the server runs.

The snapshot is expanded beside the collection and checked (zstd's checksum, the size, the
schema and SQLite's integrity check) before anything is touched; its `scm` and `mod` are set to
now, so every device is told at its next sync that a full sync is required (the server cannot
choose the direction for a device that has content: the user must choose Download). Then,
under the user's lock and between their syncs (`idle.when_idle`), the current collection is
snapshotted and the checked file renamed over it. A kill at any point leaves the old collection
or the restored one, never a mix: the rename is the one step that changes it.
"""

from __future__ import annotations

import logging
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path

import anyio

from ankihost.errors import BadRequest, NotFound, ServerError, SyncError
from ankihost.registry import UserState
from ankihost.snapshots import compressed
from ankihost.snapshots.idle import WAIT_SECS, when_idle
from ankihost.snapshots.progress import Progress
from ankihost.snapshots.retention import Retention
from ankihost.snapshots.shelf import RESTORE, Snapshot, pending_id
from ankihost.storage import schema
from ankihost.storage.collection import atomic, connect, fold_wal, now_millis
from ankihost.storage.paths import atomic_replace, remove_sidecars

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Restored:
    snapshot: Snapshot
    saved: str | None  # the id of the snapshot of the collection it replaced (None: none)


async def restore(state: UserState, id: str, policy: Retention, progress: Progress,
                  wait_secs: float = WAIT_SECS) -> Restored:
    """Make snapshot `id` the user's collection. NotFound for an unknown id, BadRequest for a
    snapshot that fails its checks, SessionConflict when a sync is still running after
    `wait_secs`: in each case nothing was changed."""
    await state.ensure_prepared()  # the folder prepared (a crash's leftovers gone) first
    await anyio.to_thread.run_sync(state.snapshots.settle, None)
    snapshot = await anyio.to_thread.run_sync(state.snapshots.find, id)
    if snapshot is None:
        raise NotFound(f"{state.name!r} has no snapshot {id!r} (`ankihost snapshot list "
                       f"{state.name}` shows them)")
    candidate = state.folder.new_restore_path()
    try:
        progress.say(f"checking snapshot {id}")
        await anyio.to_thread.run_sync(_prepare, snapshot, candidate, progress)

        def waiting(secs: float) -> None:
            progress.say(f"waiting for {state.name}'s sync to end ({secs:.0f} s)")

        saved = await when_idle(state, _swap, state, candidate, wait_secs=wait_secs, on_wait=waiting)
    finally:
        candidate.unlink(missing_ok=True)
        remove_sidecars(candidate)
    await anyio.to_thread.run_sync(state.snapshots.settle, policy)
    log.info("restored snapshot %s of %s (the collection it replaced: snapshot %s)", id,
             state.name, saved)
    return Restored(snapshot, saved)


def _prepare(snapshot: Snapshot, candidate: Path, progress: Progress) -> None:
    """Expand and check the snapshot into `candidate`, and mark it as changed everywhere."""
    if snapshot.header is None:
        raise BadRequest(f"snapshot {snapshot.id} is damaged (its header cannot be read); "
                         "nothing was changed")
    try:
        compressed.expand(snapshot.path, candidate, progress.add)
    except BadRequest as exc:
        raise BadRequest(f"{exc.reason}; nothing was changed") from None
    problem = schema.upload_problem(candidate)
    remove_sidecars(candidate)
    if problem is not None:
        raise BadRequest(f"snapshot {snapshot.id} fails its check ({problem}); nothing was changed")
    _mark_changed(candidate)


def _mark_changed(path: Path) -> None:
    """`scm` and `mod` to now: each device then finds both differ from its own and asks for a
    full sync (spec 05 §3), whatever it last saw."""
    try:
        db = connect(path)
        try:
            now = now_millis()
            with atomic(db):
                db.execute("update col set scm = ?, mod = ?", (now, now))
            db.execute("pragma wal_checkpoint(truncate)")
        finally:
            db.close()
    except sqlite3.Error as exc:
        raise ServerError(f"could not prepare the restored collection: {exc}") from exc
    remove_sidecars(path)
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


def _swap(state: UserState, candidate: Path) -> str | None:
    """Under the user's lock, no sync running: snapshot the current collection, then rename
    the prepared file over it. The id of the snapshot taken (None when there was nothing)."""
    live = state.folder.collection
    saved = None
    if live.exists():
        try:
            saved = state.snapshots.capture(state.collection.connection(), RESTORE)
        except (SyncError, sqlite3.Error) as exc:  # unreadable: kept as it is on disk
            log.warning("keeping the unreadable collection of %s as it is: %s", state.name, exc)
            state.collection.close()
            fold_wal(live)
            saved = state.snapshots.capture_file(live, RESTORE)
    state.collection.close()
    remove_sidecars(live)  # a clean close left none; any other holds what the snapshot holds
    atomic_replace(candidate, live)
    return None if saved is None else pending_id(saved)
