"""`chunk` and `applyChunk`: revlog, cards and notes in bounded batches, both directions.

Outgoing ids are snapshotted at the first `chunk` of a session and handed out ~250 per call.
While the client stores one chunk, the server already makes the next (`prepare_next_chunk`,
run by the web layer after the reply is sent, under the user's lock); the client's next
`chunk` request then gets it at once, or the error making it met, exactly as if it were
made then.
`applyChunk` works the other way round: a body is parsed (a malformed one is refused at once),
answered, and written after the reply is sent, while the client makes its next chunk
(`apply_unapplied`, run the same way). Every later request of the session first writes what is
still unwritten (`settle`), so each step sees every earlier chunk, and an error writing one
fails that next request, as the session's transaction is rolled back.
Incoming rows follow rule C for cards and notes (the server keeps its own copy only when it
changed since the client's last sync and is not older) and insert-or-ignore for revlog.
"""

from __future__ import annotations

import logging
import sqlite3
from typing import Any

from ankihost.errors import BadRequest, ServerError
from ankihost.protocol.values import (
    all_plain_ints,
    as_int,
    as_list,
    as_str,
    as_truncated_int,
    field,
    optional_list,
)
from ankihost.storage import legacy_json as lj
from ankihost.storage import note_text, notetypes, objects
from ankihost.sync.messages import IncomingChunk, NoteEntry
from ankihost.sync.session import ChunkQueue, SyncSession

CHUNK_SIZE = 250
CARD_TYPES = frozenset({0, 1, 2, 3})
CARD_QUEUES = frozenset({-3, -2, -1, 0, 1, 2, 3, 4})
REVLOG_KINDS = frozenset(range(6))
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1

log = logging.getLogger(__name__)


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
    # Rows go to the wire as the tuples SQLite returns (orjson writes them as arrays); the
    # card query already gives an empty `data` as "{}" (`objects.card_wire_rows`).
    if revlog_ids:
        reply["revlog"] = objects.revlog_rows(db, revlog_ids)
    if card_ids:
        reply["cards"] = objects.card_wire_rows(db, card_ids)
    if note_ids:
        reply["notes"] = [note_to_wire(row) for row in objects.note_rows(db, note_ids)]
    return reply


def next_chunk(db: sqlite3.Connection, session: SyncSession) -> dict[str, Any]:
    """The reply to a `chunk` request: the one prepared ahead if any, else made now."""
    prepared, session.next_chunk = session.next_chunk, None
    if isinstance(prepared, Exception):
        raise prepared  # it fails this request, as it would have failed making it now
    reply = prepared if prepared is not None else chunk(db, session)
    if reply["done"]:
        session.chunks_done = True
    return reply


def prepare_next_chunk(db: sqlite3.Connection, session: SyncSession) -> None:
    """Make the chunk the client will ask for next. The caller holds the user's lock and
    has checked that `session` is still the active one."""
    if session.next_chunk is not None or session.chunks_done:
        return
    try:
        session.next_chunk = chunk(db, session)
    except Exception as exc:  # noqa: BLE001 - handed to the request it was made for
        session.next_chunk = exc


def take_ids(queue: ChunkQueue, budget: int) -> tuple[list[int], list[int], list[int], bool]:
    """One revlog, one note, one card per round while budget remains (so up to budget + 2).

    `done` is true when the lists ran dry before the budget did. Ids are popped from the
    ends of the queue's lists; whole rounds are taken at once (a list's share of a run of
    rounds is its reversed tail), which gives exactly what popping one id at a time gives."""
    taken: dict[str, list[int]] = {"revlog": [], "notes": [], "cards": []}
    sources = {"revlog": queue.revlog, "notes": queue.notes, "cards": queue.cards}
    while budget > 0:
        live = [name for name, source in sources.items() if source]
        if not live:
            break
        # rounds until the budget runs out (the last one may overshoot) or a list runs dry
        rounds = min(-(-budget // len(live)), *(len(sources[name]) for name in live))
        for name in live:
            source = sources[name]
            taken[name] += source[: -rounds - 1 : -1]
            del source[-rounds:]
        budget -= rounds * len(live)
    return taken["revlog"], taken["cards"], taken["notes"], budget > 0


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
    if type(value) is list and 8 <= len(value) <= 9:
        v = value  # what `_entry` would return, without its calls
    else:
        v = _entry(value, 9, "revlog entry", minimum=8)
    kind = v[8] if len(v) > 8 else 0
    kind = kind if isinstance(kind, int) and kind in REVLOG_KINDS else 0
    head = v[:8]
    if all_plain_ints(head):  # the common case: nothing to convert or reject
        return (*head, kind)
    ints = [as_int(x, "revlog") for x in v[:4]]
    return (*ints, *(as_truncated_int(x, "revlog") for x in v[4:8]), kind)


def parse_card(value: Any) -> list[Any]:
    v = value if type(value) is list and len(value) == 18 else _entry(value, 18, "card")
    card: list[Any] = v[:17]
    if all_plain_ints(card) and type(v[17]) is str:  # the common case: nothing to convert
        card.append(v[17])
        if card[9] < 0:
            card[9] = 0
    else:
        card = _converted_card(v)
    if card[6] not in CARD_TYPES or card[7] not in CARD_QUEUES:
        raise BadRequest(f"card {card[0]}: invalid type {card[6]} or queue {card[7]}")
    return card


def _converted_card(v: list[Any]) -> list[Any]:
    """A card's values read field by field: floats truncated, anything else wrong is a 400."""
    card: list[Any] = [as_int(x, "card") for x in v[:4]] + [as_truncated_int(v[4], "card mod")]
    card += [as_int(x, "card") for x in v[5:8]]
    card += [as_truncated_int(v[8], "due"), max(0, as_truncated_int(v[9], "ivl"))]
    card += [as_int(x, "card") for x in v[10:14]]
    card += [as_truncated_int(v[14], "odue"), as_int(v[15], "odid"), as_int(v[16], "flags")]
    card.append(as_str(v[17], "card data"))
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


def apply_unapplied(db: sqlite3.Connection, session: SyncSession) -> None:
    """Write the chunks answered but not yet written; an error is kept for `settle`. The
    caller holds the user's lock and has checked that `session` is still the active one."""
    try:
        settle(db, session)
    except Exception as exc:  # noqa: BLE001 - handed to the session's next request
        session.unapplied.clear()
        session.apply_error = exc
    except BaseException:  # the server is going down: never let `finish` commit
        session.unapplied.clear()
        session.apply_error = ServerError("writing a chunk was interrupted")
        raise


def settle(db: sqlite3.Connection, session: SyncSession) -> None:
    """Before any step: write every unwritten chunk, oldest first, or raise the error that
    writing one met (the caller rolls the session back)."""
    error, session.apply_error = session.apply_error, None
    if error is not None:
        raise error  # logged when it happened
    try:
        while session.unapplied:
            apply_chunk(db, session, session.unapplied.pop(0))
    except Exception as exc:
        log.info("an applyChunk answered earlier in this sync could not be written: %r", exc)
        raise


def apply_chunk(db: sqlite3.Connection, session: SyncSession, incoming: IncomingChunk) -> None:
    """Revlog, then cards, then notes; everything stored carries the session's usn.

    Each list is decided against one batched lookup and written with one `executemany`; the
    result (rows, and on failure which error and what was written before it) is that of
    looking up and writing object by object, which `_apply_one_by_one` still does when an id
    is beyond SQLite's integer range (the lookup itself then fails, at that object)."""
    usn = session.server_usn
    objects.add_revlog(db, [(*row[:2], usn, *row[3:]) for row in incoming.revlog])
    card_ids = [card[0] for card in incoming.cards]
    note_ids = [note.id for note in incoming.notes]
    if not (_storable(card_ids) and _storable(note_ids)):
        _apply_one_by_one(db, session, incoming)
        return
    stored = objects.usns_and_mtimes(db, "cards", card_ids) if card_ids else {}
    card_rows: list[tuple[Any, ...]] = []
    try:
        for card in incoming.cards:
            if _wins(session, stored.get(card[0]), card[4]):
                stored[card[0]] = (usn, card[4])  # what a later copy in this chunk meets
                card_rows.append((*card[:5], usn, *card[6:]))
    finally:  # also on failure: what the objects before it wrote (or the error writing did)
        objects.put_cards(db, card_rows)
    stored = objects.usns_and_mtimes(db, "notes", note_ids) if note_ids else {}
    note_rows: list[tuple[Any, ...]] = []
    shapes: dict[int, tuple[int, int]] = {}
    try:
        for note in incoming.notes:
            if _wins(session, stored.get(note.id), note.mtime):
                if note.notetype_id not in shapes:
                    shapes[note.notetype_id] = _note_shape(db, note.notetype_id)
                note_rows.append(note_row(note, usn, *shapes[note.notetype_id]))
                stored[note.id] = (usn, note.mtime)
    finally:
        objects.put_notes(db, note_rows)


def _storable(ids: list[int]) -> bool:
    """Whether every id fits SQLite's 64-bit integers (so it can be bound in a lookup)."""
    return not ids or (min(ids) >= _INT64_MIN and max(ids) <= _INT64_MAX)


def _apply_one_by_one(db: sqlite3.Connection, session: SyncSession, incoming: IncomingChunk) -> None:
    """Cards and notes of `apply_chunk`, one lookup and one write per object."""
    usn = session.server_usn
    for card in incoming.cards:
        if _wins(session, objects.usn_and_mtime(db, "cards", card[0]), card[4]):
            objects.put_card(db, (*card[:5], usn, *card[6:]))
    shapes: dict[int, tuple[int, int]] = {}
    for note in incoming.notes:
        if _wins(session, objects.usn_and_mtime(db, "notes", note.id), note.mtime):
            if note.notetype_id not in shapes:
                shapes[note.notetype_id] = _note_shape(db, note.notetype_id)
            objects.put_note(db, note_row(note, usn, *shapes[note.notetype_id]))


def _wins(session: SyncSession, stored: tuple[int, int] | None, mtime: int) -> bool:
    """Rule C: keep ours only if it changed since the client's last sync and is not older."""
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
    sort_index = notetypes.sort_field_index(db, notetype_id)
    if sort_index is None:  # cannot happen after `shape` found it; keeps the types honest
        raise BadRequest(f"note uses missing notetype {notetype_id}")
    # `sortf` as the legacy JSON carries it (a u16), as it was read before
    return max(1, field_count), lj.wrap(sort_index, 16, signed=False)


def note_row(note: NoteEntry, usn: int, field_count: int, sort_index: int) -> tuple[Any, ...]:
    fields = note_text.split_fields(note.fields)
    if len(fields) != field_count:
        raise BadRequest(f"note {note.id} has {len(fields)} fields, expected {field_count}")
    sfld = note_text.sort_field(fields, sort_index)
    csum = note_text.field_checksum(fields[0])
    tags = note_text.canonical_tag_string(note.tags)
    flds = note_text.join_fields(fields)
    return (note.id, note.guid, note.notetype_id, note.mtime, usn, tags, flds, sfld, csum, 0, "")
