"""`chunk` and `applyChunk`: revlog, cards and notes in bounded batches, both directions.

Outgoing ids are snapshotted at the first `chunk` of a session and handed out ~250 per call.
Incoming rows follow rule C for cards and notes (the server keeps its own copy only when it
changed since the client's last sync and is not older) and insert-or-ignore for revlog.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import Any

from ankihost.errors import BadRequest
from ankihost.storage import note_text, notetypes, objects
from ankihost.sync.session import ChunkQueue, SyncSession
from ankihost.sync.values import (
    all_plain_ints,
    as_int,
    as_list,
    as_str,
    as_truncated_int,
    field,
    optional_list,
)

CHUNK_SIZE = 250
CARD_TYPES = frozenset({0, 1, 2, 3})
CARD_QUEUES = frozenset({-3, -2, -1, 0, 1, 2, 3, 4})
REVLOG_KINDS = frozenset(range(6))


@dataclass(frozen=True)
class NoteEntry:
    id: int
    guid: str
    notetype_id: int
    mtime: int
    tags: str
    fields: str


@dataclass(frozen=True)
class IncomingChunk:
    revlog: list[tuple[int, ...]]
    cards: list[list[Any]]
    notes: list[NoteEntry]


# --- server → client -------------------------------------------------------------------


def chunk(db: sqlite3.Connection, session: SyncSession) -> dict[str, Any]:
    if session.chunk_queue is None:
        session.chunk_queue = ChunkQueue(
            revlog=objects.pending_ids(db, "revlog", session.client_usn),
            cards=objects.pending_ids(db, "cards", session.client_usn),
            notes=objects.pending_ids(db, "notes", session.client_usn),
        )
    revlog_ids, card_ids, note_ids, done = take_ids(session.chunk_queue, CHUNK_SIZE)
    reply: dict[str, Any] = {"done": done}
    if revlog_ids:
        reply["revlog"] = [list(row) for row in objects.revlog_rows(db, revlog_ids)]
    if card_ids:
        reply["cards"] = [card_to_wire(row) for row in objects.card_rows(db, card_ids)]
    if note_ids:
        reply["notes"] = [note_to_wire(row) for row in objects.note_rows(db, note_ids)]
    return reply


def take_ids(queue: ChunkQueue, budget: int) -> tuple[list[int], list[int], list[int], bool]:
    """One revlog, one note, one card per round while budget remains (so up to budget + 2).

    `done` is true when the lists ran dry before the budget did."""
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
    return revlog, cards, notes, budget > 0


def card_to_wire(row: tuple[Any, ...]) -> list[Any]:
    values = list(row)
    values[17] = values[17] or "{}"
    return values


def note_to_wire(row: tuple[Any, ...]) -> list[Any]:
    nid, guid, mid, mtime, usn, tags, flds = row[:7]
    return [nid, guid, mid, mtime, usn, note_text.canonical_tag_string(tags), flds, "", "", 0, ""]


# --- client → server: parsing ----------------------------------------------------------


def _entry(value: Any, size: int, what: str, minimum: int | None = None) -> list[Any]:
    items = as_list(value, what)
    if not (minimum or size) <= len(items) <= size:
        raise BadRequest(f"{what}: expected {size} values, got {len(items)}")
    return items


def parse_revlog(value: Any) -> tuple[int, ...]:
    v = _entry(value, 9, "revlog entry", minimum=8)
    kind = v[8] if len(v) > 8 else 0
    kind = kind if isinstance(kind, int) and kind in REVLOG_KINDS else 0
    head = v[:8]
    if all_plain_ints(head):  # the common case: nothing to convert or reject
        return (*head, kind)
    ints = [as_int(x, "revlog") for x in v[:4]]
    return (*ints, *(as_truncated_int(x, "revlog") for x in v[4:8]), kind)


def parse_card(value: Any) -> list[Any]:
    v = _entry(value, 18, "card")
    card = v[:17]
    if all_plain_ints(card) and type(v[17]) is str:  # the common case: nothing to convert
        card.append(v[17])
        if card[9] < 0:
            card[9] = 0
    else:
        card = [as_int(x, "card") for x in v[:4]] + [as_truncated_int(v[4], "card mod")]
        card += [as_int(x, "card") for x in v[5:8]]
        card += [as_truncated_int(v[8], "due"), max(0, as_truncated_int(v[9], "ivl"))]
        card += [as_int(x, "card") for x in v[10:14]]
        card += [as_truncated_int(v[14], "odue"), as_int(v[15], "odid"), as_int(v[16], "flags")]
        card.append(as_str(v[17], "card data"))
    if card[6] not in CARD_TYPES or card[7] not in CARD_QUEUES:
        raise BadRequest(f"card {card[0]}: invalid type {card[6]} or queue {card[7]}")
    return card


def parse_note(value: Any) -> NoteEntry:
    v = _entry(value, 11, "note", minimum=7)
    return NoteEntry(
        id=as_int(v[0], "note id"),
        guid=as_str(v[1], "guid"),
        notetype_id=as_int(v[2], "mid"),
        mtime=as_int(v[3], "note mod"),
        tags=as_str(v[5], "tags"),
        fields=as_str(v[6], "flds"),
    )


def parse_apply_chunk(body: dict[str, Any]) -> IncomingChunk:
    container = field(body, "chunk")
    if not isinstance(container, dict):
        raise BadRequest("chunk must be an object")
    return IncomingChunk(
        revlog=[parse_revlog(x) for x in optional_list(container, "revlog")],
        cards=[parse_card(x) for x in optional_list(container, "cards")],
        notes=[parse_note(x) for x in optional_list(container, "notes")],
    )


# --- client → server: applying ---------------------------------------------------------


def apply_chunk(db: sqlite3.Connection, session: SyncSession, incoming: IncomingChunk) -> None:
    """Revlog, then cards, then notes; everything stored carries the session's usn."""
    usn = session.server_usn
    objects.add_revlog(db, [(*row[:2], usn, *row[3:]) for row in incoming.revlog])
    for card in incoming.cards:
        if _incoming_wins(db, "cards", session, card[0], card[4]):
            objects.put_card(db, tuple(card[:5] + [usn] + card[6:]))
    shapes: dict[int, tuple[int, int]] = {}
    for note in incoming.notes:
        if _incoming_wins(db, "notes", session, note.id, note.mtime):
            if note.notetype_id not in shapes:
                shapes[note.notetype_id] = _note_shape(db, note.notetype_id)
            objects.put_note(db, note_row(note, usn, *shapes[note.notetype_id]))


def _incoming_wins(
    db: sqlite3.Connection, table: str, session: SyncSession, oid: int, mtime: int
) -> bool:
    """Rule C: keep ours only if it changed since the client's last sync and is not older."""
    stored = objects.usn_and_mtime(db, table, oid)
    if stored is None:
        return True
    stored_usn, stored_mtime = stored
    return stored_usn < session.client_usn or stored_mtime < mtime


def _note_shape(db: sqlite3.Connection, notetype_id: int) -> tuple[int, int]:
    """(expected field count, sort field index) of a note's notetype; 400 if it is missing."""
    shape = notetypes.shape(db, notetype_id)
    if shape is None:
        raise BadRequest(f"note uses missing notetype {notetype_id}")
    field_count = shape[0]
    sort_index = notetypes.to_legacy(db, notetype_id).get("sortf", 0)
    return max(1, field_count), int(sort_index)


def note_row(note: NoteEntry, usn: int, field_count: int, sort_index: int) -> tuple[Any, ...]:
    fields = note_text.split_fields(note.fields)
    if len(fields) != field_count:
        raise BadRequest(f"note {note.id} has {len(fields)} fields, expected {field_count}")
    sfld = note_text.sort_field(fields, sort_index)
    csum = note_text.field_checksum(fields[0])
    tags = note_text.canonical_tag_string(note.tags)
    flds = note_text.join_fields(fields)
    return (note.id, note.guid, note.notetype_id, note.mtime, usn, tags, flds, sfld, csum, 0, "")
