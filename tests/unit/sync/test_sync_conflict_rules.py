"""Per-object merge rules (spec 02 §6): rule C for cards/notes, rule N for notetypes/decks/
deck configs, insert-or-ignore for revlog and graves, registration for tags, whole
replacement for config — on a real collection made by the client."""

from __future__ import annotations

import sqlite3
from typing import Any

import pytest

from ankihost.errors import BadRequest
from ankihost.storage import deck_configs, decks, notetypes
from ankihost.sync import changes, chunks, start
from ankihost.sync.session import SyncSession


def card(cid: int, mod: int, usn: int = 99, due: int = 1) -> list[Any]:
    return [cid, 10, 1, 0, mod, usn, 0, 0, due, 0, 0, 0, 0, 0, 0, 0, 0, ""]


def store_card(db: sqlite3.Connection, cid: int, mod: int, usn: int) -> None:
    row = card(cid, mod, usn, due=7)
    db.execute(f"insert into cards values ({','.join('?' * 18)})", row)


def card_row(db: sqlite3.Connection, cid: int) -> tuple[Any, ...]:
    return db.execute("select mod, usn, due from cards where id = ?", (cid,)).fetchone()


def apply(db: sqlite3.Connection, session: SyncSession, **lists: list[Any]) -> None:
    chunks.apply_chunk(db, session, chunks.parse_apply_chunk({"chunk": {"done": True, **lists}}))


def basic_id(db: sqlite3.Connection) -> int:
    return db.execute("select id from notetypes where name = 'Basic'").fetchone()[0]


def change_set(**kw: Any) -> changes.Changes:
    body = {
        "models": kw.get("models", []),
        "decks": [kw.get("decks", []), kw.get("dconf", [])],
        "tags": kw.get("tags", []),
    }
    for key in ("conf", "crt"):
        if key in kw:
            body[key] = kw[key]
    return changes.parse_apply_changes({"changes": body})


# --- rule C: cards and notes ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("stored_usn", "stored_mod", "incoming_mod", "incoming_wins"),
    [
        (4, 100, 100, False),  # changed on the server since the client's sync, tie: server keeps
        (4, 100, 99, False),  # server copy newer
        (4, 100, 101, True),  # client copy newer
        (3, 100, 100, False),  # usn == minUsn counts as changed since (>=)
        (2, 200, 100, True),  # server copy untouched since the client's last sync
    ],
)
def test_rule_c_for_cards(
    db: sqlite3.Connection,
    session: SyncSession,
    stored_usn: int,
    stored_mod: int,
    incoming_mod: int,
    incoming_wins: bool,
) -> None:
    store_card(db, 1, stored_mod, stored_usn)
    apply(db, session, cards=[card(1, incoming_mod, usn=1)])
    expected = (
        (incoming_mod, session.server_usn, 1) if incoming_wins else (stored_mod, stored_usn, 7)
    )
    assert card_row(db, 1) == expected


def test_new_card_is_stored_with_the_session_usn_whatever_it_claims(
    db: sqlite3.Connection, session: SyncSession
) -> None:
    apply(db, session, cards=[card(2, 50, usn=-1)])
    assert card_row(db, 2) == (50, session.server_usn, 1)


def note(nid: int, mid: int, mod: int, flds: str = "front\x1fback", tags: str = "") -> list[Any]:
    return [nid, "guid" + str(nid), mid, mod, 1, tags, flds, "junk", "junk", 7, "junk"]


def test_rule_c_for_notes_keeps_a_newer_server_note(
    db: sqlite3.Connection, session: SyncSession
) -> None:
    mid = basic_id(db)
    apply(db, session, notes=[note(1, mid, 100, "server\x1fcopy")])  # stored with usn 5 >= 3
    apply(db, session, notes=[note(1, mid, 100, "client\x1fcopy")])
    apply(db, session, notes=[note(1, mid, 99, "older\x1fcopy")])
    assert db.execute("select flds from notes where id = 1").fetchone()[0] == "server\x1fcopy"
    apply(db, session, notes=[note(1, mid, 101, "newer\x1fcopy")])
    assert db.execute("select flds from notes where id = 1").fetchone()[0] == "newer\x1fcopy"


def test_note_row_is_normalised(db: sqlite3.Connection, session: SyncSession) -> None:
    mid = basic_id(db)
    apply(db, session, notes=[note(3, mid, 5, "<b>Héllo</b> world\r\x7f\x1fback", "  b\u3000a  ")])
    row = db.execute(
        "select usn, tags, flds, sfld, csum, flags, data from notes where id = 3"
    ).fetchone()
    assert row == (
        session.server_usn,
        " b a ",
        "<b>Héllo</b> world\x1fback",
        "Héllo world",
        2382156618,
        0,
        "",
    )


def test_note_needs_its_notetype_and_field_count(
    db: sqlite3.Connection, session: SyncSession
) -> None:
    with pytest.raises(BadRequest):
        apply(db, session, notes=[note(4, 123456, 5)])
    with pytest.raises(BadRequest):
        apply(db, session, notes=[note(4, basic_id(db), 5, "only one field")])


def test_revlog_is_insert_or_ignore(db: sqlite3.Connection, session: SyncSession) -> None:
    apply(db, session, revlog=[[1000, 1, 2, 3, 4.9, -60, 2500, 1234.5, 1]])
    apply(db, session, revlog=[[1000, 1, 2, 1, 1, 1, 1, 1, 1]])
    assert db.execute("select * from revlog").fetchall() == [(1000, 1, 5, 3, 4, -60, 2500, 1234, 1)]


# --- graves ------------------------------------------------------------------------------------


def test_graves_delete_without_cascade_and_keep_older_grave_usn(
    db: sqlite3.Connection, session: SyncSession
) -> None:
    store_card(db, 10, 1, 1)
    store_card(db, 11, 1, 1)
    db.execute("insert into graves values (11, 0, 2)")
    start.apply_graves(db, session, start.Graves(cards=[10, 11], notes=[77], decks=[]))
    assert db.execute("select count() from cards").fetchone()[0] == 0
    assert sorted(db.execute("select oid, type, usn from graves")) == [
        (10, 0, 5),
        (11, 0, 2),
        (77, 1, 5),
    ]


def test_start_sends_graves_since_min_usn(db: sqlite3.Connection, session: SyncSession) -> None:
    db.executemany(
        "insert into graves values (?, ?, ?)", [(1, 0, 2), (2, 0, 3), (3, 1, 4), (4, 2, 5)]
    )
    request = start.parse_start(
        {"minUsn": 3, "lnewer": False, "graves": {"cards": ["9"], "notes": [], "decks": []}}
    )
    assert start.start(db, session, request) == {"cards": [2], "notes": [3], "decks": [4]}
    assert db.execute("select usn from graves where oid = 9").fetchone() == (5,)


# --- rule N: notetypes, decks, deck configs ---------------------------------------------------


def test_deck_config_rule_n(db: sqlite3.Connection, session: SyncSession) -> None:
    stored = deck_configs.to_legacy(db, 1)
    db.execute("update deck_config set mtime_secs = 100 where id = 1")
    older = {**stored, "mod": 99, "name": "older"}
    changes.apply_changes(db, session, change_set(dconf=[older]))
    assert deck_configs.to_legacy(db, 1)["name"] == stored["name"]
    equal = {**stored, "mod": 100, "name": "equal"}
    changes.apply_changes(db, session, change_set(dconf=[equal]))
    assert (deck_configs.to_legacy(db, 1)["name"], deck_configs.to_legacy(db, 1)["usn"]) == (
        "equal",
        5,
    )


def test_deck_name_clash_gets_a_plus_and_keeps_the_other_deck(
    db: sqlite3.Connection, session: SyncSession
) -> None:
    incoming = {**decks.to_legacy(db, 1), "id": 1234, "mod": 50, "usn": 1, "name": "default"}
    changes.apply_changes(db, session, change_set(decks=[incoming]))
    stored = decks.to_legacy(db, 1234)
    assert stored["name"] == "default+" and stored["usn"] == 5 and stored["mod"] > 50
    assert decks.to_legacy(db, 1)["name"] == "Default"


def test_notetype_rule_n_and_shape_guard(db: sqlite3.Connection, session: SyncSession) -> None:
    ntid = basic_id(db)
    stored = notetypes.to_legacy(db, ntid)
    db.execute("update notetypes set mtime_secs = 100 where id = ?", (ntid,))
    reshaped = {**stored, "flds": stored["flds"][:1]}
    changes.apply_changes(
        db, session, change_set(models=[{**reshaped, "mod": 99}])
    )  # older: skipped
    with pytest.raises(BadRequest):
        changes.apply_changes(db, session, change_set(models=[{**reshaped, "mod": 100}]))
    changes.apply_changes(db, session, change_set(models=[{**stored, "mod": 100, "css": "x"}]))
    assert notetypes.to_legacy(db, ntid)["css"] == "x"


def test_notetype_name_clash_gets_a_plus(db: sqlite3.Connection, session: SyncSession) -> None:
    copy = {**notetypes.to_legacy(db, basic_id(db)), "id": 777, "name": "BASIC"}
    changes.apply_changes(db, session, change_set(models=[copy]))
    assert notetypes.to_legacy(db, 777)["name"] == "BASIC+"
    assert notetypes.to_legacy(db, basic_id(db))["name"] == "Basic"


def test_server_changes_are_gathered_before_the_clients_apply(
    db: sqlite3.Connection, session: SyncSession
) -> None:
    incoming = {**decks.to_legacy(db, 1), "id": 1234, "name": "New deck", "mod": 1}
    reply = changes.apply_changes(db, session, change_set(decks=[incoming], tags=["fresh"]))
    assert reply["decks"] == [[], []] and reply["tags"] == [] and reply["models"] == []
    db.execute("update decks set usn = 3 where id = 1")  # changed on the server at usn 3
    reply = changes.apply_changes(db, session, change_set())
    assert sorted(d["id"] for d in reply["decks"][0]) == [1, 1234] and reply["tags"] == ["fresh"]


# --- tags and config ---------------------------------------------------------------------------


def test_tags_register_once_and_adopt_the_parents_case(
    db: sqlite3.Connection, session: SyncSession
) -> None:
    db.execute("insert into tags values ('Parent', 1, 0, null)")
    changes.apply_changes(
        db, session, change_set(tags=["parent::Child", "PARENT", "a b::c", " ::x"])
    )
    assert sorted(db.execute("select tag, usn, collapsed from tags")) == [
        ("Parent", 1, 0),
        ("Parent::Child", 5, 1),
        ("ab::c", 5, 1),
        ("blank::x", 5, 1),
    ]


def test_config_is_sent_when_the_server_is_newer(
    db: sqlite3.Connection, session: SyncSession
) -> None:
    reply = changes.apply_changes(db, session, change_set())
    assert reply["conf"]["curDeck"] == 1 and isinstance(reply["crt"], int)
    assert db.execute("select count() from config where usn != 0").fetchone()[0] == 0


def test_newer_client_replaces_the_whole_config(db: sqlite3.Connection) -> None:
    newer = SyncSession("key", server_usn=5, client_usn=3, client_is_newer=True)
    reply = changes.apply_changes(
        db, newer, change_set(conf={"curDeck": 7, "big": 2**62}, crt=1234)
    )
    assert "conf" not in reply and "crt" not in reply
    rows = db.execute(
        "select key, usn, typeof(val), cast(val as text) from config order by key"
    ).fetchall()
    assert rows == [("big", 5, "blob", str(2**62)), ("curDeck", 5, "blob", "7")]
    assert db.execute("select crt from col").fetchone() == (1234,)
