"""Media files coming in and going out: staging uploaded files, reading stored ones, fsyncs.

A staged file is complete before it is placed: in memory when small (the media log then
holds its bytes), else a temp file in the media folder whose write-back has been started but
not waited for. The journal (`journal.py`) makes what it needs durable in one round, the
fsyncs of several files running at once in the shared fsync threads here. No SQL, no name
rules (see `names.py`).
"""

from __future__ import annotations

import hashlib
import os
import stat
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from ankihost.errors import BadRequest
from ankihost.storage.paths import new_media_temp_name

# Unit of every streamed copy (zip member → temp file, media file → zip).
COPY_CHUNK_BYTES = 1024 * 1024
_FADVISE: int | None = getattr(os, "POSIX_FADV_DONTNEED", None)
O_NOFOLLOW: int = getattr(os, "O_NOFOLLOW", 0)
# Threads that wait for fdatasyncs (see `flush_all`); created on first use, shared by all users
# (as many as one upload of 25 files keeps busy; 4, 8 and 16 measured the same for one user).
FSYNC_THREADS = 8
_FSYNC_POOL: ThreadPoolExecutor | None = None
_FSYNC_POOL_LOCK = threading.Lock()


def open_for_reading(path: Path) -> IO[bytes]:
    """Open a media file without following a symlink planted in the folder."""
    fd = os.open(path, os.O_RDONLY | O_NOFOLLOW)
    return os.fdopen(fd, "rb")


def sha1_of_file(path: Path) -> bytes:
    digest = hashlib.sha1()
    with open_for_reading(path) as f:
        while chunk := f.read(COPY_CHUNK_BYTES):
            digest.update(chunk)
    return digest.digest()


def is_regular_file(path: Path) -> bool:
    """Whether `path` is a regular file (not a folder, not a symlink to one)."""
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except FileNotFoundError:
        return False


def holds(path: Path, sha1: bytes) -> bool:
    """Whether `path` is a regular file with this content."""
    try:
        return is_regular_file(path) and sha1_of_file(path) == sha1
    except FileNotFoundError:
        return False


@dataclass(frozen=True)
class StagedFile:
    """A complete uploaded file waiting to be placed: a temp file in the media folder (`path`),
    or, for a small file, its bytes held in memory (`data`; `path` is None).

    A temp file's write-back to disk has been started but not waited for; `FileJournal.apply`
    makes it durable.
    """

    path: Path | None
    sha1: bytes
    size: int
    data: bytes | None = None

    @classmethod
    def in_memory(cls, data: bytes) -> StagedFile:
        return cls(None, hashlib.sha1(data).digest(), len(data), data)

    def discard(self) -> None:
        if self.path is not None:
            self.path.unlink(missing_ok=True)


def stage_stream(folder: Path, source: IO[bytes], max_bytes: int) -> StagedFile:
    """Copy `source` to a new temp file in `folder`, hashing it; at most `max_bytes` bytes.

    More than `max_bytes` → BadRequest (as the official server answers); the temp file is
    removed on any error. The kernel starts writing it to disk at once; `FileJournal` makes
    it durable.
    """
    path = folder / new_media_temp_name()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
    try:
        sha1, size = _copy_to_fd(source, fd, max_bytes)
        _start_writeback(fd)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    finally:
        os.close(fd)
    return StagedFile(path, sha1, size)


def _copy_to_fd(source: IO[bytes], fd: int, max_bytes: int) -> tuple[bytes, int]:
    digest, size = hashlib.sha1(), 0
    while chunk := source.read(min(COPY_CHUNK_BYTES, max_bytes + 1 - size)):
        size += len(chunk)
        if size > max_bytes:
            raise BadRequest(f"media file over {max_bytes} bytes")
        digest.update(chunk)
        write_all(fd, chunk)
    return digest.digest(), size


def _start_writeback(fd: int) -> None:
    """Ask the kernel to start writing the file's dirty pages now, without waiting (on Linux,
    POSIX_FADV_DONTNEED does that; pages still dirty are not dropped from the cache)."""
    if _FADVISE is not None:
        os.posix_fadvise(fd, 0, 0, _FADVISE)


def flush_all(files: list[int], folders: list[int]) -> None:
    """fdatasync every file and fsync every folder, all at once in the shared fsync threads,
    and wait for all of them (the first error is raised): a media log checkpoint, or a batch
    with staged files. On a busy shared disk one fsync can wait tens of milliseconds; together
    they overlap (measured, 25 files of 20 KB, 30 batches on a contended disk: 99 ms in total
    in threads against 391 ms one after another)."""
    pool = _fsync_pool()
    pending = [pool.submit(os.fdatasync, fd) for fd in files]
    pending += [pool.submit(os.fsync, fd) for fd in folders]
    errors = [exc for exc in (future.exception() for future in pending) if exc is not None]
    if errors:
        raise errors[0]


def _fsync_pool() -> ThreadPoolExecutor:
    global _FSYNC_POOL
    with _FSYNC_POOL_LOCK:
        if _FSYNC_POOL is None:
            _FSYNC_POOL = ThreadPoolExecutor(FSYNC_THREADS, thread_name_prefix="media-fsync")
        return _FSYNC_POOL


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


