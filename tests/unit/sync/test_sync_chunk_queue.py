"""How `chunk` hands out the snapshotted ids: ~250 per call, `done` when the lists run dry."""

from __future__ import annotations

import sqlite3

import pytest

from ankihost.sync import chunks
from ankihost.sync.chunks import CHUNK_SIZE, chunk, next_chunk, prepare_next_chunk, take_ids
from ankihost.sync.session import ChunkQueue, SyncSession


def test_round_robin_and_done_when_lists_run_dry() -> None:
    queue = ChunkQueue(revlog=[1, 2], cards=[10], notes=[20, 21, 22])
    assert take_ids(queue, 250) == ([2, 1], [10], [22, 21, 20], True)
    assert take_ids(queue, 250) == ([], [], [], True)


def test_budget_is_checked_once_per_round() -> None:
    queue = ChunkQueue(revlog=list(range(100)), cards=list(range(100)), notes=list(range(100)))
    revlog, cards, notes, done = take_ids(queue, CHUNK_SIZE)
    assert (len(revlog), len(notes), len(cards), done) == (84, 84, 84, False)  # 252 > 250
    revlog, cards, notes, done = take_ids(queue, CHUNK_SIZE)
    assert (len(revlog) + len(notes) + len(cards), done) == (48, True)


def test_exactly_full_chunk_is_followed_by_an_empty_done_chunk() -> None:
    queue = ChunkQueue(revlog=list(range(CHUNK_SIZE)))
    assert take_ids(queue, CHUNK_SIZE)[3] is False
    assert take_ids(queue, CHUNK_SIZE) == ([], [], [], True)


def insert_cards(db: sqlite3.Connection, usns: list[int]) -> None:
    rows = [
        (i, 1, 1, 0, 1, usn, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, "") for i, usn in enumerate(usns, 1)
    ]
    db.executemany(f"insert into cards values ({','.join('?' * 18)})", rows)


def test_chunk_sends_rows_changed_since_min_usn_snapshotted_once(
    db: sqlite3.Connection, session: SyncSession
) -> None:
    insert_cards(db, [2, 3, 4])
    first = chunk(db, session)
    assert first["done"] is True and "notes" not in first and "revlog" not in first
    assert sorted(c[0] for c in first["cards"]) == [2, 3]  # usn >= minUsn (3)
    assert first["cards"][0][17] == "{}" and first["cards"][0][5] in (3, 4)  # stored usn as is
    insert_cards_later = [(9, 1, 1, 0, 1, 9, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, "")]
    db.executemany(f"insert into cards values ({','.join('?' * 18)})", insert_cards_later)
    assert chunk(db, session) == {"done": True}  # the snapshot is not taken again


def _take_ids_one_by_one(queue: ChunkQueue, budget: int) -> tuple[list[int], ...]:
    """The reference: pop one id per list per round while budget remains."""
    revlog: list[int] = []
    cards: list[int] = []
    notes: list[int] = []
    while budget > 0:
        before = budget
        for source, target in ((queue.revlog, revlog), (queue.notes, notes), (queue.cards, cards)):
            if source:
                target.append(source.pop())
                budget -= 1
        if budget == before:
            break
    return revlog, cards, notes, budget > 0  # type: ignore[return-value]


def test_take_ids_matches_popping_one_id_at_a_time() -> None:
    import random

    rng = random.Random(7)
    for _ in range(400):
        lengths = [rng.choice([0, 1, 2, 3, 83, 84, 85, 125, 249, 250, 251, rng.randrange(600)])
                   for _ in range(3)]
        budget = rng.choice([1, 2, 3, 250, rng.randrange(1, 400)])
        lists = [list(rng.sample(range(10_000), n)) for n in lengths]
        ours = ChunkQueue(revlog=list(lists[0]), cards=list(lists[1]), notes=list(lists[2]))
        ref = ChunkQueue(revlog=list(lists[0]), cards=list(lists[1]), notes=list(lists[2]))
        while True:
            got, want = take_ids(ours, budget), _take_ids_one_by_one(ref, budget)
            assert got == want and ours == ref, (lengths, budget)
            if got[3]:
                break


def test_chunk_rows_keep_the_snapshot_order_and_send_empty_card_data_as_braces(
    db: sqlite3.Connection, session: SyncSession
) -> None:
    rows = [
        (i, 1, 1, 0, 1, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, data)
        for i, data in [(5, ""), (3, '{"x":1}'), (8, b""), (1, "")]
    ]
    db.executemany(f"insert into cards values ({','.join('?' * 18)})", rows)
    reply = chunk(db, session)
    snapshot_order = [r[0] for r in db.execute("select id from cards where usn >= 3")][::-1]
    assert [c[0] for c in reply["cards"]] == snapshot_order
    assert {c[0]: c[17] for c in reply["cards"]} == {5: "{}", 3: '{"x":1}', 8: "{}", 1: "{}"}


def _drain(db: sqlite3.Connection, session: SyncSession, prepare: bool) -> list[dict]:
    replies = []
    while not session.chunks_done:
        replies.append(next_chunk(db, session))
        if prepare:
            prepare_next_chunk(db, session)
    return replies


def test_chunks_prepared_ahead_are_the_chunks_made_on_request(
    db: sqlite3.Connection, session: SyncSession
) -> None:
    insert_cards(db, [4] * (2 * CHUNK_SIZE + 10))
    on_request = _drain(db, SyncSession("a", 5, 3, False), prepare=False)
    ahead = _drain(db, session, prepare=True)
    assert len(on_request) == 3 and ahead == on_request
    assert session.next_chunk is None  # nothing is prepared after the `done` chunk
    prepare_next_chunk(db, session)
    assert session.next_chunk is None


def test_an_error_preparing_a_chunk_fails_the_request_it_was_made_for(
    db: sqlite3.Connection, session: SyncSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    insert_cards(db, [4] * (CHUNK_SIZE + 10))
    assert next_chunk(db, session)["done"] is False

    def broken(db: sqlite3.Connection, session: SyncSession) -> dict:
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(chunks, "chunk", broken)
    prepare_next_chunk(db, session)  # the error is kept, not raised here
    with pytest.raises(sqlite3.OperationalError, match="disk I/O"):
        next_chunk(db, session)
    assert session.next_chunk is None
