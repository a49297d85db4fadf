"""Schema-11 collection files, the full-sync format of clients on protocol 8–10.

Converts between schema 18 (what ankihost stores) and schema 11 (notetypes, decks, deck
options, tags and config as JSON in the `col` row; spec 04 §6), through the legacy-JSON
converters normal sync uses. Both directions work on a file of their own, never on the live
collection: `downgrade_in_place` and `upgrade_in_place` change a private copy (a download
snapshot, an upload temp file); `downgrade` and `upgrade` copy first and leave the source as it
is. The big tables (notes, cards, revlog) are never read into Python.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import sqlite3
import tempfile
import time
import unicodedata
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ankihost.errors import BadRequest, ServerError
from ankihost.storage import deck_configs, decks, notetypes, objects, schema
from ankihost.storage.collection import atomic, connect, is_server_fault
from ankihost.storage.paths import remove_sidecars

SCHEMA11_VERSION = 11
# The JSON columns of `col`, each a JSON object in schema 11 and '' in schema 18.
JSON_COLUMNS = ("conf", "models", "decks", "dconf", "tags")
# What a schema-11 file must have (spec 04 §3, `rslib/src/storage/schema11.sql`).
SCHEMA11_COLUMNS: dict[str, set[str]] = {
    "col": {"id", "crt", "mod", "scm", "ver", "dty", "usn", "ls", *JSON_COLUMNS},
    "notes": schema.REQUIRED_COLUMNS["notes"],
    "cards": schema.REQUIRED_COLUMNS["cards"],
    "revlog": schema.REQUIRED_COLUMNS["revlog"],
    "graves": {"usn", "oid", "type"},
}
# The tables only schema 18 has (graves exists in both, with another layout).
SCHEMA18_ONLY = ("deck_config", "config", "tags", "fields", "templates", "notetypes", "decks")
SCHEMA18_ONLY_INDEXES = ("idx_notes_mid", "idx_cards_odid")
BACKUP_PAGES_PER_STEP = 4096  # pages the backup API copies at a time (16 MiB at 4 KiB pages)
# SQLite's page cache for a file being checked or converted: each passes over it once or twice,
# so the cache of the live collection's connections (40 MiB) would only hold its pages longer.
CONVERSION_CACHE_KIB = 2048

LegacyCol = dict[str, dict[str, Any]]


# --- 18 → 11 ----------------------------------------------------------------------------------


def downgrade(source: Path, target: Path) -> None:
    """Write a schema-11 copy of the schema-18 collection `source` to `target`.

    `source` is only read (a checkpointed snapshot, or any file nobody writes meanwhile);
    `target` appears complete or not at all. Failures are ours: ServerError.
    """
    try:
        _converted_copy(source, target, downgrade_in_place)
    except BadRequest as exc:  # our own file, unreadable: not the client's fault
        raise ServerError(f"cannot downgrade {source.name}: {exc.reason}") from exc


def downgrade_in_place(path: Path) -> None:
    """Turn the private schema-18 file at `path` into schema 11 in rollback-journal mode.

    As the official server's downgrade (`downgrade_to_schema_11`): the objects move into the
    `col` JSON columns, `graves` gets its old layout, the newer tables and indexes are dropped,
    `ver = 11`, `journal_mode = delete`. Page size and free pages stay as they are.
    """
    db = _open(path)
    try:
        problem = schema.required_tables_problem(db)
        if problem:
            raise ServerError(f"cannot downgrade {path.name}: {problem}")
        # rollback-journal mode first: the changes then skip the WAL and its checkpoint
        if db.execute("pragma journal_mode = delete").fetchone() != ("delete",):
            raise ServerError(f"cannot downgrade {path.name}: journal mode stays WAL")
        with atomic(db):
            legacy = _legacy_col(db)
            _old_graves(db)
            for table in SCHEMA18_ONLY:
                db.execute(f"drop table {table}")
            for index in SCHEMA18_ONLY_INDEXES:
                db.execute(f"drop index if exists {index}")
            _write_legacy_col(db, legacy)
    except sqlite3.Error as exc:
        raise ServerError(f"cannot downgrade {path.name}: {exc}") from exc
    finally:
        db.close()


def _legacy_col(db: sqlite3.Connection) -> LegacyCol:
    """The schema-18 objects as the JSON maps of a schema-11 `col` row (keys are ids as text)."""
    tags = dict(db.execute("select tag, usn from tags"))
    return {
        "conf": objects.all_config(db),
        "models": {str(id): notetypes.to_legacy(db, id) for id in notetypes.all_ids(db)},
        "decks": {str(id): decks.to_legacy(db, id) for id in decks.all_ids(db)},
        "dconf": {str(id): deck_configs.to_legacy(db, id) for id in deck_configs.all_ids(db)},
        "tags": tags,
    }


def _old_graves(db: sqlite3.Connection) -> None:
    db.execute("alter table graves rename to graves_new")
    db.execute(
        "create table graves (usn integer not null, oid integer not null, type integer not null)"
    )
    db.execute("insert into graves (usn, oid, type) select usn, oid, type from graves_new")
    db.execute("drop table graves_new")


def _write_legacy_col(db: sqlite3.Connection, legacy: LegacyCol) -> None:
    values = [objects.json_bytes(legacy[column]).decode("utf-8") for column in JSON_COLUMNS]
    db.execute(
        "update col set conf = ?, models = ?, decks = ?, dconf = ?, tags = ?, ver = ?",
        (*values, SCHEMA11_VERSION),
    )


# --- 11 → 18 ----------------------------------------------------------------------------------


def upgrade(source: Path, target: Path) -> str | None:
    """Validate the schema-11 file `source` and write it as schema 18 to `target`.

    Returns why the file cannot be a collection (nothing is written at `target` then), or
    None when `target` holds the upgraded collection. `source` is only read.
    """
    try:
        _converted_copy(source, target, _upgrade_or_raise)
    except BadRequest as exc:
        return exc.reason
    return None


def upgrade_in_place(path: Path) -> str | None:
    """`upgrade` for a private file (an upload's temp file): converts `path` itself.

    After a problem is returned the file's content is unspecified; the caller deletes it.
    """
    try:
        _upgrade_or_raise(path)
    except BadRequest as exc:
        return exc.reason
    return None


def _upgrade_or_raise(path: Path) -> None:
    problem = schema11_problem(path)
    if problem:
        raise BadRequest(problem)
    db = _open(path)
    try:
        with atomic(db):
            legacy = _read_legacy_col(db)
            _add_schema18_objects(db, legacy)
        db.execute("pragma journal_mode = wal")
    except sqlite3.Error as exc:
        if is_server_fault(exc):
            raise ServerError(f"could not upgrade {path.name}: {exc}") from exc
        raise BadRequest(f"upgrade failed: {exc}") from exc
    finally:
        db.close()


def declares_schema11(path: Path) -> bool:
    """Whether `path` is an SQLite file whose `col.ver` says 11 (nothing else is checked:
    `upgrade_in_place` does that); False for anything unreadable."""
    with open(path, "rb") as f:
        if f.read(len(schema.SQLITE_MAGIC)) != schema.SQLITE_MAGIC:
            return False
    try:
        db = connect(path, exclusive=False)
        try:
            return db.execute("select ver from col").fetchall() == [(SCHEMA11_VERSION,)]
        finally:
            db.close()
    except sqlite3.Error:
        return False


def schema11_problem(path: Path) -> str | None:
    """Why `path` is not a schema-11 collection we can upgrade, or None when it is.

    In order: SQLite magic, the schema-11 tables and columns (and none of schema 18), one `col`
    row with `ver = 11`, valid JSON objects in its JSON columns, `PRAGMA integrity_check`.
    """
    return schema.file_problem(path, _check)


def _check(db: sqlite3.Connection) -> str | None:
    db.execute(f"pragma cache_size = -{CONVERSION_CACHE_KIB}")
    return _structure_problem(db) or _json_problem(db) or schema.integrity_problem(db)


def _structure_problem(db: sqlite3.Connection) -> str | None:
    if problem := schema.columns_problem(db, SCHEMA11_COLUMNS, SCHEMA11_VERSION):
        return problem
    names = [name for (name,) in db.execute("select name from sqlite_master where type = 'table'")]
    if newer := sorted(set(SCHEMA18_ONLY) & set(names)):
        return f"a schema-11 file with schema-18 tables {newer}"
    return None


def _json_problem(db: sqlite3.Connection) -> str | None:
    try:
        _read_legacy_col(db)
    except BadRequest as exc:
        return exc.reason
    return None


def _read_legacy_col(db: sqlite3.Connection) -> LegacyCol:
    row = db.execute(f"select {', '.join(JSON_COLUMNS)} from col").fetchone()
    legacy: LegacyCol = {}
    for column, text in zip(JSON_COLUMNS, row, strict=True):
        try:
            value = _json_loads(text)
        except ValueError as exc:
            raise BadRequest(f"col.{column} is not valid JSON: {exc}") from None
        if not isinstance(value, dict):
            raise BadRequest(f"col.{column} is not a JSON object")
        legacy[column] = value
    return legacy


def _json_loads(text: Any) -> Any:
    """Strict JSON text (str or UTF-8 bytes) → value; ValueError when it is not JSON."""
    if isinstance(text, bytes):
        text = text.decode("utf-8")
    if not isinstance(text, str):
        raise ValueError(f"expected text, got {type(text).__name__}")
    return json.loads(text, parse_constant=_no_constants)


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _add_schema18_objects(db: sqlite3.Connection, legacy: LegacyCol) -> None:
    """In the caller's transaction: the schema-18 tables, filled from the legacy JSON."""
    usn = int(db.execute("select usn from col").fetchone()[0])
    db.execute("alter table graves rename to graves_old")
    for statement in schema.SCHEMA18_TABLES.split(";"):
        if statement.strip():
            db.execute(statement)
    db.execute(
        "insert or ignore into graves (oid, type, usn) select oid, type, usn from graves_old"
    )
    db.execute("drop table graves_old")
    _add_config_and_tags(db, legacy)
    _add_deck_configs(db, legacy["dconf"])
    _add_notetypes(db, legacy["models"])
    _add_decks(db, legacy["decks"], usn)
    for statement in schema.INDEXES.split(";"):
        if statement.strip():
            db.execute(statement)
    db.execute(
        "update col set conf = '', models = '', decks = '', dconf = '', tags = '', ver = ?",
        (schema.SCHEMA_VERSION,),
    )


def _add_config_and_tags(db: sqlite3.Connection, legacy: LegacyCol) -> None:
    objects.replace_config(db, legacy["conf"], usn=0, mtime=0)
    for tag, tag_usn in legacy["tags"].items():
        if not isinstance(tag_usn, int) or isinstance(tag_usn, bool):
            raise BadRequest(f"col.tags: usn of {tag!r} is not an integer")
        db.execute(
            "insert or ignore into tags (tag, usn, collapsed, config) values (?, ?, 1, null)",
            (tag, tag_usn),
        )


def _add_deck_configs(db: sqlite3.Connection, dconf: dict[str, Any]) -> None:
    for key, obj in dconf.items():
        if not isinstance(obj, dict):
            raise BadRequest(f"col.dconf[{key}] is not an object")
        deck_configs.from_legacy(db, {**obj, "id": key})  # the map key wins, as upstream


def _add_notetypes(db: sqlite3.Connection, models: dict[str, Any]) -> None:
    for key, obj in models.items():
        if not isinstance(obj, dict):
            raise BadRequest(f"col.models[{key}] is not an object")
        obj = _tidy_notetype(obj)
        obj["name"] = _free_name(db, "notetypes", obj["name"], "_")
        notetypes.from_legacy(db, obj)


def _tidy_notetype(obj: dict[str, Any]) -> dict[str, Any]:
    """Names in NFC, field and template names made unique with "+", a random id for id 0
    (ids of 0 exist in the wild), as the official upgrade does."""
    tidy = {**obj}
    if tidy.get("id") in (0, "0"):
        tidy["id"] = random.randint(1, 2**32 - 1)
    name = tidy.get("name")
    tidy["name"] = unicodedata.normalize("NFC", name) if isinstance(name, str) else name
    for key in ("tmpls", "flds"):
        if isinstance(tidy.get(key), list):
            tidy[key] = _unique_names(tidy[key])
    return tidy


def _unique_names(items: list[Any]) -> list[Any]:
    seen: set[str] = set()
    out = []
    for item in items:
        if isinstance(item, dict) and isinstance(item.get("name"), str):
            name = unicodedata.normalize("NFC", item["name"])
            while name.casefold() in seen:
                name += "+"
            seen.add(name.casefold())
            item = {**item, "name": name}
        out.append(item)
    return out


def _add_decks(db: sqlite3.Connection, legacy_decks: dict[str, Any], usn: int) -> None:
    """Names normalised and made unique with "_"; a deck whose name changed is marked
    modified (now, the collection's usn), as the official upgrade does."""
    for key, obj in legacy_decks.items():
        if not isinstance(obj, dict) or not isinstance(obj.get("name"), str):
            raise BadRequest(f"col.decks[{key}] is not a deck object")
        native = decks.native_name(obj["name"])
        unique = _free_name(db, "decks", native, "_")
        deck = {**obj, "name": decks.human_name(unique)}
        if deck["name"] != obj["name"]:
            deck.update(mod=int(time.time()), usn=usn)
        decks.from_legacy(db, deck)


def _free_name(db: sqlite3.Connection, table: str, name: Any, suffix: str) -> Any:
    """`name`, with `suffix` appended until no row of `table` holds it (ignoring case)."""
    if not isinstance(name, str):
        return name  # the converter rejects it
    while db.execute(f"select 1 from {table} where name = ?", (name,)).fetchone():
        name += suffix
    return name


# --- files ------------------------------------------------------------------------------------


def _open(path: Path) -> sqlite3.Connection:
    """A connection to a private file being converted: without fsyncs, as nothing here needs
    them (a download copy is thrown away after sending; an upload is fsynced when installed,
    by `paths.atomic_replace`)."""
    try:
        db = connect(path)
        db.execute("pragma synchronous = off")
        db.execute(f"pragma cache_size = -{CONVERSION_CACHE_KIB}")
        return db
    except sqlite3.Error as exc:
        raise ServerError(f"cannot open {path.name}: {exc}") from exc


def _converted_copy(source: Path, target: Path, convert: Callable[[Path], object]) -> None:
    """Copy `source` beside `target`, convert the copy, then move it to `target`."""
    fd, name = tempfile.mkstemp(prefix=target.name + ".", suffix=".part", dir=target.parent)
    os.close(fd)
    part = Path(name)
    try:
        copy_collection(source, part)
        convert(part)
        remove_sidecars(part)
        os.replace(part, target)
    finally:
        part.unlink(missing_ok=True)
        remove_sidecars(part)


def copy_collection(source: Path, target: Path) -> None:
    """Copy the collection file `source`, and its `-wal` if one lies beside it, to `target`
    (opening the copy folds that WAL in). Streams the bytes; the source is not opened at all,
    so nothing changes beside it. Nobody may write `source` meanwhile: for the live collection
    use `snapshot` on its connection instead."""
    try:
        shutil.copyfile(source, target)
        wal = Path(f"{source}-wal")
        if wal.exists():
            shutil.copyfile(wal, Path(f"{target}-wal"))
    except FileNotFoundError as exc:
        raise BadRequest(f"no such file: {exc.filename}") from exc
    except OSError as exc:
        raise ServerError(f"could not copy {source.name}: {exc}") from exc


def snapshot(db: sqlite3.Connection, target: Path) -> None:
    """Copy the collection open on `db` (e.g. the user's live connection, under their lock)
    to the new file `target`: everything committed, WAL included, nothing written to `db`'s
    file. Call it outside any transaction on `db`, or its uncommitted changes go along."""
    try:
        _backup(db, target)
    except sqlite3.Error as exc:
        raise ServerError(f"could not copy the collection: {exc}") from exc


def _backup(src: sqlite3.Connection, target: Path) -> None:
    """SQLite's online backup in steps of BACKUP_PAGES_PER_STEP pages: page by page, so memory
    stays bounded whatever the size."""
    dst = sqlite3.connect(str(target))
    try:
        src.backup(dst, pages=BACKUP_PAGES_PER_STEP)
    finally:
        dst.close()
