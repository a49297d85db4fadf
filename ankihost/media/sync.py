"""The media sync steps as plain functions over an open `MediaIndex` and the media folder.

They take and return Python values; request parsing and the `{"data", "err"}` envelope live in
`handlers.py`. The caller holds the user's lock. An upload is validated and staged completely,
then applied as one media batch (`user_media.MediaBatch`): one index transaction, logged with
its file changes before the commit, the files placed in the background after it.
"""

from __future__ import annotations

import io
import logging
import os
from collections import Counter
from pathlib import Path
from typing import IO, TYPE_CHECKING, NoReturn

from ankihost.accounts import quota
from ankihost.errors import BadRequest, SessionConflict
from ankihost.media import archive, journal, names, staging
from ankihost.media.index import Entry, MediaIndex, Outcome, Writer
from ankihost.media.user_media import MediaBatch

if TYPE_CHECKING:
    from ankihost.media.user_media import UserMedia
    from ankihost.storage.paths import UserFolder

log = logging.getLogger(__name__)

# A download zip whose files total at most this is built in memory and sent from there; a bigger
# one (any file may be up to 100 MiB) goes through a temp file. Clients ask for ~2.5 MiB at once.
IN_MEMORY_ZIP_MAX_BYTES = 8 * 1024 * 1024
SANITY_OK = "OK"
SANITY_FAILED = "mediaSanity"


def changes_since(index: MediaIndex, last_usn: int) -> list[tuple[str, int, str]]:
    """`[name, usn, sha1 hex or ""]` for rows changed after `last_usn`, in USN order (≤ 1000)."""
    return [(e.name, e.usn, e.sha1.hex() if e.live else "") for e in index.changes_after(last_usn)]


class QuotaExceeded(Exception):
    """The upload would take the user past their quota; the message is for the user."""


def apply_upload(
    media: UserMedia, body: IO[bytes], quota_bytes: int | None = None
) -> tuple[int, int]:
    """Apply an upload zip entirely or not at all; returns (entries processed, media USN).

    Every entry is recorded in one transaction, and the net change per name is made in the
    media folder through the batch's journal, so a crash at any point leaves (after the
    recovery that opening the index runs) either the old or the new state. An upload that
    would grow the user's storage past `quota_bytes` is refused whole (QuotaExceeded),
    nothing changed.
    """
    folder, index = media.folder, media.index()  # opened (and recovered) before staging
    upload = archive.read_upload(body, folder.media)
    batch = MediaBatch(media)
    try:
        media.place([entry.name for entry in upload.entries])  # earlier uploads of these names
        if quota_bytes is not None:
            _check_quota(index, folder, upload.entries, quota_bytes)
        with batch:
            changes = _record_entries(batch.writer, folder.media, upload.entries)
            batch.journal.prepare(changes, batch.writer.changes())
        return len(upload.entries), batch.writer.last_usn
    finally:
        upload.discard(batch.journal.owned)


def _check_quota(
    index: MediaIndex, folder: UserFolder, entries: list[archive.UploadEntry], quota_bytes: int
) -> None:
    """QuotaExceeded when applying `entries` would grow the stored media past the quota."""
    live = index.get_live_many([e.name for e in entries if names.path_problem(e.name) is None])
    final = {entry.name: entry.staged.size if entry.staged else 0 for entry in entries}
    growth = sum(size - (live[n].size if n in live else 0) for n, size in final.items())
    used_after = folder.collection_bytes() + index.totals().total_bytes + growth
    if message := quota.refusal(quota_bytes, used_after, growth):
        raise QuotaExceeded(message)


def _record_entries(
    writer: Writer, folder: Path, entries: list[archive.UploadEntry]
) -> list[journal.Change]:
    """Record each entry (one USN per effective change); the net file change per name, with
    the live row the name had before the upload (its file goes to the trash).

    Each entry is logged at DEBUG, the request's totals per outcome at INFO (one line).
    """
    plan: dict[str, journal.Change] = {}
    before: dict[str, Entry | None] = {}  # name → its live row before this upload
    outcomes: Counter[str] = Counter()
    writer.prefetch([entry.name for entry in entries])
    for entry in entries:
        name, staged = entry.name, entry.staged
        if name not in before and names.path_problem(name) is None:
            before[name] = writer.live(name)
        if staged is None:
            outcome = _record_deletion(writer, name)
            if outcome is Outcome.REMOVED:
                plan[name] = journal.Change(name, None, writer.last_usn, before.get(name))
        else:
            outcome = writer.record_addition(name, staged.sha1, staged.size)
            if outcome.changed:
                plan[name] = journal.Change(name, staged, writer.last_usn, before.get(name))
            elif name not in plan and not _holds(folder, name, staged.sha1):
                # a repair: the index had this content, the disk did not (nothing to keep)
                plan[name] = journal.Change(name, staged, _usn_of(writer, name))
        outcomes[outcome.value] += 1
        log.debug("media upload: %s %r (usn %d)", outcome.value, name, writer.last_usn)
    summary = ", ".join(f"{value} {count}" for value, count in sorted(outcomes.items()))
    log.info("media upload: %s; %d files to change (usn %d)", summary, len(plan), writer.last_usn)
    return list(plan.values())


def _usn_of(writer: Writer, name: str) -> int:
    live = writer.live(name)
    assert live is not None  # the entry was just found identical to it
    return live.usn


def _record_deletion(writer: Writer, name: str) -> Outcome:
    # A name we could never have stored is, by definition, already deleted.
    if names.path_problem(name) is not None:
        return Outcome.ALREADY_DELETED
    return writer.record_deletion(name)


def _holds(folder: Path, name: str, sha1: bytes) -> bool:
    """Whether the folder has `name` with this content. An upload of a file the index already
    has repairs it on disk when it went missing or differs (say, after a crash mid-upload)."""
    try:
        return staging.sha1_of_file(names.media_path(folder, name)) == sha1
    except FileNotFoundError:
        return False


def build_download(index: MediaIndex, folder: UserFolder, wanted: list[str]) -> bytes | Path:
    """A download zip for a non-empty prefix of `wanted`: its bytes when the files total at most
    IN_MEMORY_ZIP_MAX_BYTES, else a new file in the user's folder (memory stays bounded).

    A name that is not a live file → SessionConflict (409); a live row whose file is gone or no
    longer matches its SHA-1 is dropped from the index first, as the official server does.
    """
    entries = _entries_for_download(index, wanted)
    if sum(entry.size for entry in entries) <= IN_MEMORY_ZIP_MAX_BYTES:
        buffer = io.BytesIO()
        _write_zip(index, folder.media, archive.DownloadZip(buffer), entries)
        return buffer.getvalue()
    path = folder.new_media_zip_path()
    _write_zip(index, folder.media, archive.DownloadZip(path), entries)
    return path


def _write_zip(
    index: MediaIndex, folder: Path, zip_out: archive.DownloadZip, entries: list[Entry]
) -> None:
    try:
        for entry in entries:
            _add_to_zip(index, folder, zip_out, entry)
        zip_out.close()
    except BaseException:
        zip_out.abandon()
        raise


def _entries_for_download(index: MediaIndex, wanted: list[str]) -> list[Entry]:
    if len(wanted) > archive.MAX_FILES_PER_ZIP:
        raise BadRequest(f"{len(wanted)} files requested; at most {archive.MAX_FILES_PER_ZIP}")
    live = index.get_live_many([name for name in wanted if names.path_problem(name) is None])
    entries, total = [], 0
    for name in wanted:
        names.require_path_name(name)
        entry = live.get(name)
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
        source = staging.open_for_reading(names.media_path(folder, entry.name))
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
