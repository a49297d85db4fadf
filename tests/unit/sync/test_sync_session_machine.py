"""The session transitions of spec 01 §4.3 at the `session` module level, on a real user."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from ankihost.errors import BadRequest, NotFound, ServerError, SessionConflict
from ankihost.registry import UserState
from ankihost.storage.collection import connect
from ankihost.sync import session
from tests.support.sync_steps import sync_request, user_state


@pytest.fixture
def state(uploaded_collection: Path, tmp_path: Path) -> Iterator[UserState]:
    s = user_state(tmp_path / "alice", uploaded_collection)
    yield s
    s.collection.close()


def deck_count(path: Path) -> int:
    db = connect(path, exclusive=False)
    try:
        return db.execute("select count() from decks").fetchone()[0]
    finally:
        db.close()


def test_session_key_must_not_be_empty() -> None:
    assert session.session_key(sync_request("chunk", {}, key="k1").session_key) == "k1"
    with pytest.raises(BadRequest):
        session.session_key(sync_request("chunk", {}, key="").session_key)


def test_idle_user_has_no_session(state: UserState) -> None:
    with pytest.raises(SessionConflict):
        state.collection.active_session("k1")


def test_begin_session_begins_a_transaction_at_the_current_usn(state: UserState) -> None:
    current = state.collection.begin_session("k1", client_usn=2, client_is_newer=True)
    assert state.collection.connection().in_transaction
    assert (current.server_usn, current.client_usn, current.client_is_newer) == (5, 2, True)
    assert state.collection.active_session("k1") is current
    with pytest.raises(SessionConflict):
        state.collection.active_session("k2")


def test_a_new_start_rolls_back_the_old_session(state: UserState) -> None:
    state.collection.begin_session("k1", 2, False)
    state.collection.connection().execute("delete from decks")
    state.collection.begin_session("k2", 2, False)
    assert state.collection.connection().execute("select count() from decks").fetchone()[0] == 1
    with pytest.raises(SessionConflict):
        state.collection.active_session("k1")


def test_commit_ends_the_session_and_persists(state: UserState) -> None:
    state.collection.begin_session("k1", 2, False)
    state.collection.connection().execute("delete from decks")
    state.collection.commit_session()
    assert state.collection.session is None and not state.collection.connection().in_transaction
    state.collection.close()
    assert deck_count(state.folder.collection) == 0


def test_abandon_rolls_back_and_is_idempotent(state: UserState) -> None:
    state.collection.abort_session()
    state.collection.begin_session("k1", 2, False)
    state.collection.connection().execute("delete from decks")
    state.collection.abort_session()
    state.collection.abort_session()
    assert state.collection.session is None
    db = state.collection.db  # still open: a rollback is enough, closing would checkpoint and fsync
    assert db is not None and not db.in_transaction
    assert db.execute("select count() from decks").fetchone() == (1,)
    state.collection.close()
    assert deck_count(state.folder.collection) == 1


class _RollbackFails:
    """A collection connection whose rollback fails (e.g. the disk went away)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db
        self.closed = False

    @property
    def in_transaction(self) -> bool:
        return self.db.in_transaction

    def execute(self, sql: str, *args: object) -> sqlite3.Cursor:
        if sql == "rollback":
            raise sqlite3.OperationalError("disk I/O error")
        return self.db.execute(sql, *args)

    def close(self) -> None:
        self.closed = True
        self.db.close()


def test_abandon_closes_the_collection_when_its_rollback_fails(state: UserState) -> None:
    state.collection.begin_session("k1", 2, False)
    state.collection.connection().execute("delete from decks")
    failing = _RollbackFails(state.collection.connection())
    state.collection.db = failing  # type: ignore[assignment]
    state.collection.abort_session()
    assert state.collection.session is None and state.collection.db is None and failing.closed
    assert deck_count(state.folder.collection) == 1  # closing rolled it back


@pytest.mark.parametrize(
    ("raised", "expected"),
    [
        (NotFound("ours"), NotFound),  # our own errors keep their status
        (sqlite3.IntegrityError("UNIQUE constraint failed"), BadRequest),
        (ValueError("odd value"), BadRequest),
        (sqlite3.OperationalError("disk I/O error"), ServerError),
    ],
)
def test_failure_inside_a_step_rolls_back_and_clears(
    state: UserState, raised: Exception, expected: type[Exception]
) -> None:
    state.collection.begin_session("k1", 2, False)
    with pytest.raises(expected), state.collection.rolled_back_on_failure():
        state.collection.connection().execute("delete from decks")
        raise raised
    assert state.collection.session is None and not state.collection.connection().in_transaction
    state.collection.close()
    assert deck_count(state.folder.collection) == 1


def test_success_inside_a_step_keeps_the_session(state: UserState) -> None:
    current = state.collection.begin_session("k1", 2, False)
    with state.collection.rolled_back_on_failure():
        state.collection.connection().execute("delete from decks")
    assert state.collection.active_session("k1") is current
    assert state.collection.connection().in_transaction
