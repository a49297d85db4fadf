"""Changes to a user's media folder that survive a crash: the upload journal and its recovery.

`FileJournal` makes a batch of changes undoable, in process and, through a journal file made
durable before the folder is touched, after a crash (`recover`). A file that replaces an
existing one is written to a temp file and renamed over it (the old one kept as a backup until
the commit); a file under a name that does not exist yet is written straight to that name,
since the journal lets recovery remove it if the batch never committed. Either way every file
is complete and durable before the commit, so the index never claims a half-written file.
No SQL here.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import orjson

from ankihost.errors import BadRequest
from ankihost.media import staging
from ankihost.media.names import require_path_name
from ankihost.media.staging import O_NOFOLLOW, StagedFile, sha1_of_file
from ankihost.storage.paths import fsync_dir, is_media_temp_name, new_media_temp_name

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Change:
    """Make `name` hold `staged` (an addition) or disappear (`staged` None: a deletion)."""

    name: str
    staged: StagedFile | None


@dataclass(frozen=True)
class JournalEntry:
    """One change as the journal records it. `backup` is the temp name (in the media folder) the
    old file is moved to, or None when `name` did not exist before the batch: then undoing it
    removes whatever the batch put there, complete or not. `sha1` is the new content's, None for
    a deletion."""

    name: str
    backup: str | None
    sha1: bytes | None

    def to_json(self) -> list[str | None]:
        return [self.name, self.backup, self.sha1.hex() if self.sha1 is not None else None]

    @classmethod
    def from_json(cls, item: object) -> JournalEntry:
        if not (isinstance(item, list) and len(item) == 3 and isinstance(item[0], str)
                and (item[1] is None or (isinstance(item[1], str) and is_media_temp_name(item[1])))
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


@dataclass
class _Step:
    """How one change is made: `source` is the temp file renamed onto the name (None: the bytes
    are written straight to the name, or nothing is placed for a deletion)."""

    change: Change
    entry: JournalEntry
    source: str | None = None


class FileJournal:
    """One batch of changes to the media folder, safe across crashes.

    Use it around the database transaction: `with FileJournal(folder, path) as j,
    index.atomic():` … `j.apply(changes, usn)`. `apply` writes and fsyncs the journal file at
    `path`, writes the new files (straight to their names when those do not exist yet, else to
    temp files) and fsyncs them, moves replaced or deleted files aside to temp names, renames the
    temp files into place and fsyncs the folder once. After the commit the backups are removed
    and the journal file emptied (it is kept for the next upload); on any error (including a
    failed commit) every step is reversed, newest first. After a crash, `recover` (run before
    anything else) does one or the other.
    """

    def __init__(self, folder: Path, journal_path: Path) -> None:
        self.folder = folder
        self.journal_path = journal_path
        self._undo: list[tuple[str, str | None]] = []  # (name, backup or None if placed there)
        self._temps: list[str] = []  # temp files written here, removed unless renamed
        self.placed: set[Path] = set()  # staged files renamed into place (even if undone since)
        self._written = False
        self._dir_fd: int | None = None

    def apply(self, changes: Sequence[Change], usn: int) -> None:
        """Make `changes` (each name at most once) durably, ready for the commit of `usn`."""
        if not changes:
            return
        if self._dir_fd is None:
            self._dir_fd = os.open(self.folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        steps = [step for step in map(self._plan, changes) if step is not None]
        if not steps:
            return
        self._write_journal(Journal(usn, [step.entry for step in steps]))
        self._write_files(steps)
        for step in steps:
            self._apply_one(step)
        os.fsync(self._dir_fd)

    def _plan(self, change: Change) -> _Step | None:
        """What `change` needs, from what is on disk now; None when there is nothing to do."""
        require_path_name(change.name)
        exists = self._exists(change.name)
        staged = change.staged
        if staged is None:
            if not exists:
                return None
            return _Step(change, JournalEntry(change.name, new_media_temp_name(), None))
        backup = new_media_temp_name() if exists else None
        step = _Step(change, JournalEntry(change.name, backup, staged.sha1))
        if staged.path is not None:
            if staged.path.parent != self.folder:
                raise ValueError(f"{staged.path} is not in {self.folder}")
            step.source = staged.path.name
        elif exists:
            step.source = new_media_temp_name()  # written in `_write_files`
        return step

    def _exists(self, name: str) -> bool:
        try:
            mode = os.lstat(name, dir_fd=self._dir_fd).st_mode
        except FileNotFoundError:
            return False
        if stat.S_ISDIR(mode):
            raise IsADirectoryError(f"{self.folder / name} is a directory, not a media file")
        return True

    def _write_journal(self, journal: Journal) -> None:
        """The journal, durable before anything in the folder changes."""
        self._written = True
        write_durably(self.journal_path, journal.to_bytes())

    def _write_files(self, steps: Sequence[_Step]) -> None:
        """Write every in-memory file (to its name, or to its temp file when the name exists)
        and make it and every staged temp file durable. Each file's fdatasync starts, in the
        fsync threads, as soon as the file is written, so the waits for the disk overlap with
        creating the next files (file creation is mostly kernel time)."""
        fds: list[int] = []
        fsyncs = staging.Fsyncs()
        try:
            for step in steps:
                data = step.change.staged.data if step.change.staged is not None else None
                if data is None:
                    continue
                if step.source is None:
                    fds.append(self._create(step.change.name, placed=True))
                else:
                    fds.append(self._create(step.source, placed=False))
                staging.write_all(fds[-1], data)
                fsyncs.start(fds[-1])
            for step in steps:
                staged = step.change.staged
                if staged is not None and staged.path is not None:
                    fds.append(os.open(staged.path, os.O_RDONLY | os.O_CLOEXEC | O_NOFOLLOW))
                    fsyncs.start(fds[-1])
            fsyncs.wait()
        finally:
            fsyncs.wait(quiet=True)  # no descriptor is closed while an fsync still uses it
            for fd in fds:
                os.close(fd)

    def _create(self, name: str, *, placed: bool) -> int:
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | O_NOFOLLOW
        fd = os.open(name, flags, 0o666, dir_fd=self._dir_fd)
        if placed:
            self._undo.append((name, None))
        else:
            self._temps.append(name)
        return fd

    def _apply_one(self, step: _Step) -> None:
        name, backup = step.change.name, step.entry.backup
        if backup is not None:
            self._rename(name, backup)
            self._undo.append((name, backup))
        if step.source is not None:
            self._rename(step.source, name)
            self._undo.append((name, None))
            staged = step.change.staged
            if staged is not None and staged.path is not None:
                self.placed.add(staged.path)

    def _rename(self, source: str, target: str) -> None:
        os.rename(source, target, src_dir_fd=self._dir_fd, dst_dir_fd=self._dir_fd)

    def __enter__(self) -> FileJournal:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            undone = True
            if kind is not None:
                undone = self._roll_back()
                if self._dir_fd is not None and self._undo:
                    os.fsync(self._dir_fd)
            else:
                self._forget_backups()
            if self._written and undone:  # else the next `recover` finishes the undo
                _clear_journal(self.journal_path)
        finally:
            if self._dir_fd is not None:
                os.close(self._dir_fd)
                self._dir_fd = None

    def _forget_backups(self) -> None:
        """After the commit: a backup that cannot be removed is left for `remove_stray_temps`."""
        for _, backup in self._undo:
            if backup is not None:
                self._unlink(backup, "remove backup")

    def _roll_back(self) -> bool:
        """Undo every step, newest first; whether all of them could be undone."""
        undone = True
        for name, backup in reversed(self._undo):
            try:
                if backup is None:
                    os.unlink(name, dir_fd=self._dir_fd)
                else:
                    os.replace(backup, name, src_dir_fd=self._dir_fd, dst_dir_fd=self._dir_fd)
            except FileNotFoundError:
                pass
            except OSError:
                log.exception("media: could not undo a change to %s", self.folder / name)
                undone = False
        for temp in self._temps:
            self._unlink(temp, "remove temp file")
        return undone

    def _unlink(self, name: str, what: str) -> None:
        try:
            os.unlink(name, dir_fd=self._dir_fd)
        except FileNotFoundError:
            pass
        except OSError:
            log.exception("media: could not %s %s", what, self.folder / name)


def write_durably(path: Path, data: bytes) -> None:
    """Make `data` the durable content of `path`. An existing file is rewritten in place (no new
    inode, so no folder fsync); only a new one is created and its folder fsynced."""
    flags = os.O_WRONLY | os.O_TRUNC | os.O_CLOEXEC | O_NOFOLLOW
    created = False
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        fd = os.open(path, flags | os.O_CREAT | os.O_EXCL, 0o600)
        created = True
    try:
        staging.write_all(fd, data)
        os.fdatasync(fd)
    finally:
        os.close(fd)
    if created:
        fsync_dir(path.parent)


def _clear_journal(path: Path) -> None:
    """Empty the journal file (it is kept, so the next upload need not create it). Not synced:
    if a crash brings its content back, `recover` sees the batch committed (or rolled back and
    overtaken) and has nothing left to undo."""
    try:
        os.truncate(path, 0)
    except OSError:
        log.exception("media: could not clear %s", path)


# -- after a crash ----------------------------------------------------------------------------
def recover(
    folder: Path, journal_path: Path, last_usn: int, live_sha1: Callable[[str], bytes | None]
) -> bool:
    """Finish or undo the batch a crash interrupted, from the journal at `journal_path`.

    `last_usn` and `live_sha1(name)` describe the committed index. The batch committed when
    `last_usn` reached the journal's USN: then only its backups are removed. Otherwise, newest
    first, each backup is renamed back and whatever the batch wrote under a name that did not
    exist before is removed (complete or not). Both are idempotent, so a crash during recovery
    is recovered from too. Call before `remove_stray_temps` (backups are temp files). Returns
    whether there was a journal (an absent or empty file is none); it is left empty.
    """
    try:
        raw = journal_path.read_bytes()
    except FileNotFoundError:
        return False
    if not raw:  # cleared after the last batch
        return False
    try:
        journal = Journal.from_bytes(raw)
    except (ValueError, BadRequest) as exc:  # torn while written: the folder is untouched
        log.warning("media: ignoring unreadable journal %s: %s", journal_path, exc)
    else:
        if last_usn >= journal.usn:
            _finish(folder, journal)
        else:
            _undo(folder, journal, live_sha1)
        fsync_dir(folder)
    with journal_path.open("r+b") as f:
        f.truncate(0)
        os.fdatasync(f.fileno())
    return True


def _finish(folder: Path, journal: Journal) -> None:
    log.warning("media: completing an interrupted upload (usn %d)", journal.usn)
    for entry in journal.entries:
        if entry.backup is not None:
            (folder / entry.backup).unlink(missing_ok=True)


def _undo(folder: Path, journal: Journal, live_sha1: Callable[[str], bytes | None]) -> None:
    log.warning("media: undoing an interrupted upload (usn %d)", journal.usn)
    for entry in reversed(journal.entries):
        target = folder / entry.name
        if entry.backup is None:  # the name did not exist: whatever is there now is ours
            if _is_file(target):
                target.unlink()
            continue
        backup = folder / entry.backup
        if _is_file(backup):
            os.replace(backup, target)
        elif entry.sha1 is not None and live_sha1(entry.name) != entry.sha1 and _holds(
            target, entry.sha1
        ):  # (journals of older versions also gave a backup name to names that did not exist)
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
        if is_media_temp_name(entry.name) and entry.is_file(follow_symlinks=False):
            if not in_use(entry.name):
                os.unlink(entry.path)
                removed += 1
    if removed:
        log.warning("media: removed %d stray temp files from %s", removed, folder)
    return removed
