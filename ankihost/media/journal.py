"""Changes to a user's media that survive a crash or a power cut: batches through the media log.

A batch (one upload, or one restore from the trash) writes the index in one transaction and
changes the media folder. Before the commit, `FileJournal.prepare` appends one record to the
user's media log (`log.py`): the index rows the transaction writes, each file change, and the
bytes of every small new file; then it waits for one flush of the log (plus, for a large file
staged to a temp file or a file linked from the trash, that file and the folder). That is the
batch's only wait for the disk, as the official server waits once for its index commit. Up to
the commit nothing under a media name has changed. After it the changes are placed (`place`,
in the background: `placer.py`): a replaced or deleted file moves to the trash (or away), each
new file is written to its name or its temp file renamed there. Those, and the index commit
(which does not wait for the disk), are made durable by the next checkpoint
(`MediaLog.checkpoint`: when the user goes idle, when the log has grown past
LOG_CHECKPOINT_BYTES, when the index closes); until then the log can redo them.

After a crash, `recovery.py` redoes or drops what the log holds. No SQL here.
"""

from __future__ import annotations

import hashlib
import os
import stat
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

import orjson

from ankihost.media import log, staging
from ankihost.media.index import Entry, IndexChanges, Totals
from ankihost.media.names import require_path_name
from ankihost.media.staging import O_NOFOLLOW, StagedFile
from ankihost.media.trash import Trash
from ankihost.storage.paths import (
    is_media_temp_name,
    new_media_temp_name,
    parse_trash_entry_name,
)

if TYPE_CHECKING:
    from ankihost.storage.paths import UserFolder


# A batch that finds more than this in the log checkpoints first (what a checkpoint flushes,
# and what recovery reads back, stays bounded); see `user_media.MediaBatch`.
LOG_CHECKPOINT_BYTES = 32 * 1024 * 1024
_O_WRITE = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | O_NOFOLLOW
_O_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC


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
    """A change as the log records it: make `name` hold the content with `sha1` (None: make it
    disappear), from `inline` (offset and size in the record's data) or from the durable file
    at temp name `source`; the file there before goes to trash entry `trash_id` (None: away).
    Recovery redoes it only while the name's index row still has `usn`."""

    name: str
    sha1: bytes | None
    usn: int
    trash_id: str | None = None
    source: str | None = None
    inline: tuple[int, int] | None = None

    def to_json(self) -> list[object]:
        digest = self.sha1.hex() if self.sha1 is not None else None
        return [self.name, digest, self.usn, self.trash_id, self.source,
                list(self.inline) if self.inline is not None else None]

    @classmethod
    def from_json(cls, item: object) -> FileChange:
        if not (isinstance(item, list) and len(item) == 6 and isinstance(item[0], str)
                and (item[1] is None or (isinstance(item[1], str) and len(item[1]) == 40))
                and _is_int(item[2]) and _is_trash_id(item[3])
                and (item[4] is None or (isinstance(item[4], str) and is_media_temp_name(item[4])))
                and (item[5] is None or (isinstance(item[5], list) and len(item[5]) == 2
                                         and all(map(_is_int, item[5]))))
                and (item[1] is None) == (item[4] is None and item[5] is None)):
            raise ValueError(f"bad media log file change {item!r:.200}")
        require_path_name(item[0])
        sha1 = bytes.fromhex(item[1]) if item[1] is not None else None
        inline = (item[5][0], item[5][1]) if item[5] is not None else None
        return cls(item[0], sha1, item[2], item[3], item[4], inline)


@dataclass(frozen=True)
class Batch:
    """One record of the log: what the index transaction writes, the file changes, and the
    trash entries it puts back (a restore; removed after the commit)."""

    index: IndexChanges
    files: list[FileChange]
    untrash: list[str] = field(default_factory=list)

    def header(self) -> bytes:
        t = self.index.totals
        return orjson.dumps({
            "before": self.index.usn_before,
            "totals": [t.last_usn, t.total_bytes, t.live_files],
            "rows": [[e.name, e.sha1.hex(), e.size, e.usn, e.mtime] for e in self.index.rows],
            "files": [f.to_json() for f in self.files],
            "untrash": self.untrash,
        })

    def check_data(self, data: bytes) -> None:
        """ValueError unless `data` holds every inline file whole (a record torn while
        written)."""
        for file in self.files:
            if file.inline is not None:
                offset, size = file.inline
                if offset + size > len(data) or sha1_of(data[offset : offset + size]) != file.sha1:
                    raise ValueError(f"the logged bytes of {file.name!r} are damaged")

    @classmethod
    def from_header(cls, raw: bytes) -> Batch:
        value = orjson.loads(raw)
        if not isinstance(value, dict):
            raise ValueError("a media log header is not an object")
        before, totals, rows = value.get("before"), value.get("totals"), value.get("rows")
        files, untrash = value.get("files"), value.get("untrash")
        if not (isinstance(before, int) and isinstance(totals, list) and len(totals) == 3
                and all(map(_is_int, totals)) and isinstance(rows, list)
                and isinstance(files, list) and isinstance(untrash, list)
                and all(isinstance(i, str) and _is_trash_id(i) for i in untrash)):
            raise ValueError("a media log header lacks 'before', 'totals', 'rows', 'files' or "
                             "'untrash'")
        index = IndexChanges(before, [_row(item) for item in rows], Totals(*totals))
        return cls(index, [FileChange.from_json(item) for item in files], list(untrash))


def sha1_of(data: bytes) -> bytes:
    return hashlib.sha1(data).digest()


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_trash_id(value: object) -> bool:
    return value is None or (isinstance(value, str) and parse_trash_entry_name(value) is not None)


def _row(item: object) -> Entry:
    if not (isinstance(item, list) and len(item) == 5 and isinstance(item[0], str)
            and isinstance(item[1], str) and len(item[1]) == 40 and all(map(_is_int, item[2:]))):
        raise ValueError(f"bad media log row {item!r:.200}")
    return Entry(item[0], bytes.fromhex(item[1]), item[2], item[3], item[4])


class FileJournal:
    """The file side of one batch, used around the index transaction:
    `with FileJournal(folder, trash, log) as j, index.atomic() as writer:` …
    `j.prepare(changes, writer.changes())`; then `j.place()`. Leaving the block on an error (a
    failed commit included) undoes what `prepare` wrote. After the commit `owned` names the
    staged files the batch took over (to place, or for recovery to place): the caller must
    not discard them.
    """

    def __init__(self, folder: UserFolder, trash: Trash, media_log: log.MediaLog) -> None:
        self.folder = folder
        self.trash = trash
        self.log = media_log
        self.committed = False
        self.owned: set[Path] = set()
        self.names: frozenset[str] = frozenset()  # the media names the batch changes
        self._batch: Batch | None = None
        self._data: list[bytes] = []
        self._record_at: int | None = None  # where this batch's record starts in the log
        self._temps: list[str] = []  # temp files made here: removed unless placed
        self._sources: set[Path] = set()  # staged files the log names as sources
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
        """Before the commit: log the batch, and wait until the log (and any file it names as a
        source) is durable."""
        if not index.rows and not changes and not untrash:
            return
        self._dir_fd = os.open(self.folder.media, _O_DIR)
        now = int(time.time())
        planned = [self._plan(change, now) for change in changes]
        self._batch = Batch(index, [file for file in planned if file is not None], list(untrash))
        self.names = frozenset(file.name for file in self._batch.files)
        self._write_durably(self._batch)

    def _plan(self, change: Change, now: int) -> FileChange | None:
        """The logged form of `change`, from what is on disk; None when there is nothing to do
        on disk (a deletion of a file that is not there)."""
        require_path_name(change.name)
        exists = self._exists(change.name)
        trash_id = None
        if exists and change.old is not None and self.trash.enabled:
            trash_id = self.trash.entry_id(now, change.usn, change.old.sha1)
        staged = change.staged
        if staged is None:
            return FileChange(change.name, None, change.usn, trash_id) if exists else None
        if staged.data is not None:
            offset = sum(map(len, self._data))
            self._data.append(staged.data)
            return FileChange(change.name, staged.sha1, change.usn, trash_id,
                              inline=(offset, len(staged.data)))
        if staged.path is None or staged.path.parent != self.folder.media:
            raise ValueError(f"{staged.path} is not in {self.folder.media}")
        self._sources.add(staged.path)
        return FileChange(change.name, staged.sha1, change.usn, trash_id, source=staged.path.name)

    def _exists(self, name: str) -> bool:
        try:
            mode = os.lstat(name, dir_fd=self._dir_fd).st_mode
        except FileNotFoundError:
            return False
        if stat.S_ISDIR(mode):
            raise IsADirectoryError(f"{self.folder.media / name} is a directory, not a media file")
        return True

    def _write_durably(self, batch: Batch) -> None:
        """Append the batch's record and wait for one flush of the log, of every staged file
        it names as a source and, if there are any, of the media folder (their names)."""
        log_fd = self.log.fd()
        self._record_at = self.log.size
        self.log.size = log.write_at(log_fd, self.log.size, log.encode(batch.header(), self._data))
        if not self._sources:  # the usual case: one flush, no thread needed
            os.fdatasync(log_fd)
            return
        sources = [os.open(path, os.O_RDONLY | os.O_CLOEXEC | O_NOFOLLOW) for path in self._sources]
        try:
            staging.flush_all([log_fd, *sources], [self._fd()])
        finally:
            for fd in sources:
                os.close(fd)

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
                self.committed = True
                self.owned = set(self._sources)
            else:
                self._roll_back()
        finally:
            if self._dir_fd is not None:
                os.close(self._dir_fd)
                self._dir_fd = None

    @property
    def unplaced(self) -> bool:
        """Committed, with changes still to make in the media folder (`place`)."""
        return self.committed and self._batch is not None

    def place(self) -> None:
        """After the commit (at once, or in the background while the user's next request goes
        ahead: the log can redo it all): make the batch's changes in the media folder. Runs
        once; touches only the batch's names, its trash entries and `log.pending/folders`."""
        batch, self._batch = self._batch, None
        if not self.committed or batch is None:
            return
        data = b"".join(self._data)
        self._data = []
        self._dir_fd = os.open(self.folder.media, _O_DIR)
        try:
            for file in batch.files:
                self._place(file, data)
        finally:
            os.close(self._dir_fd)
            self._dir_fd = None
        for entry_id in batch.untrash:
            self.trash.remove(entry_id)

    def _place(self, file: FileChange, data: bytes) -> None:
        """Make one committed change: the file there before to the trash (or away), then the
        new content written to the name (from the log's data) or its source renamed there."""
        pending, path = self.log.pending, self.folder.media / file.name
        if file.trash_id is not None:
            self.log.folders.update(self.trash.move_in(self._fd(), file.name, file.trash_id))
            if path in pending:  # not flushed yet: flush it where it is now
                pending.discard(path)
                pending.add(self.trash.root / file.trash_id / file.name)
        elif file.sha1 is None:
            _unlink_at(self._fd(), file.name)
        if file.inline is not None:
            offset, size = file.inline
            write_file_at(self._fd(), file.name, data[offset : offset + size])
            pending.add(path)
        elif file.source is not None:
            os.rename(file.source, file.name, src_dir_fd=self._fd(), dst_dir_fd=self._fd())

    def _roll_back(self) -> None:
        """Undo `prepare`: the record cut from the log (nothing under a media name changed),
        then the temp files made here removed (a crash in between leaves them to the sweep)."""
        if self._record_at is not None:
            os.ftruncate(self.log.fd(), self._record_at)
            self.log.size = self._record_at
        for temp in self._temps:
            (self.folder.media / temp).unlink(missing_ok=True)


def write_file_at(dir_fd: int, name: str, data: bytes) -> None:
    """`name` (in the folder of `dir_fd`) as a new file holding `data`. A file already there is
    unlinked first, never rewritten in place: a hard link to it (a backup's or an export's
    frozen copy, `snapshots/freeze.py`) keeps the content it had."""
    _unlink_at(dir_fd, name)
    fd = os.open(name, _O_WRITE, 0o666, dir_fd=dir_fd)
    try:
        staging.write_all(fd, data)
    finally:
        os.close(fd)


def _unlink_at(dir_fd: int, name: str) -> None:
    try:
        os.unlink(name, dir_fd=dir_fd)
    except FileNotFoundError:
        pass


