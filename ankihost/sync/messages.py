"""The client's requests of a normal sync, as parsed values: what each step's parser returns.

Plain frozen dataclasses with Python names; the wire names and the parsing rules live with
each step (`start.parse_start`, `changes.parse_apply_changes`, `chunks.parse_apply_chunk`).
Nothing here touches a collection.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Graves:
    """Ids of deleted cards, notes and decks (`applyGraves`, or legacy clients' `start`)."""

    cards: list[int]
    notes: list[int]
    decks: list[int]

    def to_json(self) -> dict[str, list[int]]:
        return {"cards": self.cards, "decks": self.decks, "notes": self.notes}


@dataclass(frozen=True)
class StartRequest:
    client_usn: int
    client_is_newer: bool
    legacy_graves: Graves | None


@dataclass(frozen=True)
class Changes:
    """The unchunked objects of `applyChanges`, still in their legacy JSON shape."""

    notetypes: list[dict[str, Any]]
    decks: list[dict[str, Any]]
    deck_configs: list[dict[str, Any]]
    tags: list[str]
    config: dict[str, Any] | None
    creation_time: int | None


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
    """One `applyChunk`: revlog rows and cards as checked value lists, notes as entries."""

    revlog: list[tuple[int, ...]]
    cards: list[list[Any]]
    notes: list[NoteEntry]
