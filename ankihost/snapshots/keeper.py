"""The server's background snapshot work: compressing pending copies, retention, and a periodic
snapshot of each collection that changed since its last one.

One task in the server's lifespan goes round the users. A copy is made under the user's lock
only when no sync of theirs is running (else the user is tried again next round) and takes as
long as SQLite's backup API needs; compressing runs in a worker thread with no lock held. Users
never wait for each other, and a collection that did not change is not even opened.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time

import anyio

from ankihost.errors import SessionConflict, SyncError
from ankihost.registry import Registry, UserState
from ankihost.snapshots.idle import when_idle
from ankihost.snapshots.retention import Retention
from ankihost.snapshots.shelf import PERIODIC, Snapshot
from ankihost.storage.collection import has_content, read_col
from ankihost.storage.paths import UserFolder

log = logging.getLogger(__name__)

MAX_TICK_SECS = 60.0
MIN_TICK_SECS = 0.5
# Age-based retention is applied to every user this often (and after each new snapshot).
PRUNE_EVERY_SECS = 3600.0


async def settle(state: UserState, policy: Retention) -> None:
    """If the user has pending copies, compress them and apply retention, in a worker thread
    (no lock: the snapshots folder has its own). Logged, never raised: it runs after replies."""
    try:
        if state.snapshots.has_pending():
            await anyio.to_thread.run_sync(state.snapshots.settle, policy)
    except (SyncError, OSError, sqlite3.Error):
        log.exception("could not finish the snapshots of %s", state.name)


class SnapshotKeeper:
    def __init__(self, registry: Registry, policy: Retention, interval_hours: float) -> None:
        self.registry = registry
        self.policy = policy
        self.interval_secs = interval_hours * 3600
        self.tick_secs = min(MAX_TICK_SECS, max(MIN_TICK_SECS, self.interval_secs / 4 or MAX_TICK_SECS))
        # Per user: the collection's modification time when it was last found unchanged, when
        # (time.time()) the next periodic snapshot is due, when retention last ran.
        self._unchanged_at: dict[str, float] = {}
        self._due: dict[str, float] = {}
        self._pruned_at: dict[str, float] = {}

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.tick_secs)
            try:
                await self.round()
            except Exception:
                log.exception("the snapshot round failed")

    async def round(self) -> list[str]:
        """One pass over every user; the names of those snapshotted."""
        taken = []
        for name in self.registry.accounts.names():
            state = self.registry.by_name(name)
            if state is None or state.removed:
                continue
            try:
                if await self._periodic(state):
                    taken.append(name)
                await self._tidy(state, force=name in taken)
            except (SyncError, OSError, sqlite3.Error) as exc:
                log.warning("snapshot of %s failed: %s", name, exc)
        return taken

    async def _tidy(self, state: UserState, *, force: bool) -> None:
        now = time.monotonic()
        due = now - self._pruned_at.get(state.name, float("-inf")) >= PRUNE_EVERY_SECS
        if force or due or state.snapshots.has_pending():
            await anyio.to_thread.run_sync(state.snapshots.settle, self.policy)
            self._pruned_at[state.name] = now

    async def _periodic(self, state: UserState) -> bool:
        if not self.interval_secs or time.time() < self._due.get(state.name, 0) or state.lock.locked():
            return False  # (a user busy now is tried again next round)
        modified = _modified(state.folder)  # (checked first: cheaper than reading the snapshots)
        if modified is None or self._unchanged_at.get(state.name) == modified:
            return False
        latest = await anyio.to_thread.run_sync(state.snapshots.latest)
        if latest is not None and time.time() - latest.taken < self.interval_secs:
            self._due[state.name] = latest.taken + self.interval_secs
            return False
        try:
            made = await when_idle(state, _take_if_changed, state, latest, wait_secs=0)
        except SessionConflict:
            return False  # syncing now: next round
        if not made:
            self._unchanged_at[state.name] = modified
        return made


def _modified(folder: UserFolder) -> float | None:
    """When the collection file (or its WAL) last changed; None when there is none."""
    times = []
    for path in (folder.collection, folder.collection.with_name(folder.collection.name + "-wal")):
        try:
            times.append(path.stat().st_mtime)
        except FileNotFoundError:
            pass
    return max(times) if times else None


def _take_if_changed(state: UserState, latest: Snapshot | None) -> bool:
    """Under the user's lock: a pending copy when the collection has content and its `mod` or
    `usn` differs from the latest snapshot's."""
    db = state.collection.connection()
    if not has_content(db):
        return False
    col = read_col(db)
    header = latest.header if latest is not None else None
    if header is not None and (header.col_mod, header.col_usn) == (col.mod, col.usn):
        return False
    state.snapshots.capture(db, PERIODIC)
    return True
