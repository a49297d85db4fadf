"""`applyChanges`: swap the unchunked objects — notetypes, decks, deck configs, tags, config.

The server's pending objects are gathered first, then the client's are merged by rule N
(the newer or equal `mod` wins), with the notetype shape guard and the `+` name fix-up
(spec 02 §3.4, §5.5.4, §6). JSON↔row conversion lives in the `storage` converter modules.
"""

from __future__ import annotations

import sqlite3
import time
from typing import Any

from ankihost.errors import BadRequest
from ankihost.protocol.values import as_id, as_int, as_list, as_str, field
from ankihost.storage import deck_configs, decks, notetypes, objects
from ankihost.storage.collection import read_col
from ankihost.sync.messages import Changes
from ankihost.sync.session import SyncSession


def _objects(value: Any, what: str) -> list[dict[str, Any]]:
    items = as_list(value, what)
    if not all(isinstance(item, dict) for item in items):
        raise BadRequest(f"{what}: every entry must be an object")
    return items


def parse_apply_changes(body: dict[str, Any]) -> Changes:
    changes = field(body, "changes")
    pair = as_list(field(changes, "decks"), "decks")
    if len(pair) != 2:
        raise BadRequest("decks must be [decks, deck configs]")
    conf = changes.get("conf")
    if conf is not None and not isinstance(conf, dict):
        raise BadRequest("conf must be an object")
    crt = changes.get("crt")
    return Changes(
        notetypes=_objects(field(changes, "models"), "models"),
        decks=_objects(pair[0], "decks"),
        deck_configs=_objects(pair[1], "deck configs"),
        tags=[as_str(t, "tag") for t in as_list(field(changes, "tags"), "tags")],
        config=conf,
        creation_time=None if crt is None else as_int(crt, "crt"),
    )


def apply_changes(db: sqlite3.Connection, session: SyncSession, changes: Changes) -> dict[str, Any]:
    """Merge the client's changes; reply with the server's, gathered before merging."""
    reply = server_changes(db, session)
    merge_notetypes(db, session, changes.notetypes)
    merge_decks(db, session, changes.decks)
    merge_deck_configs(db, session, changes.deck_configs)
    for tag in changes.tags:
        objects.register_tag(db, tag, session.server_usn)
    if changes.creation_time is not None:
        objects.set_creation_time(db, changes.creation_time)
    if changes.config is not None:
        objects.replace_config(db, changes.config, session.server_usn, int(time.time()))
    return reply


def server_changes(db: sqlite3.Connection, session: SyncSession) -> dict[str, Any]:
    since = session.client_usn
    reply: dict[str, Any] = {
        "models": [notetypes.to_legacy(db, i) for i in notetypes.ids_with_usn_at_least(db, since)],
        "decks": [
            [decks.to_legacy(db, i) for i in decks.ids_with_usn_at_least(db, since)],
            [deck_configs.to_legacy(db, i) for i in deck_configs.ids_with_usn_at_least(db, since)],
        ],
        "tags": objects.pending_tags(db, since),
    }
    if not session.client_is_newer:
        reply["conf"] = objects.all_config(db)
        reply["crt"] = read_col(db).crt
        objects.clear_config_usns(db)
    return reply


def _applicable(stored_mtime: int | None, obj: dict[str, Any]) -> bool:
    """Rule N: apply when the object is new here or ours is not newer than the incoming."""
    return stored_mtime is None or stored_mtime <= as_id(obj.get("mod", 0), "mod")


def merge_notetypes(
    db: sqlite3.Connection, session: SyncSession, items: list[dict[str, Any]]
) -> None:
    for obj in items:
        ntid = as_id(field(obj, "id"))
        if not _applicable(notetypes.mtime_secs(db, ntid), obj):
            continue
        stored_shape = notetypes.shape(db, ntid)
        incoming_shape = (len(as_list(field(obj, "flds"))), len(as_list(field(obj, "tmpls"))))
        if stored_shape is not None and stored_shape != incoming_shape:
            raise BadRequest(f"notetype {ntid}: schema changed; a full sync is required")
        obj = {**obj, "usn": session.server_usn}
        notetypes.ensure_unique_name(db, obj, session.server_usn, int(time.time()))
        notetypes.from_legacy(db, obj)


def merge_decks(db: sqlite3.Connection, session: SyncSession, items: list[dict[str, Any]]) -> None:
    for obj in items:
        if _applicable(decks.mtime_secs(db, as_id(field(obj, "id"))), obj):
            obj = {**obj, "usn": session.server_usn}
            decks.ensure_unique_name(db, obj, session.server_usn, int(time.time()))
            decks.from_legacy(db, obj)


def merge_deck_configs(
    db: sqlite3.Connection, session: SyncSession, items: list[dict[str, Any]]
) -> None:
    for obj in items:
        if _applicable(deck_configs.mtime_secs(db, as_id(field(obj, "id"))), obj):
            deck_configs.from_legacy(db, {**obj, "usn": session.server_usn})
