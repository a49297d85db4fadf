"""`applyChunk`'s fast paths give exactly what the object-by-object way gives.

Parsing: a row of plain ints takes one whole-row check instead of the per-field readers, with
the same result, and anything else still goes through (and fails in) those readers. Applying:
one batched lookup and one `executemany` per list, compared with looking up and writing each
object in turn (`_apply_one_by_one`) on a second copy of the same collection — rows, errors
and what was written before an error.
"""

from __future__ import annotations

import random
import shutil
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ankihost.errors import BadRequest
from ankihost.storage import notetypes, objects
from ankihost.storage.collection import connect
from ankihost.sync import chunks
from ankihost.sync.session import SyncSession

TYPES, QUEUES = sorted(chunks.CARD_TYPES), sorted(chunks.CARD_QUEUES)


def random_card(rng: random.Random, cid: int | None = None) -> list[Any]:
    row: list[Any] = [rng.randrange(-(2**40), 2**40) for _ in range(17)]
    row[0] = rng.randrange(1, 2**50) if cid is None else cid
    row[6], row[7] = rng.choice(TYPES), rng.choice(QUEUES)
    return [*row, rng.choice(["", "{}", '{"s":1.5}'])]


# --- parsing -----------------------------------------------------------------------------------


def test_whole_row_check_and_field_readers_agree() -> None:
    rng = random.Random(7)
    for _ in range(500):
        row = random_card(rng)
        assert chunks.parse_card(row) == chunks._converted_card(row)
        assert chunks.parse_card(row) is not row  # a copy: the body is not changed
        revlog = [rng.randrange(-(2**40), 2**40) for _ in range(rng.choice([8, 9]))]
        slow = chunks.parse_revlog([*revlog[:4], float(revlog[4]), *revlog[5:]])
        assert chunks.parse_revlog(revlog) == slow


def test_negative_ivl_is_clamped_on_both_paths() -> None:
    row = [1, 2, 3, 0, 5, 1, 2, 2, 9, -4, 2500, 1, 0, 0, 1, 0, 0, "{}"]
    assert chunks.parse_card(row)[9] == 0
    assert chunks.parse_card([*row[:9], -4.5, *row[10:]])[9] == 0


@pytest.mark.parametrize(
    ("index", "value", "message"),
    [
        (3, True, "card: expected an integer, got True"),
        (0, 1.0, "card: expected an integer, got 1.0"),
        (16, None, "flags: expected an integer, got None"),
        (12, "3", "card: expected an integer, got '3'"),
        (4, [1], "card mod: expected an integer, got [1]"),
        (8, float("nan"), "due: not a finite number"),
        (17, 3, "card data: expected a string"),
        (17, None, "card data: expected a string"),
    ],
)
def test_a_wrong_card_value_is_still_a_400(index: int, value: Any, message: str) -> None:
    row: list[Any] = [1, 2, 3, 0, 5, 1, 2, 2, 9, 4, 2500, 1, 0, 0, 1, 0, 0, "{}"]
    row[index] = value
    with pytest.raises(BadRequest, match=message.replace("[", r"\[").replace("]", r"\]")):
        chunks.parse_card(row)


@pytest.mark.parametrize("value", [False, None, "1", 2.5j])
def test_a_wrong_revlog_value_is_still_a_400(value: Any) -> None:
    with pytest.raises(BadRequest):
        chunks.parse_revlog([1, 2, 3, value, 5, 6, 7, 8, 1])
    with pytest.raises(BadRequest):
        chunks.parse_revlog([1, 2, 3, 4, 5, 6, value, 8])


def test_card_enums_are_checked_on_the_fast_path() -> None:
    with pytest.raises(BadRequest, match="invalid type 4 or queue 0"):
        chunks.parse_card([1, 2, 3, 0, 5, 1, 4, 0, 9, 4, 2500, 1, 0, 0, 1, 0, 0, "{}"])
    with pytest.raises(BadRequest, match="invalid type 0 or queue 5"):
        chunks.parse_card([1, 2, 3, 0, 5, 1, 0, 5, 9, 4, 2500, 1, 0, 0, 1, 0, 0, "{}"])


# --- applying ----------------------------------------------------------------------------------


@pytest.fixture
def twin(uploaded_collection: Path, tmp_path: Path) -> Iterator[sqlite3.Connection]:
    """A second copy of the collection of the `db` fixture, for the object-by-object way."""
    path = tmp_path / "twin.anki2"
    shutil.copyfile(uploaded_collection, path)
    conn = connect(path)
    conn.execute("begin immediate")
    yield conn
    conn.execute("rollback")
    conn.close()


def one_by_one(db: sqlite3.Connection, session: SyncSession, incoming: chunks.IncomingChunk) -> None:
    usn = session.server_usn
    objects.add_revlog(db, [(*row[:2], usn, *row[3:]) for row in incoming.revlog])
    chunks._apply_one_by_one(db, session, incoming)


def outcome(step: Callable[[], None]) -> tuple[type[BaseException], str] | None:
    try:
        step()
    except Exception as exc:
        return type(exc), str(exc)
    return None


def contents(db: sqlite3.Connection) -> dict[str, list[tuple[Any, ...]]]:
    return {t: db.execute(f"select * from {t} order by id").fetchall() for t in ("cards", "notes", "revlog")}


def both_ways(
    db: sqlite3.Connection, twin: sqlite3.Connection, session: SyncSession, body: dict[str, Any]
) -> tuple[type[BaseException], str] | None:
    """Apply the same chunk both ways; both must end alike. Returns the error, if any."""
    fast = outcome(lambda: chunks.apply_chunk(db, session, chunks.parse_apply_chunk(body)))
    slow = outcome(lambda: one_by_one(twin, session, chunks.parse_apply_chunk(body)))
    assert fast == slow
    assert contents(db) == contents(twin)
    return fast


def basic_id(db: sqlite3.Connection) -> int:
    return int(db.execute("select id from notetypes where name = 'Basic'").fetchone()[0])


def note(nid: int, mid: int, mod: int, flds: str = "front\x1fback") -> list[Any]:
    return [nid, f"guid{nid}", mid, mod, 1, " t ", flds, "", "", 0, ""]


def seed(dbs: list[sqlite3.Connection], rng: random.Random, mid: int) -> None:
    """The same 60 cards and 30 notes in each collection, with varied usn and mod."""
    for i in range(1, 61):
        card = random_card(rng, cid=i)
        card[4], card[5] = rng.randrange(90, 110), rng.randrange(0, 6)
        for conn in dbs:
            conn.execute(f"insert into cards values ({','.join('?' * 18)})", card)
    for i in range(1, 31):
        row = (i, f"g{i}", mid, rng.randrange(90, 110), rng.randrange(0, 6), "", "a\x1fb", "a", 1, 0, "")
        for conn in dbs:
            conn.execute(f"insert into notes values ({','.join('?' * 11)})", row)


def test_rule_c_with_repeated_ids_matches_object_by_object(
    db: sqlite3.Connection, twin: sqlite3.Connection, session: SyncSession
) -> None:
    rng = random.Random(11)
    mid = basic_id(db)
    seed([db, twin], rng, mid)
    for _ in range(20):
        cards = []
        for _ in range(rng.randrange(0, 120)):  # existing and new ids, often more than once
            card = random_card(rng, cid=rng.randrange(1, 90))
            card[4] = rng.randrange(90, 110)
            cards.append(card)
        notes = [
            note(rng.randrange(1, 45), mid, rng.randrange(90, 110), f"{rng.random()}\x1fx")
            for _ in range(rng.randrange(0, 60))
        ]
        revlog = [[rng.randrange(1, 200), 1, 2, 3, 4, 5, 6, 7, rng.randrange(0, 7)] for _ in range(20)]
        body = {"chunk": {"cards": cards, "notes": notes, "revlog": revlog}}
        assert both_ways(db, twin, session, body) is None


def test_a_chunk_of_many_objects_matches_object_by_object(
    db: sqlite3.Connection, twin: sqlite3.Connection, session: SyncSession
) -> None:
    rng = random.Random(3)
    seed([db, twin], rng, basic_id(db))
    cards = [random_card(rng, cid=rng.randrange(1, 2000)) for _ in range(1200)]  # > one lookup batch
    assert both_ways(db, twin, session, {"chunk": {"cards": cards}}) is None
    assert db.execute("select count() from cards where usn = ?", (session.server_usn,)).fetchone()[0] > 500


def test_a_bad_note_fails_after_the_notes_before_it_are_written(
    db: sqlite3.Connection, twin: sqlite3.Connection, session: SyncSession
) -> None:
    mid = basic_id(db)
    notes = [note(1, mid, 5), note(2, 424242, 5), note(3, mid, 5)]
    error = both_ways(db, twin, session, {"chunk": {"notes": notes}})
    assert error == (BadRequest, "note uses missing notetype 424242")
    assert [r[0] for r in db.execute("select id from notes")] == [1]
    notes = [note(4, mid, 5), note(5, mid, 5, "one field"), note(6, mid, 5)]
    error = both_ways(db, twin, session, {"chunk": {"notes": notes}})
    assert error == (BadRequest, "note 5 has 1 fields, expected 2")


def test_a_value_beyond_64_bits_fails_where_it_did(
    db: sqlite3.Connection, twin: sqlite3.Connection, session: SyncSession
) -> None:
    mid = basic_id(db)
    big_card = [1, 2, 3, 0, 5, 1, 2, 2, 9, 4, 2**64, 1, 0, 0, 1, 0, 0, "{}"]
    cards = [[7, *big_card[1:10], 1, *big_card[11:]], big_card, [8, *big_card[1:10], 1, *big_card[11:]]]
    error = both_ways(db, twin, session, {"chunk": {"cards": cards}})
    assert error is not None and error[0] is OverflowError
    assert [r[0] for r in db.execute("select id from cards")] == [7]
    # an earlier bad note still fails first, though a later one has a value SQLite cannot hold
    notes = [note(1, mid, 5), note(2, mid, 5, "one field"), note(3, mid, 2**70)]
    assert both_ways(db, twin, session, {"chunk": {"notes": notes}}) == (
        BadRequest,
        "note 2 has 1 fields, expected 2",
    )
    # and a note that cannot be written fails before a later bad one is looked at
    notes = [note(11, mid, 2**70), note(12, 424242, 5)]
    error = both_ways(db, twin, session, {"chunk": {"notes": notes}})
    assert error is not None and error[0] is OverflowError


@pytest.mark.parametrize("table", ["cards", "notes"])
def test_an_id_beyond_64_bits_fails_where_it_did(
    db: sqlite3.Connection, twin: sqlite3.Connection, session: SyncSession, table: str
) -> None:
    mid = basic_id(db)
    if table == "cards":
        good = [1, 2, 3, 0, 5, 1, 2, 2, 9, 4, 2500, 1, 0, 0, 1, 0, 0, "{}"]
        body = {"cards": [good, [2**63, *good[1:]]]}
    else:
        body = {"notes": [note(1, mid, 5), note(-(2**63) - 1, mid, 5), note(3, 424242, 5)]}
    error = both_ways(db, twin, session, {"chunk": body})
    assert error is not None and error[0] is OverflowError
    assert [r[0] for r in db.execute(f"select id from {table}")] == [1]


def test_sort_field_comes_from_the_notetype(db: sqlite3.Connection, session: SyncSession) -> None:
    mid = basic_id(db)
    legacy = notetypes.to_legacy(db, mid)
    notetypes.from_legacy(db, {**legacy, "sortf": 1})
    body = {"chunk": {"notes": [note(1, mid, 5, "<b>f</b>\x1f<i>b</i>")]}}
    chunks.apply_chunk(db, session, chunks.parse_apply_chunk(body))
    assert db.execute("select sfld from notes where id = 1").fetchone() == ("b",)
    notetypes.from_legacy(db, {**legacy, "sortf": 5})  # out of range: empty
    chunks.apply_chunk(db, session, chunks.parse_apply_chunk({"chunk": {"notes": [note(2, mid, 5)]}}))
    assert db.execute("select sfld from notes where id = 2").fetchone() == ("",)
