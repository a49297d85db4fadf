"""Recovery after a crash or a power cut: the batches left in a user's media log.

`recover` runs when the media index opens, before anything else of the user's: it goes through
the log's complete records oldest first (`journal.Batch`), rolls forward each batch the index
has, replays one whose commit was lost when everything it needs is on disk, drops any other
(only its temp files existed), then checkpoints. A journal of the previous version is handed to
`journal_v1`. `remove_stray_temps` then sweeps what a crash left in the media folder. No SQL.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import orjson

from ankihost.errors import BadRequest
from ankihost.media import journal_v1, log
from ankihost.media.journal import Batch, FileChange, write_file_at
from ankihost.media.staging import holds, is_regular_file
from ankihost.media.trash import Trash
from ankihost.storage.paths import is_media_temp_name

if TYPE_CHECKING:
    from ankihost.media.index import MediaIndex
    from ankihost.storage.paths import UserFolder

logger = logging.getLogger(__name__)

_O_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC


def recover(
    folder: UserFolder, trash: Trash, index: MediaIndex, media_log: log.MediaLog
) -> bool:
    """Finish or drop the batches a crash left in the log, oldest first, then checkpoint (call
    when opening the index, before `remove_stray_temps`). Idempotent, so a crash during
    recovery is recovered from too. Returns whether the log had anything."""
    path = folder.media_journal
    try:
        with path.open("rb") as f:
            first = f.read(1)
    except FileNotFoundError:
        return False
    if not first:
        return False
    if first == b"{":  # a journal of the previous version
        _recover_v1(folder, index)
    else:
        for record in log.read_records(path):
            try:
                batch = Batch.from_header(record.header)
                batch.check_data(record.data)
            except (ValueError, BadRequest) as exc:
                logger.warning("media: stopping at an unreadable log record: %s", exc)
                break
            _recover_batch(folder, trash, index, media_log, batch, record.data)
    media_log.checkpoint()
    return True


def _recover_v1(folder: UserFolder, index: MediaIndex) -> None:
    try:
        value = orjson.loads(folder.media_journal.read_bytes())
        if not isinstance(value, dict):
            raise ValueError("the journal is not an object")
        journal_v1.recover(folder.media, value, index.last_usn(), _live_sha1(index))
    except ValueError as exc:  # torn while written: never committed
        logger.warning("media: ignoring an unreadable journal: %s", exc)


def _recover_batch(
    folder: UserFolder, trash: Trash, index: MediaIndex, media_log: log.MediaLog, batch: Batch,
    data: bytes,
) -> None:
    last_usn, usn = index.last_usn(), batch.index.usn
    if last_usn < usn and last_usn == batch.index.usn_before and _whole(folder.media, batch):
        logger.warning("media: replaying a batch whose commit was lost (usn %d)", usn)
        index.replay(batch.index)
        last_usn = usn
    if last_usn < usn:
        logger.warning("media: dropping a batch that never committed (usn %d)", usn)
        for file in batch.files:
            if file.source is not None:
                (folder.media / file.source).unlink(missing_ok=True)
        return
    dir_fd = os.open(folder.media, _O_DIR)
    try:
        for file in batch.files:
            row = index.get(file.name)
            if row is not None and row.usn == file.usn:  # else a later change owns the name
                _redo(dir_fd, folder, trash, media_log, file, data)
    finally:
        os.close(dir_fd)
    for entry_id in batch.untrash:
        trash.remove(entry_id)


def _redo(
    dir_fd: int, folder: UserFolder, trash: Trash, media_log: log.MediaLog, file: FileChange,
    data: bytes,
) -> None:
    """Complete one committed change, checking each step on disk."""
    target = folder.media / file.name
    if file.sha1 is not None and holds(target, file.sha1):
        media_log.pending.add(target)
        return
    if is_regular_file(target):
        entry = trash.root / file.trash_id / file.name if file.trash_id is not None else None
        if entry is not None and not is_regular_file(entry):  # still the old version: keep it
            media_log.folders.update(trash.move_in(dir_fd, file.name, file.trash_id or ""))
            media_log.pending.add(entry)
        elif file.sha1 is None:
            target.unlink()
    if file.inline is not None:
        offset, size = file.inline
        write_file_at(dir_fd, file.name, data[offset : offset + size])
        media_log.pending.add(target)
    elif file.source is not None and is_regular_file(folder.media / file.source):
        os.rename(file.source, file.name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    elif file.sha1 is not None:
        logger.error("media: cannot complete %r: its staged file is gone", file.name)


def _whole(media: Path, batch: Batch) -> bool:
    """Whether everything the batch needs beyond the log is on disk: each staged source, at its
    temp name or already placed."""
    return all(
        holds(media / file.source, file.sha1) or holds(media / file.name, file.sha1)
        for file in batch.files if file.source is not None and file.sha1 is not None
    )




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
        logger.warning("media: removed %d stray temp files from %s", removed, folder)
    return removed
