"""Recovery from a journal the previous version of ankihost left (before the media trash).

That version renamed replaced and deleted files to backup temp names before its commit, and
wrote a new file straight to its name when the name was free. Its journal is
`{"usn": U, "entries": [[name, backup or null, sha1 hex or null], …]}`. A committed batch
(the index reached U) only leaves its backups to remove; an uncommitted one is undone.
Only read, never written.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ankihost.media.names import require_path_name
from ankihost.media.staging import holds, is_regular_file
from ankihost.storage.paths import fsync_dir, is_media_temp_name

log = logging.getLogger(__name__)

LiveSha1 = Callable[[str], bytes | None]


@dataclass(frozen=True)
class Entry:
    name: str
    backup: str | None
    sha1: bytes | None

    @classmethod
    def from_json(cls, item: object) -> Entry:
        if not (isinstance(item, list) and len(item) == 3 and isinstance(item[0], str)
                and (item[1] is None or (isinstance(item[1], str) and is_media_temp_name(item[1])))
                and (item[2] is None or isinstance(item[2], str))):
            raise ValueError(f"bad journal entry {item!r:.200}")
        require_path_name(item[0])
        return cls(item[0], item[1], bytes.fromhex(item[2]) if item[2] is not None else None)


def read(value: dict[str, object]) -> tuple[int, list[Entry]]:
    """(usn, entries) of a previous version's journal; ValueError if it is not one."""
    usn, entries = value.get("usn"), value.get("entries")
    if not (isinstance(usn, int) and isinstance(entries, list)):
        raise ValueError("journal is not an object with 'usn' and 'entries'")
    return usn, [Entry.from_json(item) for item in entries]


def recover(folder: Path, value: dict[str, object], last_usn: int, live_sha1: LiveSha1) -> None:
    """Complete (remove the backups) or undo the batch of a previous version's journal."""
    usn, entries = read(value)
    if last_usn >= usn:
        log.warning("media: completing an interrupted upload (usn %d)", usn)
        for entry in entries:
            if entry.backup is not None:
                (folder / entry.backup).unlink(missing_ok=True)
    else:
        log.warning("media: undoing an interrupted upload (usn %d)", usn)
        for entry in reversed(entries):
            _undo(folder, entry, live_sha1)
    fsync_dir(folder)


def _undo(folder: Path, entry: Entry, live_sha1: LiveSha1) -> None:
    target = folder / entry.name
    if entry.backup is None:  # the name did not exist: whatever is there now is the batch's
        if is_regular_file(target):
            target.unlink()
        return
    backup = folder / entry.backup
    if is_regular_file(backup):
        os.replace(backup, target)
    elif entry.sha1 is not None and live_sha1(entry.name) != entry.sha1 and holds(
        target, entry.sha1
    ):
        target.unlink()


