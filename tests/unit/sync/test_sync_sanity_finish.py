"""`sanityCheck2` counts and `finish` bookkeeping on a real collection."""

from __future__ import annotations

import sqlite3

import pytest

from ankihost.errors import BadRequest
from ankihost.sync import finish, sanity


def server_tuple(db: sqlite3.Connection) -> list:
    return sanity.server_counts(db)


def test_equal_counts_are_ok_ignoring_due_counts_and_graves(db: sqlite3.Connection) -> None:
    client = server_tuple(db)
    client[0] = [3, 2, 1]
    client[4] = 99
    result = sanity.sanity_check(db, client)
    assert result.ok and result.reply["status"] == "ok"
    assert (
        result.reply["c"]
        == result.reply["s"]
        == [[0, 0, 0], *server_tuple(db)[1:4], 0, *server_tuple(db)[5:]]
    )


@pytest.mark.parametrize("position", [1, 2, 3, 5, 6, 7])
def test_any_other_count_difference_is_bad(db: sqlite3.Connection, position: int) -> None:
    client = server_tuple(db)
    client[position] += 1
    result = sanity.sanity_check(db, client)
    assert not result.ok and result.reply["status"] == "bad" and result.reply["s"] is not None


def test_unsent_server_rows_are_bad_with_no_server_counts(db: sqlite3.Connection) -> None:
    db.execute("update decks set usn = -1")
    client = server_tuple(db)
    client[0] = [1, 1, 1]
    assert sanity.sanity_check(db, client).reply == {"status": "bad", "c": client, "s": None}


def test_counts_must_have_the_documented_shape() -> None:
    assert sanity.parse_sanity({"client": [[0, 0, 0], 1, 2, 3, 4, 5, 6, 7]})[7] == 7
    for bad in (
        [[0, 0], 1, 2, 3, 4, 5, 6, 7],
        [[0, 0, 0], 1, 2],
        [[0, 0, 0], 1, 2, 3, 4, 5, 6, "x"],
    ):
        with pytest.raises(BadRequest):
            sanity.parse_sanity({"client": bad})


def test_finish_bumps_usn_once_and_stores_the_returned_time(db: sqlite3.Connection) -> None:
    db.execute("update col set mod = 0")
    now = finish.finish(db)
    assert db.execute("select usn, mod, ls from col").fetchone() == (6, now, now)


def test_finish_time_is_strictly_later_than_the_previous_mod(db: sqlite3.Connection) -> None:
    db.execute("update col set mod = ?", (10**15,))
    assert finish.finish(db) == 10**15 + 1


@pytest.mark.parametrize(
    "table", ["cards", "notes", "revlog", "graves", "tags", "notetypes", "decks", "deck_config"]
)
def test_every_usn_table_is_checked_for_unsent_rows(db: sqlite3.Connection, table: str) -> None:
    if table == "cards":
        db.execute(f"insert into cards values ({','.join(['1'] * 17)}, '')")
    elif table == "notes":
        db.execute("insert into notes values (1, 'g', 1, 1, 1, '', '', '', 0, 0, '')")
    elif table == "revlog":
        db.execute("insert into revlog values (1, 1, 1, 1, 1, 1, 1, 1, 1)")
    elif table == "graves":
        db.execute("insert into graves values (1, 0, 1)")
    elif table == "tags":
        db.execute("insert into tags values ('t', 1, 0, null)")
    assert sanity.sanity_check(db, server_tuple(db)).ok
    db.execute(f"update {table} set usn = -1")
    assert not sanity.sanity_check(db, server_tuple(db)).ok
