"""Bodies of `start`, `applyGraves`, `applyChanges` and `applyChunk`, read with their shape checked.

A body over STREAM_ABOVE_BYTES is read while it is decompressed (`read_body`): its method's
reader takes each part from a `bounded_json.Scanner` and refuses the first one that is not the
documented structure, so a hostile body is refused after a few hundred KB, and a well-formed one
costs about its size plus the rows it holds. Each reader ends in the checks of today's parsers
(`start.parse_start`, `chunks.parse_revlog`, ...), so it accepts and refuses the same bodies,
except for the limits below. A smaller body is parsed whole by orjson as before
(`*_message`): 256 KiB of any shape costs at most ~10 MB and ~25 ms.
"""

from __future__ import annotations

import io
import sys
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass
from itertools import chain
from typing import IO, Any, TypeVar

from ankihost import memory
from ankihost.errors import BadRequest, PayloadTooLarge
from ankihost.protocol import body_stream, compression
from ankihost.protocol.bounded_json import LIST_ITEM_BYTES, SCALAR_BYTES, Budget, Scanner
from ankihost.protocol.request import SyncRequest
from ankihost.protocol.values import as_id
from ankihost.sync import changes, chunks, start
from ankihost.sync.messages import Changes, Graves, IncomingChunk, StartRequest

T = TypeVar("T")

# Bodies larger than this (decompressed) are read while decompressing, with their shape
# checked; smaller ones are parsed whole by orjson (at worst ~40 bytes of objects per byte).
STREAM_ABOVE_BYTES = 256 * 1024
# Rows (revlog + cards + notes) in one applyChunk; the real client sends at most 252
# (rslib: CHUNK_SIZE = 250, checked once per round of one revlog, one card, one note).
MAX_CHUNK_ROWS = 10_000
# Ids in the graves of one start or applyGraves; the real client sends at most 250 per
# applyGraves and none in start (`graves: null`; rslib calls the field deprecated).
MAX_GRAVES = 100_000
# Values the server does not use (unknown keys, the revlog and note fields it ignores):
# what building them may cost, in bytes of parsed objects.
MAX_IGNORED_BYTES = 1 << 20
# Everything one applyChanges holds (notetypes, decks, deck options, tags, config), in bytes
# of parsed objects: a deck or preset costs ~3 KB, a notetype ~10-100 KB.
MAX_CHANGES_BYTES = 64 << 20


@dataclass(frozen=True)
class RowKind:
    what: str
    arity: int
    loose: frozenset[int]  # positions the parser ignores, so any JSON value may stand there
    parse: Callable[[Any], Any]


REVLOG = RowKind("revlog entry", 9, frozenset({8}), chunks.parse_revlog)
CARD = RowKind("card", 18, frozenset(), chunks.parse_card)
NOTE = RowKind("note", 11, frozenset({4, 7, 8, 9, 10}), chunks.parse_note)
GRAVE_KINDS = ("cards", "notes", "decks")


class _Count:
    def __init__(self, limit: int, what: str) -> None:
        self.limit, self.left, self.what = limit, limit, what

    def add(self, n: int = 1) -> None:
        self.left -= n
        if self.left < 0:
            raise BadRequest(f"more than {self.limit} {self.what} in one request")


# --- streaming readers -----------------------------------------------------------------


def _object(sc: Scanner, fields: Mapping[str, Callable[[], Any]], budget: Budget, what: str) -> dict[str, Any]:
    """An object whose `fields` are read by their readers; other keys' values are built
    against `budget` and dropped. A field given twice is refused (so does the reference)."""
    if not sc.next_is(b"{"):
        raise BadRequest(f"{what} must be an object")
    found: dict[str, Any] = {}
    for key in sc.members(budget):
        read = fields.get(key)
        if read is None:
            sc.value(budget)
        elif key in found:
            raise BadRequest(f"{what}: {key!r} given twice")
        else:
            found[key] = read()
    return found


def _object_or_scalar(sc: Scanner, read: Callable[[], Any], what: str) -> Any:
    """`read()` at an object; any other single value as it is (the parser then judges it)."""
    return read() if sc.next_is(b"{") else sc.scalar(what)


def read_start(sc: Scanner) -> StartRequest:
    budget, graves = Budget(MAX_IGNORED_BYTES, "start"), _Count(MAX_GRAVES, "graves")
    body = _object(sc, {
        "minUsn": lambda: sc.scalar("minUsn"),
        "lnewer": lambda: sc.scalar("lnewer"),
        "graves": lambda: _object_or_scalar(sc, lambda: _graves(sc, budget, graves), "graves"),
    }, budget, "JSON body")
    sc.end()
    return start.parse_start(body)


def read_apply_graves(sc: Scanner) -> Graves:
    budget, graves = Budget(MAX_IGNORED_BYTES, "applyGraves"), _Count(MAX_GRAVES, "graves")
    body = _object(sc, {
        "chunk": lambda: _object_or_scalar(sc, lambda: _graves(sc, budget, graves), "chunk"),
    }, budget, "JSON body")
    sc.end()
    return start.parse_apply_graves(body)


def _graves(sc: Scanner, budget: Budget, count: _Count) -> dict[str, Any]:
    def reader(kind: str) -> Callable[[], Any]:
        return lambda: _ids(sc, kind, count)

    return _object(sc, {kind: reader(kind) for kind in GRAVE_KINDS}, budget, "graves")


def _ids(sc: Scanner, what: str, count: _Count) -> Any:
    if not sc.next_is(b"["):
        return sc.scalar(what)
    ids = []
    for value in sc.scalars(what):
        count.add()
        ids.append(as_id(value, what))
    return ids


def read_apply_changes(sc: Scanner) -> Changes:
    budget = Budget(MAX_CHANGES_BYTES, "applyChanges")
    body = _object(sc, {
        "changes": lambda: _object_or_scalar(sc, lambda: _changes(sc, budget), "changes"),
    }, budget, "JSON body")
    sc.end()
    return changes.parse_apply_changes(body)


def _changes(sc: Scanner, budget: Budget) -> dict[str, Any]:
    return _object(sc, {
        "models": lambda: _objects(sc, budget, "models"),
        "decks": lambda: _deck_lists(sc, budget),
        "tags": lambda: _tags(sc, budget),
        "conf": lambda: _object_or_scalar(sc, lambda: sc.value(budget), "conf"),
        "crt": lambda: sc.scalar("crt"),
    }, budget, "changes")


def _objects(sc: Scanner, budget: Budget, what: str) -> Any:
    if not sc.next_is(b"["):
        return sc.scalar(what)
    items = []
    for _ in sc.items():
        if not sc.next_is(b"{"):
            raise BadRequest(f"{what}: every entry must be an object")
        budget.charge(LIST_ITEM_BYTES)
        items.append(sc.value(budget))
    return items


def _deck_lists(sc: Scanner, budget: Budget) -> Any:
    if not sc.next_is(b"["):
        return sc.scalar("decks")
    pair: list[Any] = []
    for _ in sc.items():
        if len(pair) == 2:
            raise BadRequest("decks must be [decks, deck configs]")
        pair.append(_objects(sc, budget, "deck configs" if pair else "decks"))
    return pair


def _tags(sc: Scanner, budget: Budget) -> Any:
    if not sc.next_is(b"["):
        return sc.scalar("tags")
    tags = []
    for tag in sc.scalars("tag"):
        budget.charge(LIST_ITEM_BYTES + (sys.getsizeof(tag) if isinstance(tag, str) else SCALAR_BYTES))
        tags.append(tag)
    return tags


def read_apply_chunk(sc: Scanner) -> IncomingChunk:
    budget, rows = Budget(MAX_IGNORED_BYTES, "applyChunk"), _Count(MAX_CHUNK_ROWS, "rows")
    body = _object(sc, {"chunk": lambda: _chunk(sc, budget, rows)}, budget, "JSON body")
    sc.end()
    if "chunk" not in body:
        raise BadRequest("missing key 'chunk'")
    chunk: IncomingChunk = body["chunk"]
    return chunk


def _chunk(sc: Scanner, budget: Budget, count: _Count) -> IncomingChunk:
    if not sc.next_is(b"{"):
        sc.scalar("chunk")
        raise BadRequest("chunk must be an object")
    found = _object(sc, {
        "revlog": lambda: _rows(sc, REVLOG, budget, count),
        "cards": lambda: _rows(sc, CARD, budget, count),
        "notes": lambda: _rows(sc, NOTE, budget, count),
    }, budget, "chunk")
    return IncomingChunk(
        revlog=found.get("revlog", []), cards=found.get("cards", []), notes=found.get("notes", [])
    )


def _rows(sc: Scanner, kind: RowKind, budget: Budget, count: _Count) -> list[Any]:
    """A list of rows (absent or null: none), each checked by the row's parser as it comes."""
    if not sc.next_is(b"["):
        if sc.scalar(kind.what) is None:
            return []
        raise BadRequest(f"{kind.what}: expected a list")
    parsed = []
    for row in sc.rows(kind.arity, kind.loose, budget, kind.what):
        count.add()
        parsed.append(kind.parse(row))
    return parsed


Reader = Callable[[Scanner], object]
READERS: dict[str, Reader] = {
    "start": read_start,
    "applyGraves": read_apply_graves,
    "applyChanges": read_apply_changes,
    "applyChunk": read_apply_chunk,
}


# --- reading a request's body -----------------------------------------------------------


@dataclass
class ReadBody:
    """A body of one of READERS' methods: whole if small, else its reader's result or the
    refusal it met (raised when the handler asks for the message, as a parse error is)."""

    size: int  # decompressed bytes read (all of them, unless refused early)
    whole: bytes | None = None
    message: object = None
    error: BadRequest | None = None


def read_small_body(raw: IO[bytes], limit: int = STREAM_ABOVE_BYTES) -> bytes | None:
    """The decompressed body if it is at most `limit` bytes, else None (cheap when small:
    meant for the event loop). Decompression errors raise the BadRequest they are."""
    target = io.BytesIO()
    try:
        compression.decompress_into(raw, target, limit)
    except PayloadTooLarge:
        return None
    return target.getvalue()


def read_body(method: str, raw: IO[bytes], limit: int) -> ReadBody:
    """Decompress `raw` (at most `limit` bytes out); a small body comes back whole, a larger
    one is read by READERS[method] while it is decompressed. Decompression errors raise the
    SyncError they are; the reader's refusal is kept in the result."""
    return read_pieces(method, body_stream.zstd_pieces(raw, limit))


def read_pieces(method: str, pieces: Generator[bytes, None, None]) -> ReadBody:
    """`read_body` for a body given as decompressed pieces whose own errors come wrapped in
    `body_stream.BodyUnreadable` (`zstd_pieces`, `guarded_pieces`)."""
    try:
        whole, rest = body_stream.head(pieces, STREAM_ABOVE_BYTES)
        if rest is None:
            return ReadBody(size=len(whole), whole=whole)
        return _read_streamed(READERS[method], Scanner(chain((whole,), rest)))
    except body_stream.BodyUnreadable as exc:
        raise exc.error from None
    finally:
        pieces.close()


def _read_streamed(reader: Reader, sc: Scanner) -> ReadBody:
    """`reader`'s message or refusal; the C heap's free memory goes back to the system soon
    after (glibc would keep what a large body's strings took)."""
    try:
        message = reader(sc)
    except BadRequest as exc:
        # kept without its traceback, whose frames hold what was parsed until then
        return ReadBody(size=sc.bytes_in, error=BadRequest(exc.reason))
    finally:
        memory.release_memory_soon()
    return ReadBody(size=sc.bytes_in, message=message)


# --- what the handlers ask for ------------------------------------------------------------


@dataclass
class ReadSyncRequest(SyncRequest):
    """A request whose body `read_body` read: `body` is empty unless the body was small."""

    read: ReadBody | None = None


def _message(request: SyncRequest, kind: type[T], parse: Callable[[dict[str, Any]], T]) -> T:
    read = request.read if isinstance(request, ReadSyncRequest) else None
    if read is None or read.whole is not None:
        return parse(request.json_object())
    if read.error is not None:
        raise BadRequest(read.error.reason)
    if not isinstance(read.message, kind):
        raise TypeError(f"{request.method}: body read as {type(read.message).__name__}")
    return read.message


def _checked_graves(graves: Graves | None) -> None:
    if graves is not None:
        _Count(MAX_GRAVES, "graves").add(len(graves.cards) + len(graves.notes) + len(graves.decks))


def _parse_start(body: dict[str, Any]) -> StartRequest:
    message = start.parse_start(body)
    _checked_graves(message.legacy_graves)
    return message


def _parse_apply_graves(body: dict[str, Any]) -> Graves:
    graves = start.parse_apply_graves(body)
    _checked_graves(graves)
    return graves


def _parse_apply_chunk(body: dict[str, Any]) -> IncomingChunk:
    chunk = chunks.parse_apply_chunk(body)
    _Count(MAX_CHUNK_ROWS, "rows").add(len(chunk.revlog) + len(chunk.cards) + len(chunk.notes))
    return chunk


def start_message(request: SyncRequest) -> StartRequest:
    return _message(request, StartRequest, _parse_start)


def apply_graves_message(request: SyncRequest) -> Graves:
    return _message(request, Graves, _parse_apply_graves)


def apply_changes_message(request: SyncRequest) -> Changes:
    return _message(request, Changes, changes.parse_apply_changes)


def apply_chunk_message(request: SyncRequest) -> IncomingChunk:
    return _message(request, IncomingChunk, _parse_apply_chunk)

