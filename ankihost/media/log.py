"""The media log: how a batch is framed on disk and read back, and the log a user has open.

The log (`<user>/media.ankihost-journal`) is appended to, one record per media batch, and
emptied at each checkpoint (`MediaLog.checkpoint`). A record is a fixed head (magic, the two lengths, a CRC-32 of the
header), a JSON header and a data part (the bytes of the batch's small new files, which the
header lists with their SHA-1s, so the reader checks them: see `journal.Batch`). A record cut
short by a crash, or damaged, fails a check: reading stops there, since nothing after it was
ever acknowledged. No knowledge of what the header means (see `journal.Batch`).
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING

from ankihost.media import staging
from ankihost.media.staging import O_NOFOLLOW
from ankihost.storage.paths import fsync_dir

if TYPE_CHECKING:
    from ankihost.storage.paths import UserFolder

MAGIC = b"AHML"
_HEAD = struct.Struct("<4sIQI")  # magic, header bytes, data bytes, CRC-32 of the header
# A record's header is JSON about at most 25 files; far below this.
MAX_HEADER_BYTES = 16 * 1024 * 1024
# Its data: the small files of one upload (archive.UPLOAD_IN_MEMORY_BYTES), with room to spare.
MAX_DATA_BYTES = 256 * 1024 * 1024
_READ_CHUNK = 1024 * 1024
_O_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC


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


class MediaLog:
    """A user's media log, open for appending, and what its batches left to make durable:
    files written from the log's data, trash folders changed (with the index WAL and the media
    folder, flushed at the checkpoint). Owned by `UserMedia`; the caller holds the user's lock.
    """

    def __init__(self, folder: UserFolder) -> None:
        self.folder = folder
        self.path = folder.media_journal
        self.size = 0
        self.pending: set[Path] = set()
        self.folders: set[Path] = set()
        self._fd: int | None = None

    def fd(self) -> int:
        if self._fd is None:
            created = not self.path.exists()
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | O_NOFOLLOW, 0o600)
            if created:
                fsync_dir(self.path.parent)
            self.size = os.fstat(self._fd).st_size
        return self._fd

    @property
    def unsettled(self) -> bool:
        """Whether batches since the last checkpoint still rely on the log."""
        return self.size > 0 or bool(self.pending)

    def checkpoint(self) -> None:
        """Make everything the log covers durable, then empty it (durably). Only after the
        recovery of what an earlier process left in it."""
        if self._fd is None and not self.path.exists():
            return
        log_fd = self.fd()
        if not self.unsettled and not self.folders:
            return
        files = [fd for path in self.pending if (fd := open_if_there(path)) is not None]
        folders = [fd for path in self.folders if (fd := open_if_there(path)) is not None]
        try:
            wal = open_if_there(Path(f"{self.folder.media_db}-wal"))
            files += [wal] if wal is not None else []
            folders.append(os.open(self.folder.media, _O_DIR))
            staging.flush_all(files, folders)
        finally:
            for fd in files + folders:
                os.close(fd)
        os.ftruncate(log_fd, 0)
        os.fdatasync(log_fd)
        self.size = 0
        self.pending.clear()
        self.folders.clear()

    def close(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)


def open_if_there(path: Path) -> int | None:
    """A read-only descriptor of `path`, or None when it is gone."""
    try:
        return os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
