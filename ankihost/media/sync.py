"""The media sync steps as plain functions over an open `MediaIndex` and the media folder.

They take and return Python values; request parsing and the `{"data", "err"}` envelope live in
`handlers.py`. The caller holds the user's lock. An upload is validated and staged completely,
then applied as one database transaction plus one undoable batch of renames.
"""

from __future__ import annotations

import logging
import os
import secrets
from pathlib import Path
from typing import IO, NoReturn

from ankihost.errors import BadRequest, SessionConflict
from ankihost.media import archive, files
from ankihost.media.index import Entry, MediaIndex, Outcome, Writer

log = logging.getLogger(__name__)

DOWNLOAD_PREFIX = ".ankihost-download-"
SANITY_OK = "OK"
SANITY_FAILED = "mediaSanity"


def changes_since(index: MediaIndex, last_usn: int) -> list[tuple[str, int, str]]:
    """`[name, usn, sha1 hex or ""]` for rows changed after `last_usn`, in USN order (≤ 1000)."""
    return [(e.name, e.usn, e.sha1.hex() if e.live else "") for e in index.changes_after(last_usn)]


def apply_upload(index: MediaIndex, folder: Path, body: IO[bytes]) -> tuple[int, int]:
    """Apply an upload zip entirely or not at all; returns (entries processed, media USN)."""
    upload = archive.read_upload(body, folder)
    try:
        with files.FileJournal(folder) as journal, index.atomic() as writer:
            for entry in upload.entries:
                _apply_entry(writer, journal, entry)
            journal.sync()
        return len(upload.entries), writer.last_usn
    finally:
        upload.discard()


def _apply_entry(writer: Writer, journal: files.FileJournal, entry: archive.UploadEntry) -> None:
    name, staged = entry.name, entry.staged
    if staged is None:
        # A name we could never have stored is, by definition, already deleted.
        outcome = Outcome.ALREADY_DELETED
        if files.path_problem(name) is None:
            outcome = writer.record_deletion(name)
        if outcome is Outcome.REMOVED:
            journal.remove(name)
    else:
        outcome = writer.record_addition(name, staged.sha1, staged.size)
        if outcome.changed or not _holds(journal.folder, name, staged.sha1):
            journal.place(staged, name)
    log.info("media upload: %s %r (usn %d)", outcome.value, name, writer.last_usn)


def _holds(folder: Path, name: str, sha1: bytes) -> bool:
    """Whether the folder has `name` with this content. An upload of a file the index already
    has repairs it on disk when it went missing or differs (say, after a crash mid-upload)."""
    try:
        return files.sha1_of_file(files.media_path(folder, name)) == sha1
    except FileNotFoundError:
        return False


def build_download(index: MediaIndex, folder: Path, names: list[str], work_dir: Path) -> Path:
    """Write a download zip for a non-empty prefix of `names` to a new file in `work_dir`.

    A name that is not a live file → SessionConflict (409); a live row whose file is gone or no
    longer matches its SHA-1 is dropped from the index first, as the official server does.
    """
    entries = _entries_for_download(index, names)
    path = work_dir / f"{DOWNLOAD_PREFIX}{secrets.token_hex(16)}.zip"
    zip_out = archive.DownloadZip(path)
    try:
        for entry in entries:
            _add_to_zip(index, folder, zip_out, entry)
        zip_out.close()
    except BaseException:
        zip_out.abandon()
        raise
    return path


def _entries_for_download(index: MediaIndex, names: list[str]) -> list[Entry]:
    if len(names) > archive.MAX_FILES_PER_ZIP:
        raise BadRequest(f"{len(names)} files requested; at most {archive.MAX_FILES_PER_ZIP}")
    entries, total = [], 0
    for name in names:
        files.require_path_name(name)
        entry = index.get_live(name)
        if entry is None:
            raise SessionConflict(f"requested media file is missing or deleted: {name!r:.300}")
        entries.append(entry)
        total += entry.size
        if total > archive.DOWNLOAD_TARGET_BYTES:
            break
    return entries


def _add_to_zip(
    index: MediaIndex, folder: Path, zip_out: archive.DownloadZip, entry: Entry
) -> None:
    try:
        source = files.open_for_reading(files.media_path(folder, entry.name))
    except FileNotFoundError:
        _lost(index, entry, "is missing from the media folder")
    with source:
        size = os.fstat(source.fileno()).st_size
        sha1 = zip_out.add(entry.name, source, size)
    if sha1 != entry.sha1:
        _lost(index, entry, "does not match its recorded SHA-1")


def _lost(index: MediaIndex, entry: Entry, problem: str) -> NoReturn:
    log.error("media: %r %s; forgetting it so clients stop asking for it", entry.name, problem)
    index.forget(entry.name)
    raise SessionConflict(f"media file {entry.name!r:.300} {problem}")


def sanity(index: MediaIndex, client_live_files: int) -> str:
    return SANITY_OK if index.live_file_count() == client_live_files else SANITY_FAILED


def remove_stray_downloads(work_dir: Path) -> None:
    """Delete download zips a crash left in `work_dir` (call before serving any request)."""
    for path in work_dir.glob(f"{DOWNLOAD_PREFIX}*.zip"):
        path.unlink(missing_ok=True)
