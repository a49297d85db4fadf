"""A full, normalised snapshot of a collection, to compare two devices.

The snapshot is read straight from the SQLite file through the client's DB
handle: **every table and every column**, rows keyed by primary key, so a
column the server drops or mangles shows up. Tables covered (schema 18):
``col``, ``notes``, ``cards``, ``revlog``, ``graves``, ``decks``,
``deck_config``, ``notetypes``, ``fields``, ``templates``, ``tags``,
``config`` - and any other non-internal table that appears in a future
schema. Protobuf/JSON blobs are compared byte for byte (shown as hex).

A decoded view is added for readable failure messages and as a second check
that the client reads back the same objects: decks, deck configs and
notetypes (with fields and templates) as the client's legacy dicts, tags,
and the whole collection config.

Ignored, because they legitimately differ between two devices that hold the
same collection after a full sync (each is listed in :data:`IGNORED_COLUMNS`
or :data:`IGNORED_TABLES` with the reason):

* ``col.ls`` - "last sync" time: set per device when it finishes a sync;
* ``col.mod`` - collection modification time: the downloading device
  stamps it on the new file;
* ``col.usn`` - the sync counter: after a full upload the uploading device
  holds N, while the server's copy - and so the downloading device - holds
  N+1 (measured with the official server; ankihost matches). Tests check
  the sync state instead: a follow-up sync on both devices must report no
  changes;
* ``sqlite_*`` tables (``sqlite_stat1``, ``sqlite_sequence``) - SQLite's
  own bookkeeping, rewritten by ``ANALYZE``/``VACUUM``, not collection data.

Nothing else is ignored: ids, guids, ``mod`` times, ``usn`` values, ``scm``,
``crt`` and the blobs must all be identical.
"""

from __future__ import annotations

import json
from typing import Any

from anki.collection import Collection

Snapshot = dict[str, Any]

IGNORED_COLUMNS: dict[tuple[str, str], str] = {
    ("col", "ls"): "last-sync time, set by each device when its sync finishes",
    ("col", "mod"): "collection mtime, stamped by the device that downloads",
    ("col", "usn"): "sync counter: uploader holds N, the server copy and so the downloader N+1 "
    "(official server too); checked instead by a follow-up sync reporting no changes on both",
}
IGNORED_TABLES: dict[str, str] = {
    "sqlite_stat1": "SQLite ANALYZE statistics, not collection data",
    "sqlite_sequence": "SQLite AUTOINCREMENT bookkeeping",
}


def _value(v: Any) -> Any:
    """Blobs as hex (the client's DB proxy returns them as bytes or as a list
    of ints; SQLite values are otherwise scalars)."""
    if isinstance(v, (bytes, bytearray, memoryview)):
        return bytes(v).hex()
    if isinstance(v, list):
        return bytes(v).hex()
    return v


def _table_names(col: Collection) -> list[str]:
    rows = col.db.list("select name from sqlite_master where type = 'table' order by name")
    return [r for r in rows if r not in IGNORED_TABLES and not r.startswith("sqlite_")]


def _columns(col: Collection, table: str) -> tuple[list[str], list[str]]:
    """(all column names, primary-key column names) of a table."""
    info = col.db.all(f"pragma table_info({table})")
    names = [row[1] for row in info]
    pk = [row[1] for row in sorted(info, key=lambda r: r[5]) if row[5] > 0]
    return names, pk


def raw_tables(col: Collection) -> dict[str, dict[str, dict[str, Any]]]:
    """{table: {primary-key-as-text: {column: value}}} for every table."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for table in _table_names(col):
        names, pk = _columns(col, table)
        kept = [n for n in names if (table, n) not in IGNORED_COLUMNS]
        rows: dict[str, dict[str, Any]] = {}
        for i, row in enumerate(col.db.execute(f"select {', '.join(names)} from {table}")):
            record = dict(zip(names, row, strict=True))
            key = "|".join(str(record[k]) for k in pk) if pk else str(i)
            rows[key] = {n: _value(record[n]) for n in kept}
        out[table] = rows
    return out


def _decoded(col: Collection) -> dict[str, Any]:
    col.models._clear_cache()  # read from the DB, not a stale cache
    notetypes = {}
    for nt in col.models.all():
        notetypes[str(nt["id"])] = nt  # includes 'flds' and 'tmpls'
    return {
        "decks": {str(d["id"]): d for d in col.decks.all()},
        "deck_configs": {str(c["id"]): c for c in col.decks.all_config()},
        "notetypes": notetypes,
        "tags": sorted(col.tags.all()),
        "config": col.all_config(),
    }


def snapshot(col: Collection) -> Snapshot:
    """Everything a full sync must carry, minus the documented exceptions."""
    tables = raw_tables(col)
    return {
        "counts": {name: len(rows) for name, rows in tables.items()},
        "tables": tables,
        "decoded": _decoded(col),
    }


def only_tables(snap: Snapshot, *tables: str) -> Snapshot:
    """A snapshot restricted to some raw tables (no decoded view), e.g. to
    compare notes/cards/revlog after a *normal* sync, which - unlike a full
    sync - does not carry per-row ``usn``/``mtime_secs`` of the ``config``
    table across devices."""
    return {
        "counts": {t: snap["counts"][t] for t in tables},
        "tables": {t: snap["tables"][t] for t in tables},
        "decoded": {},
    }


def _diff_mapping(path: str, a: dict, b: dict, out: list[str], limit: int) -> None:
    only_a = sorted(set(a) - set(b), key=str)
    only_b = sorted(set(b) - set(a), key=str)
    if only_a:
        out.append(f"{path}: {len(only_a)} only in A, e.g. {only_a[:5]}")
    if only_b:
        out.append(f"{path}: {len(only_b)} only in B, e.g. {only_b[:5]}")
    changed = sorted((k for k in a.keys() & b.keys() if a[k] != b[k]), key=str)
    for k in changed[:limit]:
        va, vb = a[k], b[k]
        if isinstance(va, dict) and isinstance(vb, dict):
            cols = {c: (va.get(c), vb.get(c)) for c in va.keys() | vb.keys() if va.get(c) != vb.get(c)}
            out.append(f"{path}[{k}]: {json.dumps(cols, default=str, ensure_ascii=False)[:500]}")
        else:
            out.append(f"{path}[{k}]: A={str(va)[:250]} B={str(vb)[:250]}")
    if len(changed) > limit:
        out.append(f"{path}: ... and {len(changed) - limit} more differing entries")


def diff(a: Snapshot, b: Snapshot, limit: int = 10) -> list[str]:
    """Readable differences between two snapshots; empty when equal."""
    out: list[str] = []
    if a["counts"] != b["counts"]:
        out.append(f"row counts: A={a['counts']} B={b['counts']}")
    for group in ("tables", "decoded"):
        for name in sorted(a[group].keys() | b[group].keys()):
            va, vb = a[group].get(name), b[group].get(name)
            if va == vb:
                continue
            if isinstance(va, dict) and isinstance(vb, dict):
                _diff_mapping(f"{group}.{name}", va, vb, out, limit)
            else:
                out.append(f"{group}.{name}: A={str(va)[:300]} B={str(vb)[:300]}")
    return out


def assert_same(a: Snapshot, b: Snapshot, what: str = "collections") -> None:
    """Assert equal snapshots, with a readable list of differences."""
    differences = diff(a, b)
    assert not differences, f"{what} differ:\n  " + "\n  ".join(differences)
