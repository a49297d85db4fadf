"""The user's media folder on disk: which names are allowed, SHA-1 hashing, atomic changes.

Every path into the folder is built by `media_path`, after the name was checked. A media file
only ever appears under its real name by renaming a fully written, fsynced temp file from the
same folder; `FileJournal` makes a batch of such renames and deletions undoable, in process
and, through a journal file written before the first rename, after a crash (`recover`).
No SQL here.
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
import stat
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO

import orjson

from ankihost.errors import BadRequest
from ankihost.storage.paths import fsync_dir

log = logging.getLogger(__name__)

# The official server's limit on a media file name, in bytes of UTF-8 (clients use 120).
MAX_NAME_BYTES = 255
# Unit of every streamed copy (zip member → temp file, media file → zip).
COPY_CHUNK_BYTES = 1024 * 1024
# Prefix of our temp and backup files inside the media folder; always followed by 32 hex digits.
TEMP_PREFIX = ".ankihost-tmp-"
_TEMP_TOKEN_HEX = 32
_FADVISE: int | None = getattr(os, "POSIX_FADV_DONTNEED", None)
_CONTROL_CHARS = frozenset(chr(c) for c in [*range(0x20), 0x7F])


def protocol_problem(name: str) -> str | None:
    """Why the official server rejects `name` in any upload entry (addition or deletion)."""
    if len(name.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES:
        return f"is longer than {MAX_NAME_BYTES} bytes"
    if not unicodedata.is_normalized("NFC", name):
        return "is not in Unicode NFC"
    if "/" in name:
        return "contains '/'"
    return None


def path_problem(name: str) -> str | None:
    """Why `name` cannot be joined to the media folder, or None when it is a plain file name."""
    if name in ("", ".", ".."):
        return "is empty, '.' or '..'"
    if "/" in name or "\x00" in name:
        return "contains '/' or NUL"
    if len(name.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES:
        return f"is longer than {MAX_NAME_BYTES} bytes"
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return "is not valid Unicode"
    return None


def addition_problem(name: str) -> str | None:
    """Why we refuse to store a new file under `name` (the official rules, plus safety ones).

    Beyond the official server we refuse '\\' and ASCII control characters: no current client
    uploads such names (its own normalisation removes them), and they are unsafe on some hosts.
    """
    problem = protocol_problem(name) or path_problem(name)
    if problem is None and "\\" in name:
        problem = "contains '\\'"
    if problem is None and any(ch in _CONTROL_CHARS for ch in name):
        problem = "contains a control character"
    return problem


def require_path_name(name: str) -> None:
    """BadRequest when `name` is not a plain file name (so it can never have been stored)."""
    problem = path_problem(name)
    if problem is not None:
        raise BadRequest(f"media file name {name!r:.300} {problem}")


def media_path(folder: Path, name: str) -> Path:
    """`folder/name`, or BadRequest when `name` is not a plain file name."""
    require_path_name(name)
    return folder / name


def is_temp_name(name: str) -> bool:
    token = name[len(TEMP_PREFIX) :]
    return (
        name.startswith(TEMP_PREFIX)
        and len(token) == _TEMP_TOKEN_HEX
        and all(c in "0123456789abcdef" for c in token)
    )


def new_temp_path(folder: Path) -> Path:
    return folder / f"{TEMP_PREFIX}{secrets.token_hex(_TEMP_TOKEN_HEX // 2)}"


def open_for_reading(path: Path) -> IO[bytes]:
    """Open a media file without following a symlink planted in the folder."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    return os.fdopen(fd, "rb")


def sha1_of_file(path: Path) -> bytes:
    digest = hashlib.sha1()
    with open_for_reading(path) as f:
        while chunk := f.read(COPY_CHUNK_BYTES):
            digest.update(chunk)
    return digest.digest()


@dataclass(frozen=True)
class StagedFile:
    """A complete temp file in the media folder, waiting to be renamed into place.

    Its write-back to disk has been started but not waited for: `sync_files` makes it durable.
    """

    path: Path
    sha1: bytes
    size: int

    def discard(self) -> None:
        self.path.unlink(missing_ok=True)


def stage_stream(folder: Path, source: IO[bytes], max_bytes: int) -> StagedFile:
    """Copy `source` to a new temp file in `folder`, hashing it; at most `max_bytes` bytes.

    More than `max_bytes` → BadRequest (as the official server answers); the temp file is
    removed on any error. The kernel starts writing it to disk at once (see `sync_files`).
    """
    path = new_temp_path(folder)
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
        view = memoryview(chunk)
        while view:
            view = view[os.write(fd, view) :]
    return digest.digest(), size


def _start_writeback(fd: int) -> None:
    """Ask the kernel to start writing the file's dirty pages now, without waiting (on Linux,
    POSIX_FADV_DONTNEED does that; pages still dirty are not dropped from the cache)."""
    if _FADVISE is not None:
        os.posix_fadvise(fd, 0, 0, _FADVISE)


def sync_files(staged: Sequence[StagedFile]) -> None:
    """fdatasync every staged file, one after another.

    Their write-back was started while they were staged, so by now the data is mostly on disk
    and the first sync commits the file system journal for most of them. Measured (25 files of
    20 KB, 20 requests, ext4): as fast as fdatasyncs in a thread pool started as each file was
    written, ~25% faster than syncing without the early write-back, ~2x faster than one
    fsync per file while staging — and no threads, so no GIL hand-offs in the server.
    """
    for file in staged:
        fd = os.open(file.path, os.O_RDONLY | os.O_CLOEXEC | getattr(os, "O_NOFOLLOW", 0))
        try:
            os.fdatasync(fd)
        finally:
            os.close(fd)


# -- the change journal -----------------------------------------------------------------------
@dataclass(frozen=True)
class Change:
    """Make `name` hold `staged` (an addition) or disappear (`staged` None: a deletion)."""

    name: str
    staged: StagedFile | None


@dataclass(frozen=True)
class JournalEntry:
    """One change as the journal records it: the old file goes to `backup` (a temp name in the
    media folder) if there is one; `sha1` is the new content's, None for a deletion."""

    name: str
    backup: str
    sha1: bytes | None

    def to_json(self) -> list[str | None]:
        return [self.name, self.backup, self.sha1.hex() if self.sha1 is not None else None]

    @classmethod
    def from_json(cls, item: object) -> JournalEntry:
        if not (isinstance(item, list) and len(item) == 3 and isinstance(item[0], str)
                and isinstance(item[1], str) and is_temp_name(item[1])
                and (item[2] is None or isinstance(item[2], str))):
            raise ValueError(f"bad journal entry {item!r:.200}")
        require_path_name(item[0])
        return cls(item[0], item[1], bytes.fromhex(item[2]) if item[2] is not None else None)


@dataclass(frozen=True)
class Journal:
    """What one upload changes in the media folder; `usn` is the media USN its commit makes."""

    usn: int
    entries: list[JournalEntry]

    def to_bytes(self) -> bytes:
        return orjson.dumps({"usn": self.usn, "entries": [e.to_json() for e in self.entries]})

    @classmethod
    def from_bytes(cls, raw: bytes) -> Journal:
        value = orjson.loads(raw)
        if not (isinstance(value, dict) and isinstance(value.get("usn"), int)
                and isinstance(value.get("entries"), list)):
            raise ValueError("journal is not an object with 'usn' and 'entries'")
        return cls(value["usn"], [JournalEntry.from_json(item) for item in value["entries"]])


class FileJournal:
    """One batch of renames into and deletions from the media folder, safe across crashes.

    Use it around the database transaction: `with FileJournal(folder, path) as j,
    index.atomic():` … `j.apply(changes, usn)`. `apply` syncs the new files, writes and syncs
    the journal file at `path`, moves replaced or deleted files aside to temp names, renames
    the new ones into place and syncs the folder. After the commit the backups and the journal
    are removed; on any error (including a failed commit) every step is reversed, newest
    first. After a crash, `recover` (run before anything else) does one or the other.
    """

    def __init__(self, folder: Path, journal_path: Path) -> None:
        self.folder = folder
        self.journal_path = journal_path
        self._undo: list[tuple[Path, Path | None]] = []  # (target, backup or None if placed)
        self.placed: set[Path] = set()  # staged files renamed into place (even if undone since)
        self._written = False

    def apply(self, changes: Sequence[Change], usn: int) -> None:
        """Make `changes` (each name at most once) durably, ready for the commit of `usn`."""
        if not changes:
            return
        entries = [_journal_entry(self.folder, change) for change in changes]
        staged = [change.staged for change in changes if change.staged is not None]
        self._write_journal(Journal(usn, entries), staged)  # durable, with the staged files
        for change, entry in zip(changes, entries, strict=True):
            self._apply_one(change, entry)
        fsync_dir(self.folder)

    def _write_journal(self, journal: Journal, staged: Sequence[StagedFile]) -> None:
        """The staged files' data, then the journal, durable before anything is renamed."""
        sync_files(staged)
        self._written = True
        write_durably(self.journal_path, journal.to_bytes())

    def _apply_one(self, change: Change, entry: JournalEntry) -> None:
        target = media_path(self.folder, change.name)
        self._move_aside(target, self.folder / entry.backup)
        if change.staged is not None:
            os.rename(change.staged.path, target)
            self.placed.add(change.staged.path)
            self._undo.append((target, None))

    def _move_aside(self, target: Path, backup: Path) -> None:
        try:
            if stat.S_ISDIR(os.lstat(target).st_mode):
                raise IsADirectoryError(f"{target} is a directory, not a media file")
        except FileNotFoundError:
            return
        os.rename(target, backup)
        self._undo.append((target, backup))

    def __enter__(self) -> FileJournal:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        undone = True
        if kind is not None and self._undo:
            undone = self._roll_back()
            fsync_dir(self.folder)
        elif kind is None:
            self._forget_backups()
        if self._written and undone:  # else the next `recover` finishes the undo
            _remove_journal(self.journal_path)

    def _forget_backups(self) -> None:
        """After the commit: a backup that cannot be removed is left for `remove_stray_temps`."""
        for _, backup in self._undo:
            if backup is not None:
                try:
                    backup.unlink(missing_ok=True)
                except OSError:
                    log.exception("media: could not remove backup %s", backup)

    def _roll_back(self) -> bool:
        """Undo every step, newest first; whether all of them could be undone."""
        undone = True
        for target, backup in reversed(self._undo):
            try:
                if backup is None:
                    target.unlink(missing_ok=True)
                else:
                    os.replace(backup, target)
            except OSError:
                log.exception("media: could not undo a change to %s", target)
                undone = False
        return undone


def _journal_entry(folder: Path, change: Change) -> JournalEntry:
    sha1 = change.staged.sha1 if change.staged is not None else None
    return JournalEntry(change.name, new_temp_path(folder).name, sha1)


def write_durably(path: Path, data: bytes) -> None:
    """Write `data` to `path` (replacing it) and sync the file and its folder."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fdatasync(fd)
    finally:
        os.close(fd)
    fsync_dir(path.parent)


def _remove_journal(path: Path) -> None:
    """Only housekeeping: a journal left behind is recognised as committed or not at open."""
    try:
        path.unlink(missing_ok=True)
    except OSError:
        log.exception("media: could not remove %s", path)


# -- after a crash ----------------------------------------------------------------------------
def recover(
    folder: Path, journal_path: Path, last_usn: int, live_sha1: Callable[[str], bytes | None]
) -> bool:
    """Finish or undo the batch a crash interrupted, from the journal at `journal_path`.

    `last_usn` and `live_sha1(name)` describe the committed index. The batch committed when
    `last_usn` reached the journal's USN: then only its backups are removed. Otherwise each
    backup is renamed back and a placed file the index does not claim is removed, newest
    first. Both are idempotent, so a crash during recovery is recovered from too. Call before
    `remove_stray_temps` (backups are temp files). Returns whether there was a journal.
    """
    try:
        raw = journal_path.read_bytes()
    except FileNotFoundError:
        return False
    try:
        journal = Journal.from_bytes(raw)
    except (ValueError, BadRequest) as exc:  # torn while written: nothing was renamed yet
        log.warning("media: ignoring unreadable journal %s: %s", journal_path, exc)
    else:
        if last_usn >= journal.usn:
            _finish(folder, journal)
        else:
            _undo(folder, journal, live_sha1)
        fsync_dir(folder)
    journal_path.unlink()
    fsync_dir(journal_path.parent)
    return True


def _finish(folder: Path, journal: Journal) -> None:
    log.warning("media: completing an interrupted upload (usn %d)", journal.usn)
    for entry in journal.entries:
        (folder / entry.backup).unlink(missing_ok=True)


def _undo(folder: Path, journal: Journal, live_sha1: Callable[[str], bytes | None]) -> None:
    log.warning("media: undoing an interrupted upload (usn %d)", journal.usn)
    for entry in reversed(journal.entries):
        target, backup = folder / entry.name, folder / entry.backup
        if _is_file(backup):
            os.replace(backup, target)
        elif entry.sha1 is not None and live_sha1(entry.name) != entry.sha1 and _holds(
            target, entry.sha1
        ):
            target.unlink()


def _is_file(path: Path) -> bool:
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except FileNotFoundError:
        return False


def _holds(path: Path, sha1: bytes) -> bool:
    """Whether `path` is a file with this content (a placed file, not an older one)."""
    try:
        return _is_file(path) and sha1_of_file(path) == sha1
    except FileNotFoundError:
        return False


def remove_stray_temps(folder: Path, in_use: Callable[[str], bool]) -> int:
    """Delete temp/backup files a crash left behind (never a name `in_use` claims); the count."""
    removed = 0
    for entry in os.scandir(folder):
        if is_temp_name(entry.name) and entry.is_file(follow_symlinks=False):
            if not in_use(entry.name):
                os.unlink(entry.path)
                removed += 1
    if removed:
        log.warning("media: removed %d stray temp files from %s", removed, folder)
    return removed
