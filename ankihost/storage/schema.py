"""The schema-18 collection file: creating an empty one for a new user, and checking uploads.

A new collection is built from the table definitions below (spec 04 §3–4): the default deck and
deck options, the scheduler config keys, `mod = 0` so a brand-new client sees "no changes".
No stock notetypes are added; clients create `Basic` through Check Database when none exists.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

from ankihost.errors import ServerError
from ankihost.storage.collection import atomic, connect, is_server_fault, now_millis
from ankihost.storage.paths import UserFolder, atomic_replace, remove_sidecars

SCHEMA_VERSION = 18
SQLITE_MAGIC = b"SQLite format 3\x00"

# The tables schema 11 already had, unchanged since (spec 04 §6.0).
BASE_TABLES = """
create table col (id integer primary key, crt integer not null, mod integer not null,
  scm integer not null, ver integer not null, dty integer not null, usn integer not null,
  ls integer not null, conf text not null, models text not null, decks text not null,
  dconf text not null, tags text not null);
create table notes (id integer primary key, guid text not null, mid integer not null,
  mod integer not null, usn integer not null, tags text not null, flds text not null,
  sfld integer not null, csum integer not null, flags integer not null, data text not null);
create table cards (id integer primary key, nid integer not null, did integer not null,
  ord integer not null, mod integer not null, usn integer not null, type integer not null,
  queue integer not null, due integer not null, ivl integer not null, factor integer not null,
  reps integer not null, lapses integer not null, left integer not null, odue integer not null,
  odid integer not null, flags integer not null, data text not null);
create table revlog (id integer primary key, cid integer not null, usn integer not null,
  ease integer not null, ivl integer not null, lastIvl integer not null, factor integer not null,
  time integer not null, type integer not null);
"""

# The tables that schema 18 adds to them, and its `graves` with a primary key.
SCHEMA18_TABLES = """
create table graves (oid integer not null, type integer not null, usn integer not null,
  primary key (oid, type)) without rowid;
create table deck_config (id integer primary key not null, name text not null collate unicase,
  mtime_secs integer not null, usn integer not null, config blob not null);
create table config (KEY text not null primary key, usn integer not null,
  mtime_secs integer not null, val blob not null) without rowid;
create table fields (ntid integer not null, ord integer not null,
  name text not null collate unicase, config blob not null, primary key (ntid, ord)) without rowid;
create table templates (ntid integer not null, ord integer not null,
  name text not null collate unicase, mtime_secs integer not null, usn integer not null,
  config blob not null, primary key (ntid, ord)) without rowid;
create table notetypes (id integer not null primary key, name text not null collate unicase,
  mtime_secs integer not null, usn integer not null, config blob not null);
create table decks (id integer primary key not null, name text not null collate unicase,
  mtime_secs integer not null, usn integer not null, common blob not null, kind blob not null);
create table tags (tag text not null primary key collate unicase, usn integer not null,
  collapsed boolean not null, config blob null) without rowid;
"""

# Every index of schema 18 (the first seven are schema 11's); "if not exists" so that a
# converted file keeps the ones it has.
INDEXES = """
create index if not exists ix_notes_usn on notes (usn);
create index if not exists ix_cards_usn on cards (usn);
create index if not exists ix_revlog_usn on revlog (usn);
create index if not exists ix_cards_nid on cards (nid);
create index if not exists ix_cards_sched on cards (did, queue, due);
create index if not exists ix_revlog_cid on revlog (cid);
create index if not exists ix_notes_csum on notes (csum);
create unique index if not exists idx_fields_name_ntid on fields (name, ntid);
create unique index if not exists idx_templates_name_ntid on templates (name, ntid);
create index if not exists idx_templates_usn on templates (usn);
create unique index if not exists idx_notetypes_name on notetypes (name);
create index if not exists idx_notetypes_usn on notetypes (usn);
create unique index if not exists idx_decks_name on decks (name);
create index if not exists idx_notes_mid on notes (mid);
create index if not exists idx_cards_odid on cards (odid) where odid != 0;
create index if not exists idx_graves_pending on graves (usn);
"""

# Columns a schema-18 file must have for the server to sync it (spec 04 §3).
REQUIRED_COLUMNS: dict[str, set[str]] = {
    "col": {"id", "crt", "mod", "scm", "ver", "usn", "ls"},
    "notes": {"id", "guid", "mid", "mod", "usn", "tags", "flds", "sfld", "csum", "flags", "data"},
    "cards": {"id", "nid", "did", "ord", "mod", "usn", "type", "queue", "due", "ivl", "factor",
              "reps", "lapses", "left", "odue", "odid", "flags", "data"},
    "revlog": {"id", "cid", "usn", "ease", "ivl", "lastivl", "factor", "time", "type"},
    "graves": {"oid", "type", "usn"},
    "deck_config": {"id", "name", "mtime_secs", "usn", "config"},
    "config": {"key", "usn", "mtime_secs", "val"},
    "fields": {"ntid", "ord", "name", "config"},
    "templates": {"ntid", "ord", "name", "mtime_secs", "usn", "config"},
    "notetypes": {"id", "name", "mtime_secs", "usn", "config"},
    "decks": {"id", "name", "mtime_secs", "usn", "common", "kind"},
    "tags": {"tag", "usn", "collapsed"},
}

# Default deck options ("Default", id 1) as the official 26.9.3 encodes them (spec 04 §4.1).
DEFAULT_DECK_CONFIG = bytes.fromhex(
    "0a080000803f00002041120400002041221c0000803f0000803f0000803f0000803f0000803f0000803f"
    "0000803f481450c8015d00002040656666a63f6d9a99993f7d0000803f8001949d02880101900101980104"
    "a80101b00108c0013cad026666663fc5026666663fe00201"
)
DEFAULT_DECK_COMMON = bytes.fromhex("08011001")  # study and browser collapsed
DEFAULT_DECK_KIND = bytes.fromhex("0a020801")  # normal deck using options 1

# Config keys of a new server collection (spec 04 §4.1), as JSON text.
DEFAULT_CONFIG = {
    "activeDecks": "[1]", "addToCur": "true", "collapseTime": "1200", "creationOffset": "null",
    "curDeck": "1", "dayLearnFirst": "false", "dueCounts": "true", "estTimes": "true",
    "newSpread": "0", "nextPos": "1", "sched2021": "true", "schedVer": "2",
    "sortBackwards": "false", "sortType": '"noteFld"', "timeLim": "0",
}


def day_start_secs(now: datetime | None = None, rollover_hour: int = 4) -> int:
    """Unix seconds of the most recent local `rollover_hour`:00, the scheduler's day 0."""
    now = now or datetime.now().astimezone()
    start = now.replace(hour=rollover_hour, minute=0, second=0, microsecond=0)
    if start > now:
        start -= timedelta(days=1)
    return int(start.timestamp())


def _fill_empty(db: sqlite3.Connection) -> None:
    db.executescript(BASE_TABLES + SCHEMA18_TABLES + INDEXES)
    with atomic(db):
        db.execute(
            "insert into col values (1, ?, 0, ?, ?, 0, 0, 0, '', '', '', '', '')",
            (day_start_secs(), now_millis(), SCHEMA_VERSION),
        )
        db.execute(
            "insert into deck_config values (1, 'Default', 0, 0, ?)", (DEFAULT_DECK_CONFIG,)
        )
        db.execute(
            "insert into decks values (1, 'Default', 0, 0, ?, ?)",
            (DEFAULT_DECK_COMMON, DEFAULT_DECK_KIND),
        )
        db.executemany(
            "insert into config values (?, 0, 0, ?)",
            [(key, value.encode()) for key, value in DEFAULT_CONFIG.items()],
        )


def create_empty(path: Path, scratch: Path) -> None:
    """Write a new empty collection at `path` (atomically: it appears complete or not at all),
    building it in the empty file `scratch` beside it (`UserFolder.new_collection_path`)."""
    try:
        db = connect(scratch)
        try:
            db.execute("pragma page_size = 4096")
            db.execute("pragma journal_mode = wal")
            _fill_empty(db)
        finally:
            db.close()
        remove_sidecars(path)
        atomic_replace(scratch, path)
    finally:
        scratch.unlink(missing_ok=True)
        remove_sidecars(scratch)


def open_or_create(folder: UserFolder) -> sqlite3.Connection:
    """Open a user's collection for serving, creating an empty one first if there is none."""
    path = folder.collection
    if not path.exists():
        create_empty(path, folder.new_collection_path())
    try:
        db = connect(path)
        db.execute("pragma journal_mode = wal")
        version = db.execute("select ver from col").fetchone()[0]
    except sqlite3.Error as exc:
        raise ServerError(f"cannot open collection {path}: {exc}") from exc
    if version != SCHEMA_VERSION:
        db.close()
        raise ServerError(f"collection {path} has schema {version}, expected {SCHEMA_VERSION}")
    return db


def upload_problem(path: Path) -> str | None:
    """Why the file at `path` is not a collection we can serve, or None when it is.

    Checks, in order (spec 04 §5.3): SQLite magic, a single `col` row of schema 18, every
    required table and column, and `PRAGMA integrity_check` with the unicase collation.
    """
    return file_problem(path, lambda db: required_tables_problem(db) or integrity_problem(db))


def file_problem(path: Path, check: Callable[[sqlite3.Connection], str | None]) -> str | None:
    """Why the file at `path` is not a collection `check` accepts: not SQLite, unreadable, or
    what `check` says of it. Our own disk or memory trouble is a ServerError, not the file's."""
    with open(path, "rb") as f:
        if f.read(len(SQLITE_MAGIC)) != SQLITE_MAGIC:
            return "not an SQLite file"
    try:
        db = connect(path, exclusive=False)
        try:
            return check(db)
        finally:
            db.close()
    except sqlite3.Error as exc:
        if is_server_fault(exc):
            raise ServerError(f"could not check the upload: {exc}") from exc
        return f"unreadable: {exc}"


def required_tables_problem(db: sqlite3.Connection) -> str | None:
    """Why the file is not a schema-18 collection: a missing table or column, or `ver`."""
    return columns_problem(db, REQUIRED_COLUMNS, SCHEMA_VERSION)


def columns_problem(db: sqlite3.Connection, required: dict[str, set[str]], version: int) -> str | None:
    """A missing table or column of `required`, or a `col` that is not one row of `version`."""
    for table, wanted in required.items():
        have = {row[1].lower() for row in db.execute(f"pragma table_info({table})")}
        if not have:
            return f"table {table} is missing"
        if missing := wanted - have:
            return f"table {table} lacks columns {sorted(missing)}"
    rows = db.execute("select ver from col").fetchall()
    if len(rows) != 1:
        return f"col has {len(rows)} rows"
    if rows[0][0] != version:
        return f"schema version {rows[0][0]} is not {version}"
    return None


def integrity_problem(db: sqlite3.Connection) -> str | None:
    """Why `PRAGMA integrity_check` is not happy with the file (None when it is)."""
    rows = db.execute("pragma integrity_check").fetchall()
    if rows != [("ok",)]:
        return "integrity check failed: " + "; ".join(str(r[0]) for r in rows[:5])
    return None
