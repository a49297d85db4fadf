"""A consistent, private copy of one user's data for a backup or an export, made in the short
time their lock is held, then read at leisure with no lock.

Under the lock and between syncs (`idle.when_idle`), `freeze` copies the collection and
media.db with SQLite's backup API from their open connections, and hard-links every media file
(and every other entry a backup carries) into a `.freeze-` folder beside them. Media files are
never changed in place (a new version is a new file renamed over the name), so a link is a
copy that later syncs cannot touch, made without copying a byte. Where the file system has no
hard links, files are copied instead. The caller removes the folder (`Frozen.remove`); a crash
leaves it to `UserFolder.remove_leftovers`.
"""

from __future__ import annotations

import logging
import os
import shutil
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ankihost.errors import ServerError
from ankihost.registry import UserState
from ankihost.storage.collection import connect
from ankihost.storage.paths import (
    COLLECTION_NAME,
    MEDIA_DB_NAME,
    MEDIA_FOLDER_NAME,
    UserFolder,
    is_media_temp_name,
    is_transient,
)
from ankihost.storage.schema import SQLITE_MAGIC

log = logging.getLogger(__name__)

BACKUP_PAGES_PER_STEP = 4096


@dataclass(frozen=True)
class Frozen:
    """The copy: a folder laid out as the user's own (it is walked, never listed in memory)."""

    root: Path

    @property
    def collection(self) -> Path | None:
        path = self.root / COLLECTION_NAME
        return path if path.exists() else None

    @property
    def media(self) -> Path:
        return self.root / MEDIA_FOLDER_NAME

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def freeze(state: UserState, *, media: bool, others: bool, snapshots: bool = False,
           create: bool = False) -> Frozen:
    """Under the user's lock with no sync session open: copy what a backup (`others`: every
    other entry of the folder, `snapshots/` if asked) or an export (`media` or not) needs.
    With `create`, a user without a collection gets an empty one first (as a sync would)."""
    folder = state.folder
    frozen = Frozen(folder.new_freeze_dir())
    try:
        if create or folder.collection.exists():
            _copy_database(state.collection.connection(), frozen, COLLECTION_NAME)
        if media:
            if folder.media_db.exists():
                # every committed batch's files in the folder, and the media log emptied, so
                # the index copy and the files agree
                index = state.media.index(placed=True)
                state.media.settle()
                _copy_database(index.db, frozen, MEDIA_DB_NAME)
            _link_media(folder, frozen)
        if others:
            for entry in folder.backup_entries(snapshots=snapshots):
                _link_entry(entry, entry.name, frozen)
    except BaseException:
        frozen.remove()
        raise
    return frozen


def freeze_unowned(folder: UserFolder, *, snapshots: bool) -> Frozen:
    """The same for a folder no account owns any more (a removed user's data): nothing serves
    it, so its databases are read through connections of their own."""
    frozen = Frozen(folder.new_freeze_dir())
    try:
        for name in (COLLECTION_NAME, MEDIA_DB_NAME):
            if (folder.root / name).exists():
                _copy_file_database(folder.root / name, frozen, name)
        _link_media(folder, frozen)
        for entry in folder.backup_entries(snapshots=snapshots):
            _link_entry(entry, entry.name, frozen)
    except BaseException:
        frozen.remove()
        raise
    return frozen


def _copy_database(db: sqlite3.Connection, frozen: Frozen, relative: str) -> None:
    """SQLite's online backup from an open connection: everything committed, never a file
    copy of a live database."""
    target = frozen.root / relative
    target.parent.mkdir(parents=True, exist_ok=True)
    copy = sqlite3.connect(str(target))
    try:
        db.backup(copy, pages=BACKUP_PAGES_PER_STEP)
    except sqlite3.Error as exc:
        raise ServerError(f"could not copy {relative}: {exc}") from exc
    finally:
        copy.close()


def _copy_file_database(path: Path, frozen: Frozen, relative: str) -> None:
    try:
        db = connect(path, exclusive=False)
    except sqlite3.Error as exc:
        raise ServerError(f"could not open {path}: {exc}") from exc
    try:
        _copy_database(db, frozen, relative)
    finally:
        db.close()


def _link_media(folder: UserFolder, frozen: Frozen) -> None:
    target = frozen.media
    target.mkdir()
    for entry in _files(folder.media):
        if not is_media_temp_name(entry.name):
            _link(Path(entry.path), target / entry.name)


def _link_entry(source: Path, relative: str, frozen: Frozen) -> None:
    """A file (a database through the backup API, anything else linked) or a whole folder."""
    target = frozen.root / relative
    if source.is_symlink():
        log.warning("backup: skipping the symbolic link %s", source)
    elif source.is_dir():
        target.mkdir()
        with os.scandir(source) as children:
            for child in children:
                if not is_transient(child.name):
                    _link_entry(Path(child.path), f"{relative}/{child.name}", frozen)
    elif source.is_file():
        if _is_database(source):
            _copy_file_database(source, frozen, relative)
        else:
            _link(source, target)


def _files(folder: Path) -> Iterator[os.DirEntry[str]]:
    try:
        with os.scandir(folder) as entries:
            for entry in entries:
                if entry.is_file(follow_symlinks=False):
                    yield entry
    except FileNotFoundError:
        return


def _link(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def _is_database(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(len(SQLITE_MAGIC)) == SQLITE_MAGIC
