"""The media trash: the files syncs deleted or replaced, kept a number of days, then purged.

`SYNC_BASE/<user>/media.ankihost-trash/` (a name the official server never reads) holds one
folder per kept version, named by `storage/paths.py` after when it was trashed, the media USN
of the change that removed it and its SHA-1; the file inside keeps its media name. The media
journal moves files in (`move_in`, part of the work after a batch's commit, redone by its
recovery); an entry leaves in one rename out of the listing, so a crash mid-purge never leaves
half an entry. Nothing here counts toward a quota. No SQL.
"""

from __future__ import annotations

import logging
import os
import shutil
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from ankihost.storage.paths import (
    TRASH_PURGE_PREFIX,
    is_trash_purge_name,
    parse_trash_entry_name,
    trash_entry_name,
)

log = logging.getLogger(__name__)

SECONDS_PER_DAY = 86_400
DEFAULT_DAYS = 30


@dataclass(frozen=True)
class TrashEntry:
    """One kept version of a media file. `id` is its entry folder's name."""

    id: str
    name: str
    trashed_at: int
    usn: int
    sha1: bytes
    size: int


@dataclass(frozen=True)
class Trash:
    """A user's trash folder and how long it keeps files (`days` 0: no trash at all)."""

    root: Path
    days: int = DEFAULT_DAYS

    @property
    def enabled(self) -> bool:
        return self.days > 0

    @staticmethod
    def entry_id(trashed_at: int, usn: int, sha1: bytes) -> str:
        return trash_entry_name(trashed_at, usn, sha1)

    def path_of(self, entry: TrashEntry) -> Path:
        return self.root / entry.id / entry.name

    def entries(self) -> list[TrashEntry]:
        """Every complete entry, newest first (an entry folder without its file is skipped)."""
        try:
            listing = list(os.scandir(self.root))
        except FileNotFoundError:
            return []
        found = [entry for item in listing if (entry := _read_entry(item)) is not None]
        return sorted(found, key=lambda e: (e.trashed_at, e.usn), reverse=True)

    def newest(self, names: Iterable[str]) -> dict[str, TrashEntry]:
        """The most recently trashed version of each of the media files `names` that the trash
        holds (the trash listed once)."""
        wanted, found = set(names), {}
        for entry in self.entries():  # newest first
            if entry.name in wanted and entry.name not in found:
                found[entry.name] = entry
        return found

    def move_in(self, media_dir_fd: int, name: str, entry_id: str) -> list[Path]:
        """Move media file `name` (in the folder of `media_dir_fd`) into entry `entry_id`.

        Idempotent: nothing happens when `name` is gone (already moved). Returns the folders
        whose entries changed besides the media folder, parents first, for the caller to fsync.
        """
        try:
            os.lstat(name, dir_fd=media_dir_fd)
        except FileNotFoundError:
            return []
        changed = []
        if _make_dir(self.root):
            changed.append(self.root.parent)
        entry = self.root / entry_id
        if _make_dir(entry):
            changed.append(self.root)
        os.rename(name, entry / name, src_dir_fd=media_dir_fd)
        return [*changed, entry]

    def remove(self, entry_id: str) -> None:
        """Take entry `entry_id` out of the listing (one rename), then delete it. Idempotent."""
        doomed = self.root / f"{TRASH_PURGE_PREFIX}{entry_id}"
        try:
            os.rename(self.root / entry_id, doomed)
        except FileNotFoundError:
            return
        shutil.rmtree(doomed, ignore_errors=True)

    def expired(self, entry: TrashEntry, now: float) -> bool:
        return not self.enabled or entry.trashed_at + self.days * SECONDS_PER_DAY <= now

    def purge(self, now: float) -> int:
        """Remove every expired entry (all of them when the trash is off) and whatever a crash
        left (entries being removed, entry folders never filled); the number of files purged."""
        self.remove_leftovers()
        doomed = [entry for entry in self.entries() if self.expired(entry, now)]
        for entry in doomed:
            self.remove(entry.id)
        if doomed:
            log.info("media trash: purged %d expired files from %s", len(doomed), self.root)
        return len(doomed)

    def remove_leftovers(self) -> None:
        """Delete entries a crash left half removed, and empty entry folders (a crash between
        making one and moving its file in: recovery, which runs first, no longer needs them)."""
        try:
            listing = list(os.scandir(self.root))
        except FileNotFoundError:
            return
        for item in listing:
            if is_trash_purge_name(item.name):
                shutil.rmtree(item.path, ignore_errors=True)
            elif parse_trash_entry_name(item.name) is not None and _is_empty_dir(item.path):
                os.rmdir(item.path)


def _read_entry(item: os.DirEntry[str]) -> TrashEntry | None:
    parsed = parse_trash_entry_name(item.name)
    if parsed is None or not item.is_dir(follow_symlinks=False):
        return None
    try:
        files = list(os.scandir(item.path))
    except FileNotFoundError:  # removed meanwhile
        return None
    if len(files) != 1 or not files[0].is_file(follow_symlinks=False):
        return None
    trashed_at, usn, sha1 = parsed
    size = files[0].stat(follow_symlinks=False).st_size
    return TrashEntry(item.name, files[0].name, trashed_at, usn, sha1, size)


def _make_dir(path: Path) -> bool:
    """Create `path` unless it exists; whether it was created."""
    try:
        os.mkdir(path)
    except FileExistsError:
        if not stat.S_ISDIR(os.lstat(path).st_mode):
            raise
        return False
    return True


def _is_empty_dir(path: str) -> bool:
    try:
        with os.scandir(path) as listing:
            return next(listing, None) is None
    except (FileNotFoundError, NotADirectoryError):
        return False
