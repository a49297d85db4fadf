"""SQL for the plain rows normal sync moves: notes, cards, revlog, graves, tags, config, `col`.

Each function runs inside whatever transaction the caller holds (a sync session's); none of
them begins or commits. Notetypes, decks and deck configs are converted in their own modules.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Sequence
from typing import Any

import orjson

from ankihost.storage.note_text import normalize_tag_name

# The chunked tables, whose pending ids are snapshotted at the first `chunk`.
PENDING_TABLES = ("revlog", "cards", "notes")
# This module's tables that the sanity check looks at (usn = -1 rows, row counts).
USN_TABLES = ("cards", "notes", "revlog", "graves", "tags")
COUNTED_TABLES = ("cards", "notes", "revlog", "graves")

GRAVE_CARD, GRAVE_NOTE, GRAVE_DECK = 0, 1, 2
Row = tuple[Any, ...]

CARD_COLUMNS = (
    "id, nid, did, ord, mod, usn, type, queue, due, ivl, factor, reps, lapses, left, odue, "
    "odid, flags, data"
)
NOTE_COLUMNS = "id, guid, mid, mod, usn, tags, flds, sfld, csum, flags, data"
REVLOG_COLUMNS = "id, cid, usn, ease, ivl, lastIvl, factor, time, type"


def _checked(table: str, allowed: Iterable[str]) -> str:
    if table not in allowed:
        raise ValueError(f"not a sync table: {table}")
    return table


def _ids(rows: Iterable[Sequence[Any]]) -> list[int]:
    return [row[0] for row in rows]


# --- usn selection -----------------------------------------------------------------------


def pending_ids(db: sqlite3.Connection, table: str, min_usn: int) -> list[int]:
    """Ids of rows written on the server since the client's last sync (`usn >= min_usn`)."""
    sql = f"select id from {_checked(table, PENDING_TABLES)} where usn >= ?"
    return _ids(db.execute(sql, (min_usn,)))


# --- graves ------------------------------------------------------------------------------


def pending_graves(db: sqlite3.Connection, min_usn: int) -> dict[str, list[int]]:
    graves: dict[str, list[int]] = {"cards": [], "decks": [], "notes": []}
    names = {GRAVE_CARD: "cards", GRAVE_NOTE: "notes", GRAVE_DECK: "decks"}
    for oid, kind in db.execute("select oid, type from graves where usn >= ?", (min_usn,)):
        if kind in names:
            graves[names[kind]].append(oid)
    return graves


def delete_card(db: sqlite3.Connection, cid: int) -> None:
    db.execute("delete from cards where id = ?", (cid,))


def delete_note(db: sqlite3.Connection, nid: int) -> None:
    """Only the note: its cards arrive as their own graves."""
    db.execute("delete from notes where id = ?", (nid,))


def add_grave(db: sqlite3.Connection, kind: int, oid: int, usn: int) -> None:
    """Record a deletion; an existing grave for the object keeps its older usn."""
    db.execute("insert or ignore into graves (oid, type, usn) values (?, ?, ?)", (oid, kind, usn))


# --- tags --------------------------------------------------------------------------------


def pending_tags(db: sqlite3.Connection, min_usn: int) -> list[str]:
    return [tag for (tag,) in db.execute("select tag from tags where usn >= ?", (min_usn,))]


def _stored_tag(db: sqlite3.Connection, name: str) -> str | None:
    row = db.execute("select tag from tags where tag = ?", (name,)).fetchone()
    return None if row is None else row[0]


def register_tag(db: sqlite3.Connection, raw_name: str, usn: int) -> bool:
    """Add a tag unless known (case-insensitively); adopt the stored case of its nearest
    existing ancestor. Returns whether a row was added."""
    name = normalize_tag_name(raw_name)
    if _stored_tag(db, name) is not None:
        return False
    parts = name.split("::")
    for depth in range(len(parts) - 1, 0, -1):
        parent = _stored_tag(db, "::".join(parts[:depth]))
        if parent is not None:
            name = "::".join([parent, *parts[depth:]])
            break
    db.execute("insert into tags (tag, usn, collapsed, config) values (?, ?, 1, null)", (name, usn))
    return True


# --- config and col ----------------------------------------------------------------------


def json_bytes(value: Any) -> bytes:
    """A config value as stored in `config.val`: compact UTF-8 JSON (big integers too)."""
    try:
        return orjson.dumps(value)
    except TypeError:  # e.g. an integer beyond 64 bits
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def all_config(db: sqlite3.Connection) -> dict[str, Any]:
    return {key: json.loads(val) for key, val in db.execute("select key, val from config")}


def config_value(db: sqlite3.Connection, key: str) -> Any:
    """One config value; None when the key is absent or its value is not JSON."""
    row = db.execute("select val from config where key = ?", (key,)).fetchone()
    if row is None:
        return None
    try:
        return json.loads(row[0])
    except ValueError:
        return None


def clear_config_usns(db: sqlite3.Connection) -> None:
    db.execute("update config set usn = 0")


def replace_config(db: sqlite3.Connection, conf: dict[str, Any], usn: int, mtime: int) -> None:
    """Whole-table replacement: keys absent from `conf` are deleted."""
    db.execute("delete from config")
    db.executemany(
        "insert into config (key, usn, mtime_secs, val) values (?, ?, ?, ?)",
        [(key, usn, mtime, json_bytes(value)) for key, value in conf.items()],
    )


def set_creation_time(db: sqlite3.Connection, crt: int) -> None:
    db.execute("update col set crt = ?", (crt,))


def finish_col(db: sqlite3.Connection, now_ms: int) -> None:
    db.execute("update col set ls = ?, mod = ?, usn = usn + 1", (now_ms, now_ms))


# --- revlog, cards, notes ----------------------------------------------------------------


def _fetch(db: sqlite3.Connection, columns: str, table: str, ids: list[int]) -> list[Row]:
    """The rows of `ids` (those that exist), in the order of `ids`."""
    found: dict[int, Row] = {}
    for start in range(0, len(ids), 500):
        part = ids[start : start + 500]
        marks = ",".join("?" * len(part))
        rows = db.execute(f"select {columns} from {table} where id in ({marks})", part).fetchall()
        found.update({row[0]: row for row in rows})
    get = found.get
    return [row for row in map(get, ids) if row is not None]


def revlog_rows(db: sqlite3.Connection, ids: list[int]) -> list[Row]:
    return _fetch(db, REVLOG_COLUMNS, "revlog", ids)


def card_rows(db: sqlite3.Connection, ids: list[int]) -> list[Row]:
    return _fetch(db, CARD_COLUMNS, "cards", ids)


# `data` as a card goes out to clients: an empty one (text or blob) as "{}". The column has
# text affinity and is NOT NULL, so these are all its falsy values.
_CARD_WIRE_COLUMNS = CARD_COLUMNS.replace(
    "data", "case when data = '' or data = x'' then '{}' else data end"
)


def card_wire_rows(db: sqlite3.Connection, ids: list[int]) -> list[Row]:
    """`card_rows` with `data` as sent to clients (an empty one as "{}")."""
    return _fetch(db, _CARD_WIRE_COLUMNS, "cards", ids)


def note_rows(db: sqlite3.Connection, ids: list[int]) -> list[Row]:
    return _fetch(db, NOTE_COLUMNS, "notes", ids)


def add_revlog(db: sqlite3.Connection, rows: list[Row]) -> None:
    """Append-only: an id already present is left as it is."""
    db.executemany(f"insert or ignore into revlog ({REVLOG_COLUMNS}) values ({_marks(9)})", rows)


def usn_and_mtime(db: sqlite3.Connection, table: str, oid: int) -> tuple[int, int] | None:
    sql = f"select usn, mod from {_checked(table, ('cards', 'notes'))} where id = ?"
    row = db.execute(sql, (oid,)).fetchone()
    return None if row is None else (row[0], row[1])


def usns_and_mtimes(db: sqlite3.Connection, table: str, ids: list[int]) -> dict[int, tuple[int, int]]:
    """`usn_and_mtime` of many rows at once: id → (usn, mod) of those that exist."""
    sql = f"select id, usn, mod from {_checked(table, ('cards', 'notes'))} where id in "
    found: dict[int, tuple[int, int]] = {}
    for start in range(0, len(ids), 500):
        part = ids[start : start + 500]
        for oid, usn, mtime in db.execute(f"{sql}({_marks(len(part))})", part):
            found[oid] = (usn, mtime)
    return found


def put_card(db: sqlite3.Connection, row: Row) -> None:
    db.execute(_PUT_CARD, row)


def put_note(db: sqlite3.Connection, row: Row) -> None:
    db.execute(_PUT_NOTE, row)


def put_cards(db: sqlite3.Connection, rows: list[Row]) -> None:
    """`put_card` for each row, in order (a later row with the same id wins)."""
    db.executemany(_PUT_CARD, rows)


def put_notes(db: sqlite3.Connection, rows: list[Row]) -> None:
    """`put_note` for each row, in order (a later row with the same id wins)."""
    db.executemany(_PUT_NOTE, rows)


def _marks(n: int) -> str:
    return ",".join("?" * n)


_PUT_CARD = f"insert or replace into cards ({CARD_COLUMNS}) values ({_marks(18)})"
_PUT_NOTE = f"insert or replace into notes ({NOTE_COLUMNS}) values ({_marks(11)})"


# --- sanity check --------------------------------------------------------------------------


def tables_with_unsent_rows(db: sqlite3.Connection) -> list[str]:
    """Tables holding a row with usn = -1 (never valid on a server)."""
    return [
        table
        for table in USN_TABLES
        if db.execute(f"select exists(select 1 from {table} where usn = -1)").fetchone()[0]
    ]


def table_counts(db: sqlite3.Connection) -> dict[str, int]:
    return {t: db.execute(f"select count() from {t}").fetchone()[0] for t in COUNTED_TABLES}
