"""A user's snapshots: taking a copy, compressing it, listing, finding, pruning.

Taking one is two steps, so that the user's lock is held only for the copy. `capture` (from the
live connection, by SQLite's backup API) or `capture_file` (a closed collection file, hard
linked) runs under the user's lock and leaves a complete, durable `.pending-` copy; `settle`
(no user lock needed) compresses pending copies into snapshots and applies retention. A crash
leaves either a `.tmp-` file (removed by `UserFolder.remove_leftovers`) or a complete pending
copy, which `recover` settles at start-up. A thread lock serialises changes to the folder.
"""

from __future__ import annotations

import calendar
import logging
import os
import shutil
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ankihost.errors import BadRequest, ServerError
from ankihost.snapshots import compressed
from ankihost.snapshots.compressed import Header, Progress
from ankihost.snapshots.retention import Retention, expired
from ankihost.storage import schema11
from ankihost.storage.paths import (
    SNAPSHOT_PENDING_PREFIX,
    SNAPSHOT_PENDING_SUFFIX,
    SNAPSHOT_SUFFIX,
    UserFolder,
    file_size,
    fsync_dir,
    remove_sidecars,
)

log = logging.getLogger(__name__)

# Why a snapshot was taken (part of its file name).
UPLOAD, PERIODIC, RESTORE, PREVIOUS = "upload", "periodic", "restore", "previous"
_ID_FORMAT = "%Y%m%d-%H%M%S"


@dataclass(frozen=True)
class Snapshot:
    id: str
    reason: str
    taken: int  # Unix seconds (UTC), from the id
    path: Path
    file_bytes: int
    header: Header | None  # None: the header cannot be read (the file is damaged)


def new_id(taken: float, existing: set[str]) -> str:
    """`YYYYMMDD-HHMMSS` of `taken` in UTC, with `-2`, `-3`, … if that one is taken."""
    base = time.strftime(_ID_FORMAT, time.gmtime(taken))
    candidate, n = base, 1
    while candidate in existing:
        n += 1
        candidate = f"{base}-{n}"
    return candidate


def taken_of(id: str) -> int | None:
    """The Unix time an id names (None for a name that is not an id)."""
    parts = id.split("-")
    if len(parts) == 3 and parts[2].isdigit() and parts[2] == str(int(parts[2])) and int(parts[2]) > 1:
        parts = parts[:2]
    if len(parts) != 2:
        return None
    base = "-".join(parts)
    try:
        taken = calendar.timegm(time.strptime(base, _ID_FORMAT))
    except ValueError:
        return None
    return taken if time.strftime(_ID_FORMAT, time.gmtime(taken)) == base else None


def _parse(name: str, prefix: str, suffix: str) -> tuple[str, str] | None:
    """(id, reason) from a snapshot or pending file name."""
    if not (name.startswith(prefix) and name.endswith(suffix)):
        return None
    id, dot, reason = name[len(prefix) : len(name) - len(suffix)].partition(".")
    if not dot or not reason or "." in reason or taken_of(id) is None:
        return None
    return id, reason


def pending_id(path: Path) -> str:
    """The id of the pending copy at `path` (as `capture` and `capture_file` return it)."""
    parsed = _parse(path.name, SNAPSHOT_PENDING_PREFIX, SNAPSHOT_PENDING_SUFFIX)
    if parsed is None:
        raise ValueError(f"{path.name} is not a pending snapshot")
    return parsed[0]


class UserSnapshots:
    def __init__(self, folder: UserFolder) -> None:
        self.folder = folder
        self._lock = threading.Lock()

    # -- taking (under the user's lock) -----------------------------------------------------

    def capture(self, db: sqlite3.Connection, reason: str) -> Path:
        """A complete pending copy of the collection open on `db` (the caller holds the user's
        lock, and no transaction runs on `db`): SQLite's backup API, never a file copy."""
        with self._lock:
            temp = self.folder.new_snapshot_temp()
            try:
                schema11.snapshot(db, temp)
                _fsync(temp)
                pending = self.folder.pending_snapshot_path(self._new_id(time.time()), reason)
                os.replace(temp, pending)
                fsync_dir(pending.parent)
            finally:
                temp.unlink(missing_ok=True)
                remove_sidecars(temp)
        return pending

    def capture_file(self, path: Path, reason: str, taken: float | None = None) -> Path:
        """A pending copy of the closed collection file `path` (nobody writes it any more): a
        hard link, or a copy where the file system has none."""
        with self._lock:
            self.folder.snapshots.mkdir(exist_ok=True)
            pending = self.folder.pending_snapshot_path(
                self._new_id(time.time() if taken is None else taken), reason)
            try:
                os.link(path, pending)
            except OSError:
                self._copy_into(path, pending)
            fsync_dir(pending.parent)
        return pending

    def _copy_into(self, path: Path, pending: Path) -> None:
        temp = self.folder.new_snapshot_temp()
        try:
            shutil.copyfile(path, temp)
            _fsync(temp)
            os.replace(temp, pending)
        finally:
            temp.unlink(missing_ok=True)

    def _new_id(self, taken: float) -> str:
        return new_id(taken, self._ids() | {id for id, _, _ in self._pending()})

    def _ids(self) -> set[str]:
        """The ids of the snapshots, from their file names (no header read: this runs under the
        user's lock, before every full upload)."""
        return {id for _, id, _ in self._files()}

    def _files(self) -> Iterator[tuple[Path, str, str]]:
        """(path, id, reason) of each snapshot file."""
        for path in _entries(self.folder.snapshots):
            parsed = _parse(path.name, "", SNAPSHOT_SUFFIX)
            if parsed is not None and not path.name.startswith("."):
                yield path, *parsed

    # -- compressing and pruning (no user lock needed) --------------------------------------

    def settle(self, policy: Retention | None, progress: Progress | None = None) -> list[Snapshot]:
        """Compress every pending copy into a snapshot, then (with a policy) delete what it no
        longer keeps. The snapshots made."""
        with self._lock:
            made = [self._compress(*pending, progress) for pending in self._pending()]
            if policy is not None:
                self._prune(policy)
        return made

    def has_pending(self) -> bool:
        return bool(self._pending())

    def _pending(self) -> list[tuple[str, str, Path]]:
        found = []
        for path in _entries(self.folder.snapshots):
            parsed = _parse(path.name, SNAPSHOT_PENDING_PREFIX, SNAPSHOT_PENDING_SUFFIX)
            if parsed is not None:
                found.append((*parsed, path))
        return sorted(found)

    def _compress(self, id: str, reason: str, pending: Path, progress: Progress | None) -> Snapshot:
        header = compressed.describe(pending, id, reason, taken_of(id) or int(time.time()))
        target = self.folder.snapshot_path(id, reason)
        temp = self.folder.new_snapshot_temp()
        try:
            compressed.write(pending, header, temp, progress)
            os.replace(temp, target)
            fsync_dir(target.parent)
        except OSError as exc:
            raise ServerError(f"could not write snapshot {id} of {self.folder.root.name}: {exc}") from exc
        finally:
            temp.unlink(missing_ok=True)
        pending.unlink()
        log.info("snapshot %s (%s) of %s: %d bytes, %d compressed", id, reason,
                 self.folder.root.name, header.raw_bytes, target.stat().st_size)
        return self._read(target, id, reason)

    def _prune(self, policy: Retention) -> None:
        for snapshot in expired(self.list(), time.time(), policy):
            snapshot.path.unlink(missing_ok=True)
            log.info("snapshot %s of %s deleted (retention)", snapshot.id, self.folder.root.name)

    def delete(self, snapshot: Snapshot) -> None:
        with self._lock:
            snapshot.path.unlink(missing_ok=True)

    # -- reading ----------------------------------------------------------------------------

    def list(self) -> list[Snapshot]:
        """Every snapshot, oldest first (pending copies not included)."""
        found = [self._read(path, id, reason) for path, id, reason in self._files()]
        return sorted(found, key=lambda s: (s.taken, s.id))

    def _read(self, path: Path, id: str, reason: str) -> Snapshot:
        try:
            header: Header | None = compressed.read_header(path)
        except (BadRequest, OSError) as exc:
            log.warning("snapshot %s: unreadable header: %s", path, exc)
            header = None
        return Snapshot(id, reason, taken_of(id) or 0, path, file_size(path), header)

    def find(self, id: str) -> Snapshot | None:
        return next((s for s in self.list() if s.id == id), None)

    def latest(self) -> Snapshot | None:
        snapshots = self.list()
        return snapshots[-1] if snapshots else None

    def disk_bytes(self) -> int:
        """What the snapshots folder takes on disk (pending copies included)."""
        return sum(file_size(p) for p in _entries(self.folder.snapshots))

    # -- after a crash ----------------------------------------------------------------------

    def recover(self) -> None:
        """At start-up (the caller holds the user's lock; leftovers already removed): turn the
        `collection.anki2.previous` of older versions into a snapshot, and compress every
        pending copy a crash left."""
        previous = self.folder.previous_collection
        if previous.is_file():
            self.capture_file(previous, PREVIOUS, previous.stat().st_mtime)
            previous.unlink()
            fsync_dir(previous.parent)
        if self.has_pending():
            made = self.settle(None)
            log.info("finished %d snapshot(s) of %s a crash interrupted", len(made),
                     self.folder.root.name)


def _entries(folder: Path) -> list[Path]:
    try:
        return [Path(e.path) for e in os.scandir(folder) if e.is_file(follow_symlinks=False)]
    except FileNotFoundError:
        return []


def _fsync(path: Path) -> None:
    with open(path, "rb+") as f:
        os.fsync(f.fileno())
