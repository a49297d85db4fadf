"""All mutable state shared across requests: one `UserState` per user, made when first needed.

The registry asks its account source who a host key belongs to and keeps one `UserState` per
account name, created on first use. Each user has their own lock; nothing here is global to all
users, so one user's upload never waits for another's. The web layer runs the synchronous core
through `UserState.locked`: it takes `state.lock` (an asyncio lock, so waiting costs no
thread), then runs the work in a worker thread with the state in hand, or, for bounded work
that does not wait on the disk, right on the event loop. `Registry.evict` closes one user's
databases under that user's lock (what removing, revoking, restoring and moving need).
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import anyio

from ankihost.accounts.directory import AccountDirectory
from ankihost.accounts.store import Account
from ankihost.errors import AuthFailed
from ankihost.media import trash
from ankihost.media.user_media import UserMedia
from ankihost.snapshots.shelf import UserSnapshots
from ankihost.storage.paths import DataFolder, UserFolder
from ankihost.sync.session import UserCollection

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(eq=False)
class UserState:
    account: Account
    folder: UserFolder
    collection: UserCollection
    media: UserMedia
    snapshots: UserSnapshots
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    # The folder was checked and cleaned of a crash's leftovers (once per process).
    prepared: bool = False
    # The account is gone: requests still waiting for the lock are refused.
    removed: bool = False
    # When work under the lock last ended (time.monotonic()): how long the user has been idle.
    last_used: float = field(default_factory=time.monotonic)

    @classmethod
    def create(
        cls, account: Account, folder: UserFolder, media_trash_days: int = trash.DEFAULT_DAYS
    ) -> UserState:
        return cls(account, folder, UserCollection(folder), UserMedia(folder, media_trash_days),
                   UserSnapshots(folder))

    @property
    def name(self) -> str:
        return self.account.name

    async def locked(
        self, work: Callable[..., T], *args: Any, inline: Callable[[], bool] | None = None
    ) -> T:
        """`work(*args)` holding this user's lock throughout: right here on the event loop
        when `inline()`, asked under the lock, says so (bounded work that does not wait on
        the disk; see `sync/handlers.py: INLINE` for why), else in a worker thread (anyio
        waits for the thread even if the caller is cancelled, so the lock never outlives
        it). A user removed meanwhile is refused (403), as their next request would be."""
        async with self.lock:
            if self.removed:
                raise AuthFailed(f"user {self.name!r} was removed")
            try:
                if self.prepared and inline is not None and inline():
                    return work(*args)
                return await anyio.to_thread.run_sync(self._prepared_then, work, *args)
            finally:
                self.last_used = time.monotonic()

    async def ensure_prepared(self) -> None:
        """Prepare the user (under their lock) if that has not happened yet: before anything is
        written into their folder outside the lock, which `prepare` would take for a leftover."""
        if not self.prepared:
            await self.locked(_nothing)

    def _prepared_then(self, work: Callable[..., T], *args: Any) -> T:
        if not self.prepared:
            self.prepare()
        return work(*args)

    def prepare(self) -> None:
        """Create the folder, remove what an interrupted run of this process's predecessor
        left, finish the snapshots a crash interrupted, finish or drop a media batch a crash
        interrupted and purge the expired media trash (the official server creates or upgrades
        media.db at start-up too). Before any other work of this user."""
        self.folder.ensure()
        if removed := self.folder.remove_leftovers():
            log.info("removed leftovers of an interrupted run in %s: %s", self.folder.root, removed)
        self.snapshots.recover()
        self.media.index()
        self.prepared = True

    def has_open_databases(self) -> bool:
        return self.collection.db is not None or self.media.is_open

    def idle_and_open(self) -> bool:
        """Collection and media index open, no sync session: `meta` can run on the loop."""
        return self.collection.idle_and_open() and self.media.is_open

    def close(self) -> None:
        """Roll back the user's open sync session and close their databases; the caller
        holds the user's lock."""
        try:
            self.collection.close()
            self.media.close()
        except sqlite3.Error:
            log.exception("closing the databases of %s", self.name)


def _nothing() -> None:
    return None


class Registry:
    def __init__(
        self, accounts: AccountDirectory, folder: DataFolder,
        media_trash_days: int = trash.DEFAULT_DAYS,
    ) -> None:
        self.accounts = accounts
        self.data = folder
        self.media_trash_days = media_trash_days
        self._states: dict[str, UserState] = {}

    def by_host_key(self, host_key: str) -> UserState | None:
        """The state of the user a device's key belongs to; None for an unknown key."""
        account = self.accounts.by_host_key(host_key)
        return None if account is None else self.state_of(account)

    def by_name(self, name: str) -> UserState | None:
        """The state of the user of that name; None when there is no such account."""
        account = self.accounts.by_name(name)
        return None if account is None else self.state_of(account)

    def state_of(self, account: Account) -> UserState:
        state = self._states.get(account.name)
        if state is None:
            folder = self.data.user(account.name)
            state = UserState.create(account, folder, self.media_trash_days)
            self._states[account.name] = state
        else:
            state.account = account  # the source's current record (e.g. after a change)
        return state

    def prepare_all(self) -> None:
        """At start-up, before serving: prepare every known user's folder, as the official
        server does, so no first sync pays for it."""
        for name in self.accounts.names():
            account = self.accounts.by_name(name)
            if account is not None:
                state = self.state_of(account)
                state.prepare()
                state.media.close()  # opened again by the user's first sync

    def all(self) -> list[UserState]:
        """Every user state made so far."""
        return list(self._states.values())

    def syncing(self) -> int:
        """How many users have a normal sync in progress."""
        return sum(1 for state in self._states.values() if state.collection.session is not None)

    async def close_idle(self, idle_secs: float, abandoned_secs: float) -> list[str]:
        """Close the databases of every user idle for `idle_secs` (nothing to do, no sync
        session), or whose sync session has seen no request for `abandoned_secs` (its client
        gave up: clients time out after 60 s), each under that user's lock. Reopening on the
        next request is cheap; an open collection keeps its page cache. The names closed."""
        closed = []
        for state in list(self._states.values()):
            if state.lock.locked() or not state.has_open_databases():
                continue
            if await _close_if_idle(state, idle_secs, abandoned_secs):
                closed.append(state.name)
        return closed

    async def drop_revoked_session(self, name: str) -> bool:
        """Roll back the user's sync session if the key that started it no longer works
        (its device was revoked), under their lock; whether one was."""
        state = self._states.get(name)
        if state is None:
            return False
        async with state.lock:
            session = state.collection.session
            if session is None or self.accounts.credential(session.host_key) is not None:
                return False
            state.collection.abort_session()
            return True

    async def evict(self, name: str, *, removed: bool = False) -> None:
        """Under the user's lock: roll back their sync session and close their databases.
        With `removed`, also forget them: every request that has not got the lock yet,
        even one queued before this call, is refused (403)."""
        state = self._states.get(name)
        if state is None:
            return
        if removed:
            state.removed = True  # from now: requests queued before us too are refused
        async with state.lock:
            await anyio.to_thread.run_sync(state.close)
            if removed and self._states.get(name) is state:
                del self._states[name]


async def _close_if_idle(state: UserState, idle_secs: float, abandoned_secs: float) -> bool:
    async with state.lock:
        limit = abandoned_secs if state.collection.session is not None else idle_secs
        if time.monotonic() - state.last_used < limit or not state.has_open_databases():
            return False
        await anyio.to_thread.run_sync(state.close)
        return True
