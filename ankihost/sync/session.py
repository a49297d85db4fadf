"""A user's open collection and its normal-sync session: the one owner of both (spec 01 §4).

IDLE --start(K)--> ACTIVE(K) --finish(K)--> IDLE (commit). Any failure inside a step, a bad
sanity check, or abort/meta/upload/download roll the collection back to its state before
`start` (the session's transaction is only committed by `finish`). `UserCollection` opens the
connection (creating an empty collection for a new user), begins, commits and rolls back the
session's transaction, and closes the connection; it never writes collection rows itself.
The caller holds the user's lock.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from ankihost.errors import BadRequest, ServerError, SessionConflict, SyncError
from ankihost.storage import schema
from ankihost.storage.collection import read_col
from ankihost.storage.paths import UserFolder
from ankihost.sync.messages import IncomingChunk

log = logging.getLogger(__name__)


@dataclass
class ChunkQueue:
    """Ids of the server's pending revlog/cards/notes, snapshotted at the first `chunk`."""

    revlog: list[int] = field(default_factory=list)
    cards: list[int] = field(default_factory=list)
    notes: list[int] = field(default_factory=list)


@dataclass
class SyncSession:
    key: str
    # col.usn when the session started: the stamp for everything written during it.
    server_usn: int
    # The client's col.usn (`minUsn`): objects with usn >= it are new to the client.
    client_usn: int
    # `lnewer`: the client's collection was modified after the server's.
    client_is_newer: bool
    chunk_queue: ChunkQueue | None = None
    # The next `chunk` reply, made ahead of the client's request for it (see sync/chunks.py),
    # or the error making it raised; None when nothing is prepared.
    next_chunk: dict[str, Any] | Exception | None = None
    # A `chunk` reply said `done`: there is nothing more to prepare.
    chunks_done: bool = False
    # `applyChunk` bodies already answered but not yet written (see sync/chunks.py), oldest
    # first, and the error writing one of them raised, for the session's next request.
    unapplied: list[IncomingChunk] = field(default_factory=list)
    apply_error: Exception | None = None
    # the host key of the device that started the session (a revoked one's session is dropped)
    host_key: str = ""
    # When the session's latest request began (time.monotonic()): admin work that must not cut
    # a sync tells a session still in use from one its client gave up.
    last_request: float = field(default_factory=time.monotonic)

    @property
    def unsettled(self) -> bool:
        """A chunk is still to be written, or writing one failed: `chunks.settle` first."""
        return bool(self.unapplied) or self.apply_error is not None


class UserCollection:
    """The user's `collection.anki2`, kept open across requests, and its sync session."""

    def __init__(self, folder: UserFolder) -> None:
        self.folder = folder
        self.db: sqlite3.Connection | None = None
        self.session: SyncSession | None = None

    def connection(self) -> sqlite3.Connection:
        """The open collection, opened (and for a new user created empty) on first use."""
        if self.db is None:
            self.db = schema.open_or_create(self.folder)
        return self.db

    def idle_and_open(self) -> bool:
        """The collection is open, with no sync session and no transaction running."""
        return self.session is None and self.db is not None and not self.db.in_transaction

    def begin_session(
        self, key: str, client_usn: int, client_is_newer: bool, host_key: str = ""
    ) -> SyncSession:
        """Abandon any running session, then begin the new one's transaction."""
        self.abort_session()
        db = self.connection()
        try:
            db.execute("begin immediate")
            server_usn = read_col(db).usn
        except sqlite3.Error as exc:
            self.abort_session()
            raise ServerError(f"cannot begin sync: {exc}") from exc
        self.session = SyncSession(key, server_usn, client_usn, client_is_newer, host_key=host_key)
        return self.session

    def active_session(self, key: str) -> SyncSession:
        """The session `key` belongs to; 409 when there is none or it is another device's."""
        session = self.session
        if session is None or session.key != key or self.db is None:
            raise SessionConflict("no sync session with this key")
        session.last_request = time.monotonic()
        return session

    def commit_session(self) -> None:
        """Make the session's writes durable and end it."""
        db = self.db
        if db is None:
            raise SessionConflict("collection closed")
        try:
            db.execute("commit")
        except sqlite3.Error as exc:
            self.abort_session()
            raise ServerError(f"commit failed: {exc}") from exc
        self.session = None

    def abort_session(self) -> None:
        """End any sync session with a rollback (a no-op when idle); the collection stays open.

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

    def close(self) -> None:
        """Roll back anything uncommitted (an abandoned sync) and close the collection."""
        self.session = None
        if self.db is not None:
            db, self.db = self.db, None
            try:
                if db.in_transaction:
                    db.execute("rollback")
            finally:
                db.close()

    @contextmanager
    def rolled_back_on_failure(self) -> Iterator[None]:
        """Run a step; if it fails, roll back the whole session first (spec 01 §4.2).

        Our own errors keep their status; SQLite I/O trouble becomes 500; anything else (a
        constraint violation, a value the step could not handle) is a failed step: 400.
        """
        try:
            yield
        except SyncError:
            self.abort_session()
            raise
        except (sqlite3.OperationalError, MemoryError) as exc:
            self.abort_session()
            log.exception("sync step failed on the server")
            raise ServerError(str(exc)) from exc
        except Exception as exc:
            self.abort_session()
            log.info("sync step failed, session rolled back: %r", exc)
            raise BadRequest(f"sync step failed: {exc}") from exc
        except BaseException:
            self.abort_session()
            raise


def session_key(key: str) -> str:
    """A request's session key; an empty one is a malformed request (400)."""
    if not key:
        raise BadRequest("missing session key")
    return key
