"""The per-user normal-sync session: its state, and every transition check (spec 01 §4).

IDLE --start(K)--> ACTIVE(K) --finish(K)--> IDLE (commit). Any failure inside a step, a bad
sanity check, or abort/meta/upload/download roll the collection back to its state before
`start` (the session's transaction is only committed by `finish`). This module never writes
collection rows itself; it only begins, commits and rolls back.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ankihost.errors import BadRequest, ServerError, SessionConflict, SyncError
from ankihost.storage.collection import read_col

if TYPE_CHECKING:
    from ankihost.protocol.request import SyncRequest
    from ankihost.registry import UserState
    from ankihost.sync.chunks import IncomingChunk

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

    @property
    def unsettled(self) -> bool:
        """A chunk is still to be written, or writing one failed: `chunks.settle` first."""
        return bool(self.unapplied) or self.apply_error is not None


def session_key(request: SyncRequest) -> str:
    """The request's session key; an empty one is a malformed request (400)."""
    if not request.session_key:
        raise BadRequest("missing session key")
    return request.session_key


def active_session(state: UserState, key: str) -> SyncSession:
    """The session `key` belongs to; 409 when there is none or it is another device's."""
    session = state.session
    if not isinstance(session, SyncSession) or session.key != key or state.db is None:
        raise SessionConflict("no sync session with this key")
    return session


def open_session(state: UserState, key: str, client_usn: int, client_is_newer: bool) -> SyncSession:
    """Abandon any running session, then begin the new one's transaction."""
    abandon(state)
    db = state.collection()
    if db.in_transaction:  # never expected: nothing else leaves one open
        db.execute("rollback")
    try:
        db.execute("begin immediate")
        server_usn = read_col(db).usn
    except sqlite3.Error as exc:
        abandon(state)
        raise ServerError(f"cannot begin sync: {exc}") from exc
    session = SyncSession(key, server_usn, client_usn, client_is_newer)
    state.session = session
    return session


def abandon(state: UserState) -> None:
    """Roll back everything since `start` and forget the session (no-op when idle)."""
    state.abort_session()


def commit(state: UserState) -> None:
    """Make the session's writes durable and end it."""
    db = state.db
    if db is None:
        raise SessionConflict("collection closed")
    try:
        db.execute("commit")
    except sqlite3.Error as exc:
        abandon(state)
        raise ServerError(f"commit failed: {exc}") from exc
    state.session = None


@contextmanager
def rolled_back_on_failure(state: UserState) -> Iterator[None]:
    """Run a step; if it fails, roll back the whole session first (spec 01 §4.2).

    Our own errors keep their status; SQLite I/O trouble becomes 500; anything else (a
    constraint violation, a value the step could not handle) is a failed step: 400.
    """
    try:
        yield
    except SyncError:
        abandon(state)
        raise
    except (sqlite3.OperationalError, MemoryError) as exc:
        abandon(state)
        log.exception("sync step failed on the server")
        raise ServerError(str(exc)) from exc
    except Exception as exc:
        abandon(state)
        log.info("sync step failed, session rolled back: %r", exc)
        raise BadRequest(f"sync step failed: {exc}") from exc
    except BaseException:
        abandon(state)
        raise
