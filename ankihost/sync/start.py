"""`start` and `applyGraves`: the server's deletions since the client's usn, and the client's.

`start` only computes; opening the session and its transaction is `UserCollection.begin_session`'s
job. Deletions always win (no mtime check) and never cascade (spec 02 §3.2, §3.3).
"""

from __future__ import annotations

import sqlite3
from typing import Any

from ankihost.errors import BadRequest
from ankihost.protocol.values import as_bool, as_id, as_int, as_list, field
from ankihost.storage import decks, objects
from ankihost.sync.messages import Graves, StartRequest
from ankihost.sync.session import SyncSession


def parse_graves(value: Any) -> Graves:
    """`{"cards":[…],"decks":[…],"notes":[…]}`, ids as integers or decimal strings."""
    if not isinstance(value, dict):
        raise BadRequest("graves must be an object")
    lists = {
        k: [as_id(i, k) for i in as_list(field(value, k), k)] for k in ("cards", "notes", "decks")
    }
    return Graves(**lists)


def parse_start(body: dict[str, Any]) -> StartRequest:
    graves = body.get("graves")
    return StartRequest(
        client_usn=as_int(field(body, "minUsn"), "minUsn"),
        client_is_newer=as_bool(field(body, "lnewer"), "lnewer"),
        legacy_graves=None if graves is None else parse_graves(graves),
    )


def parse_apply_graves(body: dict[str, Any]) -> Graves:
    return parse_graves(field(body, "chunk"))


def start(db: sqlite3.Connection, session: SyncSession, request: StartRequest) -> dict[str, Any]:
    """The server's graves since `minUsn`, gathered before any legacy client graves apply."""
    server_graves = objects.pending_graves(db, session.client_usn)
    if request.legacy_graves is not None:
        apply_graves(db, session, request.legacy_graves)
    return server_graves


def apply_graves(db: sqlite3.Connection, session: SyncSession, graves: Graves) -> None:
    """Delete what the client deleted and remember it: notes, then cards, then decks."""
    usn = session.server_usn
    for nid in graves.notes:
        objects.delete_note(db, nid)
        objects.add_grave(db, objects.GRAVE_NOTE, nid, usn)
    for cid in graves.cards:
        objects.delete_card(db, cid)
        objects.add_grave(db, objects.GRAVE_CARD, cid, usn)
    for did in graves.decks:
        decks.remove(db, did)
        objects.add_grave(db, objects.GRAVE_DECK, did, usn)
