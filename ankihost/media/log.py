"""The media log file's records: how a batch is framed on disk and read back after a crash.

The log (`<user>/media.ankihost-journal`) is appended to, one record per media batch, and
emptied at each checkpoint. A record is a fixed head (magic, the two lengths, a CRC-32 of the
header), a JSON header and a data part (the bytes of the batch's small new files, which the
header lists with their SHA-1s, so the reader checks them: see `journal.Batch`). A record cut
short by a crash, or damaged, fails a check: reading stops there, since nothing after it was
ever acknowledged. No knowledge of what the header means.
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

MAGIC = b"AHML"
_HEAD = struct.Struct("<4sIQI")  # magic, header bytes, data bytes, CRC-32 of the header
# A record's header is JSON about at most 25 files; far below this.
MAX_HEADER_BYTES = 16 * 1024 * 1024
# Its data: the small files of one upload (archive.UPLOAD_IN_MEMORY_BYTES), with room to spare.
MAX_DATA_BYTES = 256 * 1024 * 1024
_READ_CHUNK = 1024 * 1024


@dataclass(frozen=True)
class Record:
    header: bytes
    data: bytes


def encode(header: bytes, data: list[bytes]) -> list[bytes]:
    """A record as the pieces to write, in order (the data pieces are not copied)."""
    size = sum(map(len, data))
    return [_HEAD.pack(MAGIC, len(header), size, zlib.crc32(header)), header, *data]


def read_records(path: Path) -> Iterator[Record]:
    """The complete records of the log at `path`, oldest first, up to the first that is not
    (an absent or empty log has none)."""
    try:
        f = path.open("rb")
    except FileNotFoundError:
        return
    with f:
        while (record := _read_one(f)) is not None:
            yield record


def _read_one(f: IO[bytes]) -> Record | None:
    head = f.read(_HEAD.size)
    if len(head) < _HEAD.size:
        return None
    magic, header_size, data_size, crc = _HEAD.unpack(head)
    if magic != MAGIC or header_size > MAX_HEADER_BYTES or data_size > MAX_DATA_BYTES:
        return None
    header = _read_exactly(f, header_size)
    data = _read_exactly(f, data_size) if header is not None else None
    if header is None or data is None or zlib.crc32(header) != crc:
        return None
    return Record(header, data)


def _read_exactly(f: IO[bytes], size: int) -> bytes | None:
    pieces, left = [], size
    while left:
        piece = f.read(min(left, _READ_CHUNK))
        if not piece:
            return None
        pieces.append(piece)
        left -= len(piece)
    return b"".join(pieces)


def write_at(fd: int, offset: int, pieces: list[bytes]) -> int:
    """Write a record's pieces at `offset` of the log open as `fd`; the offset after it. (On
    an error the caller cuts the log back to `offset`, so no half record stays in the way of
    the next one.)"""
    for piece in pieces:
        view = memoryview(piece)
        while view:
            written = os.pwrite(fd, view, offset)
            view = view[written:]
            offset += written
    return offset
