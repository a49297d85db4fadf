"""Where a user's files live under SYNC_BASE, in the official server's layout, and safe replacement.

    SYNC_BASE/<user>/collection.anki2   the collection (schema 18, WAL)
    SYNC_BASE/<user>/media/             media files, flat
    SYNC_BASE/<user>/media.db           the server's media index
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

COLLECTION_NAME = "collection.anki2"
PREVIOUS_NAME = "collection.anki2.previous"
SIDECAR_SUFFIXES = ("-wal", "-shm", "-journal")
_FORBIDDEN_CHARS = set('/\\\x00')


def unsafe_name_reason(name: str) -> str | None:
    """Why `name` cannot be a user folder name, or None when it is safe."""
    if name == "":
        return "is empty"
    if name in (".", ".."):
        return "is '.' or '..'"
    if any(ch in _FORBIDDEN_CHARS or ord(ch) < 32 for ch in name):
        return "contains '/', '\\', NUL or a control character"
    if len(name.encode("utf-8")) > 200:
        return "is longer than 200 bytes"
    return None


@dataclass(frozen=True)
class UserFolder:
    root: Path

    @property
    def collection(self) -> Path:
        return self.root / COLLECTION_NAME

    @property
    def previous_collection(self) -> Path:
        """The collection replaced by the last successful full upload."""
        return self.root / PREVIOUS_NAME

    @property
    def media(self) -> Path:
        return self.root / "media"

    @property
    def media_db(self) -> Path:
        return self.root / "media.db"

    def ensure(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.media.mkdir(exist_ok=True)


# Transient files ankihost creates in a user's folder; any found at start-up are leftovers of
# a crash (the media folder keeps its own, swept by ankihost.media).
STALE_PREFIXES = (".upload-", ".download-", ".new-")


def remove_stale_temps(folder: UserFolder) -> list[str]:
    """Delete what an interrupted upload, download or collection creation left behind."""
    removed = []
    for entry in folder.root.iterdir():
        stale = entry.name.startswith(STALE_PREFIXES) or entry.name == PREVIOUS_NAME + ".tmp"
        if stale and entry.is_file():
            entry.unlink()
            removed.append(entry.name)
    return removed


def remove_sidecars(db_path: Path) -> None:
    """Delete `-wal`/`-shm`/`-journal` files so SQLite never replays them into another file."""
    for suffix in SIDECAR_SUFFIXES:
        try:
            os.unlink(str(db_path) + suffix)
        except FileNotFoundError:
            pass


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_replace(source: Path, target: Path) -> None:
    """Durably move `source` over `target` (same folder): fsync file, rename, fsync folder."""
    with open(source, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(source, target)
    fsync_dir(target.parent)
