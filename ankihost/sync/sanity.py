"""`sanityCheck2`: compare the client's table counts with the server's uncommitted state.

Only counts are compared (cards, notes, revlog, notetypes, decks, deck configs); due counts
and graves are zeroed on both sides, and any server row with usn -1 fails the check. Rolling
back on "bad" is the handler's job (spec 02 §3.7).
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import Any

from ankihost.errors import BadRequest
from ankihost.protocol.values import as_int, as_list, field
from ankihost.storage import deck_configs, decks, notetypes, objects

# Positions 1.. of the counts tuple, after the [new, learn, review] due counts.
COUNT_ORDER = ("cards", "notes", "revlog", "graves", "notetypes", "decks", "deck_config")
GRAVES_POSITION = 1 + COUNT_ORDER.index("graves")


@dataclass(frozen=True)
class SanityResult:
    ok: bool
    reply: dict[str, Any]


def parse_sanity(body: dict[str, Any]) -> list[Any]:
    """The client's `[[new, learn, review], cards, notes, revlog, graves, models, decks, dconf]`."""
    counts = as_list(field(body, "client"), "client")
    if len(counts) != 1 + len(COUNT_ORDER):
        raise BadRequest("client counts: wrong length")
    due = as_list(counts[0], "due counts")
    if len(due) != 3:
        raise BadRequest("due counts: expected 3 values")
    return [[as_int(x, "due count") for x in due], *(as_int(x, "count") for x in counts[1:])]


def _normalised(counts: list[Any]) -> list[Any]:
    out = [[0, 0, 0], *counts[1:]]
    out[GRAVES_POSITION] = 0
    return out


def server_counts(db: sqlite3.Connection) -> list[Any]:
    table = objects.table_counts(db)
    table.update(
        notetypes=notetypes.count(db), decks=decks.count(db), deck_config=deck_configs.count(db)
    )
    return [[0, 0, 0], *(table[name] for name in COUNT_ORDER)]


def has_unsent_rows(db: sqlite3.Connection) -> bool:
    """A row with usn -1 can never be right on a server."""
    return bool(
        objects.tables_with_unsent_rows(db)
        or notetypes.ids_pending(db)
        or decks.ids_pending(db)
        or deck_configs.ids_pending(db)
    )


def sanity_check(db: sqlite3.Connection, client: list[Any]) -> SanityResult:
    if has_unsent_rows(db):
        return SanityResult(False, {"status": "bad", "c": client, "s": None})
    mine, theirs = _normalised(server_counts(db)), _normalised(client)
    ok = mine == theirs
    return SanityResult(ok, {"status": "ok" if ok else "bad", "c": theirs, "s": mine})
