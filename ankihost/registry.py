"""All mutable state shared across requests: one `UserState` per configured user.

Each user has their own lock; nothing here is global to all users, so one user's upload never
waits for another's. The web layer runs the synchronous core through `UserState.locked`: it
takes `state.lock` (an asyncio lock, so waiting costs no thread), then runs the work in a
worker thread with the state in hand, or, for bounded work that does not wait on the disk,
right on the event loop.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import anyio

from ankihost import media
from ankihost.storage import schema
from ankihost.storage.paths import UserFolder
from ankihost.users import User

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass
class UserState:
    user: User
    folder: UserFolder
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    # The open collection connection, kept across requests (None = closed).
    db: sqlite3.Connection | None = None
    # The active normal-sync session (ankihost.sync.session.SyncSession) or None.
    session: Any = None
    # The media index of this user, opened lazily by ankihost.media (None = not open).
    media: Any = None

    async def locked(
        self, work: Callable[..., T], *args: Any, inline: Callable[[], bool] | None = None
    ) -> T:
        """`work(*args)` holding this user's lock throughout: right here on the event loop
        when `inline()`, asked under the lock, says so (bounded work that does not wait on
        the disk; see `sync/handlers.py: INLINE` for why), else in a worker thread (anyio
        waits for the thread even if the caller is cancelled, so the lock never outlives
        it)."""
        async with self.lock:
            if inline is not None and inline():
                return work(*args)
            return await anyio.to_thread.run_sync(work, *args)

    def collection(self) -> sqlite3.Connection:
        """The open collection, opened (and for a new user created empty) on first use."""
        if self.db is None:
            self.db = schema.open_or_create(self.folder.collection)
        return self.db

    def idle_and_open(self) -> bool:
        """The collection is open, with no sync session and no transaction running."""
        return self.session is None and self.db is not None and not self.db.in_transaction

    def abort_session(self) -> None:
        """End an active sync session with a rollback; the collection stays open.

        A rollback only drops the session's pages from the WAL, so this is cheap enough
        for the event loop; closing would checkpoint and fsync. The collection is closed
        (and reopened on next use) only if the rollback itself fails."""
        self.session = None
        db = self.db
        if db is not None and db.in_transaction:
            try:
                db.execute("rollback")
            except sqlite3.Error:
                log.warning("rollback failed; closing the collection", exc_info=True)
                self.db = None
                db.close()  # closing drops the uncommitted transaction too

    def close_collection(self) -> None:
        """Roll back anything uncommitted (an abandoned sync) and close the collection."""
        self.session = None
        if self.db is not None:
            db, self.db = self.db, None
            try:
                if db.in_transaction:
                    db.execute("rollback")
            finally:
                db.close()


class Registry:
    def __init__(self, users: list[User], folders: dict[str, UserFolder]) -> None:
        self._by_key = {u.host_key: UserState(u, folders[u.name]) for u in users}
        self._by_name = {s.user.name: s for s in self._by_key.values()}

    def by_host_key(self, host_key: str) -> UserState | None:
        return self._by_key.get(host_key) if host_key else None

    def by_name(self, name: str) -> UserState | None:
        return self._by_name.get(name)

    def decoy_hash(self) -> Any:
        """A configured user's password hash, verified for unknown names to equalise timing."""
        return next((s.user.password_hash for s in self._by_name.values() if s.user.password_hash), None)

    def all(self) -> list[UserState]:
        return list(self._by_name.values())

    @staticmethod
    def close_user(state: UserState) -> None:
        """Roll back the user's open sync session and close their databases; the caller
        holds the user's lock."""
        try:
            state.close_collection()
            media.close_index(state)
        except sqlite3.Error:
            log.exception("closing the databases of %s", state.user.name)
