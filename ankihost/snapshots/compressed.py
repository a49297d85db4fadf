"""The snapshot file: one zstd frame holding a collection file, led by a skippable frame whose
JSON says what it holds (id, reason, when, the collection's `mod`/`usn`, row counts, its size).

`zstd -d` skips the header and gives back the collection; `read_header` reads the header alone.
The frame carries zstd's content checksum, so `expand` notices any damaged byte, and a short
file is caught by the size the header gives. Compression streams in pieces: memory stays
bounded whatever the collection's size.
"""

from __future__ import annotations

import os
import sqlite3
import struct
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, BinaryIO

import orjson
import zstandard

from ankihost.errors import BadRequest, ServerError

# A zstd skippable frame: magic (any of 0x184D2A50…5F), little-endian length, payload.
SKIPPABLE_MAGIC = 0x184D2A5A
_FRAME_HEAD = struct.Struct("<II")
FORMAT = 1
MAX_HEADER_BYTES = 64 * 1024
COMPRESSION_LEVEL = 3
CHUNK_BYTES = 1024 * 1024

Progress = Callable[[int], None]


@dataclass(frozen=True)
class Header:
    """What a snapshot holds. The counts and `col_*` are None when the copy could not be read
    (a damaged collection is kept all the same: it may be all there is)."""

    id: str
    reason: str
    taken: int  # Unix seconds
    raw_bytes: int
    col_mod: int | None = None
    col_usn: int | None = None
    notes: int | None = None
    cards: int | None = None
    revlog: int | None = None

    def to_bytes(self) -> bytes:
        return orjson.dumps({"format": FORMAT, **asdict(self)})

    @classmethod
    def from_bytes(cls, raw: bytes) -> Header:
        value = orjson.loads(raw)
        if not isinstance(value, dict) or value.pop("format", None) != FORMAT:
            raise ValueError("not a snapshot header of a known format")
        try:
            header = cls(**value)
        except TypeError as exc:
            raise ValueError(f"bad snapshot header: {exc}") from None
        if not (isinstance(header.id, str) and isinstance(header.reason, str)
                and isinstance(header.taken, int) and isinstance(header.raw_bytes, int)):
            raise ValueError("bad snapshot header: wrong types")
        return header


def describe(raw: Path, id: str, reason: str, taken: int) -> Header:
    """The header for the closed, private collection copy at `raw` (opened read-only and
    immutable, so nothing is written beside it)."""
    size = raw.stat().st_size
    try:
        db = sqlite3.connect(f"{raw.as_uri()}?immutable=1", uri=True)
    except sqlite3.Error:
        return Header(id, reason, taken, size)
    try:
        mod, usn = db.execute("select mod, usn from col").fetchone()
        notes, cards, revlog = (
            db.execute(f"select count() from {table}").fetchone()[0]
            for table in ("notes", "cards", "revlog")
        )
        return Header(id, reason, taken, size, mod, usn, notes, cards, revlog)
    except (sqlite3.Error, TypeError):
        return Header(id, reason, taken, size)
    finally:
        db.close()


def write(raw: Path, header: Header, target: Path, progress: Progress | None = None) -> None:
    """Write the snapshot of `raw` to the new file `target` and make it durable (the caller
    renames it into place)."""
    with open(raw, "rb") as source, open(target, "wb") as out:
        payload = header.to_bytes()
        out.write(_FRAME_HEAD.pack(SKIPPABLE_MAGIC, len(payload)) + payload)
        compressor = zstandard.ZstdCompressor(level=COMPRESSION_LEVEL, write_checksum=True)
        with compressor.stream_writer(out, size=header.raw_bytes, closefd=False) as zstd:
            _copy(source, zstd, progress)
        out.flush()
        os.fsync(out.fileno())


def read_header(path: Path) -> Header:
    """The header of the snapshot at `path`; BadRequest when it is not a snapshot."""
    with open(path, "rb") as f:
        return _header_of(f, path)


def _header_of(f: BinaryIO, path: Path) -> Header:
    head = f.read(_FRAME_HEAD.size)
    if len(head) != _FRAME_HEAD.size:
        raise BadRequest(f"{path.name} is not a snapshot (too short)")
    magic, length = _FRAME_HEAD.unpack(head)
    if magic != SKIPPABLE_MAGIC or length > MAX_HEADER_BYTES:
        raise BadRequest(f"{path.name} is not a snapshot (no header)")
    try:
        return Header.from_bytes(f.read(length))
    except ValueError as exc:
        raise BadRequest(f"{path.name}: {exc}") from None


def expand(path: Path, target: Path, progress: Progress | None = None) -> Header:
    """Decompress the snapshot at `path` into the file `target`, checking zstd's checksum and
    the size; BadRequest when it is damaged, ServerError when we cannot write."""
    with open(path, "rb") as f:
        header = _header_of(f, path)
        try:
            with open(target, "wb") as out:
                reader = zstandard.ZstdDecompressor().stream_reader(f, closefd=False)
                written = _copy(reader, out, progress)
                out.flush()
                os.fsync(out.fileno())
        except zstandard.ZstdError as exc:
            raise BadRequest(f"snapshot {header.id} is damaged: {exc}") from None
        except OSError as exc:
            raise ServerError(f"could not expand snapshot {header.id}: {exc}") from exc
    if written != header.raw_bytes:
        raise BadRequest(f"snapshot {header.id} is damaged: {written} bytes where its header "
                         f"says {header.raw_bytes}")
    return header


def _copy(source: Any, target: Any, progress: Progress | None) -> int:
    copied = 0
    while chunk := source.read(CHUNK_BYTES):
        target.write(chunk)
        copied += len(chunk)
        if progress is not None:
            progress(len(chunk))
    return copied
