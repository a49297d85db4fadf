"""Putting media files back from the trash, as new server changes.

A restored file gets a new media USN, like a file a device uploaded, so every device downloads
it at its next media sync. All the named files are checked first, and any problem (a name not
in the trash, a name that now holds other content) refuses the whole restore with nothing
changed. The files go back in one media batch (`user_media.MediaBatch`): crash-safe like an
upload, and the restored entries leave the trash with it. The caller holds the user's lock.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from ankihost.media import names
from ankihost.media.journal import Change
from ankihost.media.staging import sha1_of_file
from ankihost.media.trash import TrashEntry
from ankihost.media.user_media import MediaBatch, UserMedia

log = logging.getLogger(__name__)


class RestoreRefused(Exception):
    """The restore was refused and nothing changed; the message says why, file by file."""


@dataclass(frozen=True)
class Restored:
    """Files put back, files already there with that content, and the media USN after."""

    restored: list[str]
    already_there: list[str]
    usn: int


@dataclass(frozen=True)
class _Candidate:
    entry: TrashEntry
    sha1: bytes


def restore(media: UserMedia, files: list[str]) -> Restored:
    """Put the newest trashed version of each of `files` back (RestoreRefused if any cannot)."""
    index = media.index(placed=True)
    wanted, already, problems = [], [], []
    trashed = media.trash.newest(files)
    for name in dict.fromkeys(files):
        candidate, problem = _check(media, name, trashed.get(name))
        if problem is not None:
            problems.append(f"{name!r}: {problem}")
        elif candidate is None:
            already.append(name)
        else:
            wanted.append(candidate)
    if problems:
        raise RestoreRefused("; ".join(problems))
    if not wanted:
        return Restored([], already, index.last_usn())
    usn = _put_back(media, wanted)
    log.info("media trash: restored %d files to %s (usn %d)", len(wanted), media.folder.root, usn)
    return Restored([c.entry.name for c in wanted], already, usn)


def _check(media: UserMedia, name: str, entry: TrashEntry | None) -> tuple[_Candidate | None, str | None]:
    """(what to restore, or None when the name already holds that content; why not), from the
    newest trash `entry` of `name`."""
    if entry is None:
        return None, "is not in the trash"
    if problem := names.addition_problem(name):
        return None, f"cannot be stored: the name {problem}"
    if entry.size == 0:
        return None, "is empty in the trash"
    sha1 = sha1_of_file(media.trash.path_of(entry))
    live = media.index().get_live(name)
    if live is not None and live.sha1 != sha1:
        return None, (f"the server now has another file under this name (SHA-1 {live.sha1.hex()},"
                      f" {live.size} bytes); delete or rename it on a device first")
    if live is not None:
        return None, None
    return _Candidate(entry, sha1), None


def _put_back(media: UserMedia, wanted: list[_Candidate]) -> int:
    batch = MediaBatch(media)
    with batch:
        changes = []
        for candidate in wanted:
            entry = candidate.entry
            staged = batch.journal.stage_link(media.trash.path_of(entry), candidate.sha1, entry.size)
            batch.writer.record_addition(entry.name, staged.sha1, staged.size)
            changes.append(Change(entry.name, staged, batch.writer.last_usn))
        batch.journal.prepare(changes, batch.writer.changes(), [c.entry.id for c in wanted])
    media.settle()  # an admin waits for the whole of it
    return batch.writer.last_usn
