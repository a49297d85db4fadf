"""The user's media folder on disk: which names are allowed, SHA-1 hashing, atomic changes.

Every path into the folder is built by `media_path`, after the name was checked. A media file
only ever appears under its real name by renaming a fully written, fsynced temp file from the
same folder; `FileJournal` makes a batch of such renames and deletions undoable. No SQL here.
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
import stat
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO

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
    """A complete, fsynced temp file in the media folder, waiting to be renamed into place."""

    path: Path
    sha1: bytes
    size: int

    def discard(self) -> None:
        self.path.unlink(missing_ok=True)


def stage_stream(folder: Path, source: IO[bytes], max_bytes: int) -> StagedFile:
    """Copy `source` to a new temp file in `folder`, hashing it; at most `max_bytes` bytes.

    More than `max_bytes` → BadRequest (as the official server answers); the temp file is
    removed on any error.
    """
    path = new_temp_path(folder)
    digest, size = hashlib.sha1(), 0
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as out:
            while chunk := source.read(min(COPY_CHUNK_BYTES, max_bytes + 1 - size)):
                size += len(chunk)
                if size > max_bytes:
                    raise BadRequest(f"media file over {max_bytes} bytes")
                digest.update(chunk)
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return StagedFile(path, digest.digest(), size)


class FileJournal:
    """A batch of renames into and deletions from the media folder that can be undone.

    Use it around the database transaction: `with FileJournal(folder) as j, index.atomic():`.
    Replaced or deleted files are first moved aside to temp names; on success those are removed,
    on any error (including a failed commit) every step is reversed, newest first.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._undo: list[tuple[Path, Path | None]] = []  # (target, backup or None if placed)

    def place(self, staged: StagedFile, name: str) -> None:
        target = media_path(self.folder, name)
        self._move_aside(target)
        os.rename(staged.path, target)
        self._undo.append((target, None))

    def remove(self, name: str) -> None:
        self._move_aside(media_path(self.folder, name))

    def _move_aside(self, target: Path) -> None:
        try:
            if stat.S_ISDIR(os.lstat(target).st_mode):
                raise IsADirectoryError(f"{target} is a directory, not a media file")
        except FileNotFoundError:
            return
        backup = new_temp_path(self.folder)
        os.rename(target, backup)
        self._undo.append((target, backup))

    def __enter__(self) -> FileJournal:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if not self._undo:
            return
        if kind is not None:
            self._roll_back()
            fsync_dir(self.folder)
            return
        self._forget_backups()
        try:
            fsync_dir(self.folder)
        except OSError:  # the batch is committed; removing the backups is only housekeeping
            log.exception("media: could not fsync %s", self.folder)

    def sync(self) -> None:
        """Make the renames so far durable (call before committing the database)."""
        if self._undo:
            fsync_dir(self.folder)

    def _forget_backups(self) -> None:
        """After the commit: a backup that cannot be removed is left for `remove_stray_temps`."""
        for _, backup in self._undo:
            if backup is not None:
                try:
                    backup.unlink(missing_ok=True)
                except OSError:
                    log.exception("media: could not remove backup %s", backup)

    def _roll_back(self) -> None:
        for target, backup in reversed(self._undo):
            try:
                if backup is None:
                    target.unlink(missing_ok=True)
                else:
                    os.replace(backup, target)
            except OSError:
                log.exception("media: could not undo a change to %s", target)


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
