"""Changes to a user's media that survive a crash or a power cut: the batch journal.

A batch (one upload, or one restore from the trash) writes the index in one transaction and
changes the media folder. Before the commit, `FileJournal.prepare` writes every new file to a
temp name in the media folder and writes the journal — the index rows the transaction writes
and each file change — then waits for one round of flushes, all at once: the new files, the
journal, the media folder, and what the previous batch left to flush (its WAL commit, its
trash folders). Up to the commit nothing under a media name has changed. After it the changes
are placed (a replaced or deleted file moves to the trash, or away; each new file is renamed
onto its name) and the batch stays `Unsettled` — its commit (the index commits without
waiting for the disk) and its renames made durable by the next batch's round, or by `settle`
when the user is idle. Two journal files take turns, so the one describing an unsettled batch
is never overwritten. So the wait for the disk is one round per batch, whatever its size.

After a crash, `recover` takes both journals oldest first and rolls each batch forward when
the index has it, or when its commit was lost but the journal and every new file are whole
(it replays the rows); otherwise it removes the batch's temp files, all an unfinished batch
had written. No SQL here.
"""

from __future__ import annotations

import logging
import os
import stat
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

import orjson

from ankihost.errors import BadRequest
from ankihost.media import journal_v1, staging
from ankihost.media.index import Entry, IndexChanges, Totals
from ankihost.media.names import require_path_name
from ankihost.media.staging import O_NOFOLLOW, StagedFile, sha1_of_file
from ankihost.media.trash import Trash
from ankihost.storage.paths import (
    fsync_dir,
    is_media_temp_name,
    new_media_temp_name,
    parse_trash_entry_name,
)

if TYPE_CHECKING:
    from ankihost.media.index import MediaIndex
    from ankihost.storage.paths import UserFolder

log = logging.getLogger(__name__)

JOURNAL_VERSION = 2
_O_NEW = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | O_NOFOLLOW


@dataclass(frozen=True)
class Change:
    """Make `name` hold `staged` (None: make it disappear). `usn` is the name's index row after
    the batch; `old`, the live row before it, whose file the trash keeps (None: nothing to
    keep, say for a file the index never had)."""

    name: str
    staged: StagedFile | None
    usn: int
    old: Entry | None = None


@dataclass(frozen=True)
class FileChange:
    """A change as journaled: put the file at temp name `source` (None: nothing) at `name`;
    the file there before goes to trash entry `trash_id` (None: away). Recovery redoes it only
    while the name's index row still has `usn`, the one the batch gave it."""

    name: str
    source: str | None
    sha1: bytes | None
    usn: int
    trash_id: str | None

    def to_json(self) -> list[object]:
        digest = self.sha1.hex() if self.sha1 is not None else None
        return [self.name, self.source, digest, self.usn, self.trash_id]

    @classmethod
    def from_json(cls, item: object) -> FileChange:
        if not (isinstance(item, list) and len(item) == 5 and isinstance(item[0], str)
                and (item[1] is None or (isinstance(item[1], str) and is_media_temp_name(item[1])))
                and (item[1] is None) == (item[2] is None)
                and (item[2] is None or isinstance(item[2], str)) and _is_int(item[3])
                and (item[4] is None or (isinstance(item[4], str)
                                         and parse_trash_entry_name(item[4]) is not None))):
            raise ValueError(f"bad journal file change {item!r:.200}")
        require_path_name(item[0])
        sha1 = bytes.fromhex(item[2]) if item[2] is not None else None
        return cls(item[0], item[1], sha1, item[3], item[4])


@dataclass(frozen=True)
class Journal:
    """One batch: what its index transaction writes, its file changes, and the trash entries it
    puts back (a restore; removed after the commit)."""

    index: IndexChanges
    files: list[FileChange]
    untrash: list[str] = field(default_factory=list)

    def to_bytes(self) -> bytes:
        t = self.index.totals
        return orjson.dumps({
            "v": JOURNAL_VERSION,
            "before": self.index.usn_before,
            "totals": [t.last_usn, t.total_bytes, t.live_files],
            "rows": [[e.name, e.sha1.hex(), e.size, e.usn, e.mtime] for e in self.index.rows],
            "files": [f.to_json() for f in self.files],
            "untrash": self.untrash,
        })

    @classmethod
    def from_value(cls, value: dict[str, object]) -> Journal:
        before, totals, rows = value.get("before"), value.get("totals"), value.get("rows")
        files, untrash = value.get("files"), value.get("untrash")
        if not (isinstance(before, int) and isinstance(totals, list) and len(totals) == 3
                and all(map(_is_int, totals)) and isinstance(rows, list)
                and isinstance(files, list) and isinstance(untrash, list)
                and all(isinstance(i, str) and parse_trash_entry_name(i) for i in untrash)):
            raise ValueError("journal lacks 'before', 'totals', 'rows', 'files' or 'untrash'")
        index = IndexChanges(before, [_row(item) for item in rows], Totals(*totals))
        return cls(index, [FileChange.from_json(item) for item in files], list(untrash))


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _row(item: object) -> Entry:
    if not (isinstance(item, list) and len(item) == 5 and isinstance(item[0], str)
            and isinstance(item[1], str) and len(item[1]) == 40 and all(map(_is_int, item[2:]))):
        raise ValueError(f"bad journal row {item!r:.200}")
    return Entry(item[0], bytes.fromhex(item[1]), item[2], item[3], item[4])


@dataclass(frozen=True)
class Unsettled:
    """A placed batch not yet known durable: its journal file (kept until then) and the trash
    folders it changed (the index WAL and the media folder are always flushed with them)."""

    journal: Path
    folders: list[Path]


class FileJournal:
    """The file side of one batch, used around the index transaction:
    `with FileJournal(folder, trash, journal, previous) as j, index.atomic() as writer:` …
    `j.prepare(changes, writer.changes())`, where `journal` is the journal file to write (not
    the one of `previous`, the batch still unsettled). Leaving the block after the commit
    places the changes (`unsettled` then describes this batch); leaving it on an error (a
    failed commit included) removes what `prepare` wrote. `flushed` says whether `previous`
    is now durable; `owned` names the staged files the batch took over (placed, or left for
    recovery to place): the caller must not discard them.
    """

    def __init__(
        self, folder: UserFolder, trash: Trash, journal: Path, previous: Unsettled | None = None
    ) -> None:
        self.folder = folder
        self.trash = trash
        self.path = journal
        self.previous = previous
        self.committed = False
        self.flushed = False
        self.owned: set[Path] = set()
        self.unsettled: Unsettled | None = None
        self._journal: Journal | None = None
        self._temps: list[str] = []  # temp files written here: removed unless placed
        self._sources: set[Path] = set()  # staged files the journal names as sources
        self._dir_fd: int | None = None

    def stage_link(self, path: Path, sha1: bytes, size: int) -> StagedFile:
        """A staged file with the content of `path` (a trash file): a hard link to it in the
        media folder, or a copy where links are not possible. Removed if the batch fails."""
        target = self.folder.media / new_media_temp_name()
        try:
            os.link(path, target, follow_symlinks=False)
        except OSError:
            with staging.open_for_reading(path) as source:
                target = staging.stage_stream(self.folder.media, source, size).path or target
        self._temps.append(target.name)
        return StagedFile(target, sha1, size)

    def prepare(
        self, changes: Sequence[Change], index: IndexChanges, untrash: Sequence[str] = ()
    ) -> None:
        """Before the commit: write the new files and the journal, and make them durable."""
        if not index.rows and not changes and not untrash:
            return
        self._dir_fd = os.open(self.folder.media, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        now = int(time.time())
        planned = [self._plan(change, now) for change in changes]
        files = [file for file in planned if file is not None]
        self._journal = Journal(index, files, list(untrash))
        self._write_durably(changes, self._journal)

    def _plan(self, change: Change, now: int) -> FileChange | None:
        """The journaled form of `change`, from what is on disk; None when there is nothing to
        do on disk (a deletion of a file that is not there)."""
        require_path_name(change.name)
        exists = self._exists(change.name)
        trash_id = None
        if exists and change.old is not None and self.trash.enabled:
            trash_id = self.trash.entry_id(now, change.usn, change.old.sha1)
        staged = change.staged
        if staged is None:
            return FileChange(change.name, None, None, change.usn, trash_id) if exists else None
        if staged.path is None:
            source = new_media_temp_name()  # written in `_write_durably`
        elif staged.path.parent != self.folder.media:
            raise ValueError(f"{staged.path} is not in {self.folder.media}")
        else:
            source = staged.path.name
            self._sources.add(staged.path)
        return FileChange(change.name, source, staged.sha1, change.usn, trash_id)

    def _exists(self, name: str) -> bool:
        try:
            mode = os.lstat(name, dir_fd=self._dir_fd).st_mode
        except FileNotFoundError:
            return False
        if stat.S_ISDIR(mode):
            raise IsADirectoryError(f"{self.folder.media / name} is a directory, not a media file")
        return True

    def _write_durably(self, changes: Sequence[Change], journal: Journal) -> None:
        """Write each in-memory file to its temp name (its write-back started at once) and the
        journal, then wait for one round of flushes: every new file, the journal, the media
        folder (the new names in it) and what the previous batch left unflushed."""
        files: list[int] = []
        folders: list[int] = []
        staged = {change.name: change.staged for change in changes}
        try:
            for file in journal.files:
                if file.source is not None:
                    files.append(self._open_source(file.source, staged[file.name]))
            files.append(self._open_journal())
            staging.write_all(files[-1], journal.to_bytes())
            self._open_previous(files, folders)
            staging.flush_all(files, [self._fd(), *folders])
        finally:
            for fd in files + folders:
                os.close(fd)
        self.flushed = True

    def _open_previous(self, files: list[int], folders: list[int]) -> None:
        """Open what the previous batch left unflushed: its WAL commit and its trash folders
        (one purged meanwhile needs nothing)."""
        if self.previous is None:
            return
        wal = _open_if_there(Path(f"{self.folder.media_db}-wal"))
        if wal is not None:
            files.append(wal)
        for path in self.previous.folders:
            if (fd := _open_if_there(path)) is not None:
                folders.append(fd)

    def _open_source(self, source: str, staged: StagedFile | None) -> int:
        """An open descriptor of a new file at its temp name, written first if it is held in
        memory."""
        if staged is not None and staged.data is not None:
            fd = os.open(source, _O_NEW, 0o666, dir_fd=self._fd())
            self._temps.append(source)
            staging.write_all(fd, staged.data)
            staging.start_writeback(fd)
            return fd
        return os.open(source, os.O_RDONLY | os.O_CLOEXEC | O_NOFOLLOW, dir_fd=self._fd())

    def _open_journal(self) -> int:
        """The journal file, emptied (or created: then its folder is fsynced first)."""
        path = self.path
        flags = os.O_WRONLY | os.O_TRUNC | os.O_CLOEXEC | O_NOFOLLOW
        try:
            return os.open(path, flags)
        except FileNotFoundError:
            fd = os.open(path, flags | os.O_CREAT | os.O_EXCL, 0o600)
        fsync_dir(path.parent)
        return fd

    def _fd(self) -> int:
        assert self._dir_fd is not None
        return self._dir_fd

    def __enter__(self) -> FileJournal:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            if kind is None:
                self._after_commit()
            else:
                self._roll_back()
        finally:
            if self._dir_fd is not None:
                os.close(self._dir_fd)
                self._dir_fd = None

    def _after_commit(self) -> None:
        journal = self._journal
        self.committed = True
        self.owned = set(self._sources)
        if journal is None:
            return
        changed: list[Path] = []
        for file in journal.files:
            changed += place(self._fd(), file, self.trash)
        for entry_id in journal.untrash:
            self.trash.remove(entry_id)
        self.unsettled = Unsettled(self.path, list(dict.fromkeys(changed)))

    def _roll_back(self) -> None:
        """Undo `prepare`: the journal emptied first (nothing under a media name changed), then
        the temp files written here removed (a crash in between leaves them to the sweep)."""
        if self._journal is not None:
            clear_journal(self.path)
        for temp in self._temps:
            (self.folder.media / temp).unlink(missing_ok=True)


def place(dir_fd: int, file: FileChange, trash: Trash) -> list[Path]:
    """Make one committed change in the media folder of `dir_fd`; the folders other than the
    media folder whose entries changed. Idempotent: a source that is gone was placed."""
    if file.source is not None and not _exists_at(dir_fd, file.source):
        return []
    changed: list[Path] = []
    if file.trash_id is not None:
        changed = trash.move_in(dir_fd, file.name, file.trash_id)
    elif file.source is None:
        try:
            os.unlink(file.name, dir_fd=dir_fd)
        except FileNotFoundError:
            pass
    if file.source is not None:
        os.rename(file.source, file.name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    return changed


def _exists_at(dir_fd: int, name: str) -> bool:
    try:
        os.lstat(name, dir_fd=dir_fd)
    except FileNotFoundError:
        return False
    return True


def _open_if_there(path: Path) -> int | None:
    try:
        return os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None


def settle(folder: UserFolder, unsettled: Unsettled) -> None:
    """Make an unsettled batch durable now, then empty both journals (the other one holds an
    older batch, durable since this one's flush)."""
    flush_now(folder, unsettled.folders)
    for journal in folder.media_journals:
        clear_journal(journal)


def flush_now(folder: UserFolder, changed: Iterable[Path]) -> None:
    """Make a placed batch durable: `changed` (trash folders, parents first), the WAL, the
    media folder. A trash folder removed meanwhile (purged) needs nothing."""
    for path in changed:
        try:
            fsync_dir(path)
        except FileNotFoundError:
            pass
    try:
        fd = os.open(f"{folder.media_db}-wal", os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:  # checkpointed and removed: the commit is in media.db
        pass
    else:
        try:
            os.fdatasync(fd)
        finally:
            os.close(fd)
    fsync_dir(folder.media)


def clear_journal(path: Path) -> None:
    """Empty the journal file (kept, so the next batch need not create it). Not synced: if a
    crash brings its content back, `recover` finds the batch complete and does nothing."""
    try:
        os.truncate(path, 0)
    except FileNotFoundError:
        pass
    except OSError:
        log.exception("media: could not clear %s", path)


# -- after a crash ----------------------------------------------------------------------------
def recover(folder: UserFolder, trash: Trash, index: MediaIndex) -> bool:
    """Finish or drop the batches a crash interrupted, from both journals, oldest first (call
    when opening the index, before `remove_stray_temps`). Idempotent, so a crash during
    recovery is recovered from too. Returns whether there was a journal; both are left
    empty, durably."""
    journals: list[Journal] = []
    found = False
    for path in folder.media_journals:
        raw = _read(path)
        if not raw:
            continue
        found = True
        try:
            value = orjson.loads(raw)
            if not isinstance(value, dict):
                raise ValueError("the journal is not an object")
            if value.get("v") != JOURNAL_VERSION:
                journal_v1.recover(folder.media, value, index.last_usn(), _live_sha1(index))
            else:
                journals.append(Journal.from_value(value))
        except (ValueError, BadRequest) as exc:  # torn while written: never committed
            log.warning("media: ignoring unreadable journal %s: %s", path, exc)
    for journal in sorted(journals, key=lambda j: (j.index.usn, j.index.usn_before)):
        _recover(folder, trash, index, journal)
    if found:
        for path in folder.media_journals:
            _clear_durably(path)
    return found


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return b""


def _clear_durably(path: Path) -> None:
    try:
        with path.open("r+b") as f:
            f.truncate(0)
            os.fdatasync(f.fileno())
    except FileNotFoundError:
        pass


def _recover(folder: UserFolder, trash: Trash, index: MediaIndex, journal: Journal) -> None:
    last_usn = index.last_usn()
    if last_usn < journal.index.usn and last_usn == journal.index.usn_before and _whole(
        folder.media, journal.files
    ):
        log.warning("media: replaying a batch whose commit was lost (usn %d)", journal.index.usn)
        index.replay(journal.index)
        last_usn = journal.index.usn
    if last_usn < journal.index.usn:
        log.warning("media: dropping a batch that never committed (usn %d)", journal.index.usn)
        for file in journal.files:
            if file.source is not None:
                (folder.media / file.source).unlink(missing_ok=True)
        return
    changed = _roll_forward(folder, trash, index, journal)
    flush_now(folder, changed)


def _roll_forward(
    folder: UserFolder, trash: Trash, index: MediaIndex, journal: Journal
) -> list[Path]:
    log.warning("media: completing an interrupted batch (usn %d)", journal.index.usn)
    changed: list[Path] = []
    dir_fd = os.open(folder.media, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for file in journal.files:
            row = index.get(file.name)
            if row is not None and row.usn == file.usn:  # else a later change owns the name
                changed += place(dir_fd, file, trash)
    finally:
        os.close(dir_fd)
    for entry_id in journal.untrash:
        trash.remove(entry_id)
    return changed


def _whole(media: Path, files: Sequence[FileChange]) -> bool:
    """Whether every new file of the batch is on disk complete, at its temp name or placed
    (a batch is placed only after all of them were durable)."""
    return all(
        file.sha1 is None or _holds(media / file.source, file.sha1)
        or _holds(media / file.name, file.sha1)
        for file in files if file.source is not None
    )


def _holds(path: Path, sha1: bytes) -> bool:
    """Whether `path` is a regular file with this content."""
    try:
        return stat.S_ISREG(os.lstat(path).st_mode) and sha1_of_file(path) == sha1
    except FileNotFoundError:
        return False


def _live_sha1(index: MediaIndex) -> journal_v1.LiveSha1:
    def live_sha1(name: str) -> bytes | None:
        entry = index.get_live(name)
        return entry.sha1 if entry is not None else None

    return live_sha1


def remove_stray_temps(folder: Path, in_use: Callable[[str], bool]) -> int:
    """Delete temp files a crash left behind (never a name `in_use` claims); the count."""
    removed = 0
    for entry in os.scandir(folder):
        if is_media_temp_name(entry.name) and entry.is_file(follow_symlinks=False):
            if not in_use(entry.name):
                os.unlink(entry.path)
                removed += 1
    if removed:
        log.warning("media: removed %d stray temp files from %s", removed, folder)
    return removed
