"""A user's media state: the one owner of their open media index, trash and unsettled batch.

`UserMedia.index()` opens `media.db` on first use (creating or migrating it), finishes or drops
a batch a crash interrupted, sweeps the media folder's stray temp files and purges the expired
trash; `close()` settles and closes it. Every change of media goes through `MediaBatch`, which
pairs the index transaction with its journal (`journal.py`) and keeps the last batch
`unsettled` until the next batch's flush or `settle()` (the server calls it once the user is
idle) makes it durable. The caller holds the user's lock.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from contextlib import ExitStack
from pathlib import Path
from types import TracebackType

from ankihost.errors import ServerError
from ankihost.media import journal
from ankihost.media.index import MediaIndex, Writer
from ankihost.media.journal import FileJournal, Unsettled
from ankihost.media.trash import DEFAULT_DAYS, Trash
from ankihost.storage.paths import UserFolder

log = logging.getLogger(__name__)


class UserMedia:
    def __init__(self, folder: UserFolder, trash_days: int = DEFAULT_DAYS) -> None:
        self.folder = folder
        self.trash = Trash(folder.media_trash, trash_days)
        self._index: MediaIndex | None = None
        self._unsettled: Unsettled | None = None
        self._unsettled_since = 0.0

    @property
    def is_open(self) -> bool:
        return self._index is not None

    def index(self) -> MediaIndex:
        """The open media index, opened (and repaired after a crash) on first use."""
        if self._index is None:
            self._index = _open(self.folder, self.trash)
        return self._index

    def last_usn(self) -> int:
        """The media USN, as `begin` and the collection sync's `meta` report it."""
        try:
            return self.index().last_usn()
        except sqlite3.Error as exc:
            raise ServerError(f"media index: {exc}") from exc

    def unsettled_for(self) -> float | None:
        """Seconds since the last batch ended, if it is not known durable yet."""
        if self._unsettled is None:
            return None
        return time.monotonic() - self._unsettled_since

    def settle(self) -> None:
        """Make the last batch durable now and empty its journal. If that fails, the index is
        closed, so that its next use recovers from the journal."""
        unsettled, self._unsettled = self._unsettled, None
        if unsettled is None:
            return
        try:
            journal.settle(self.folder, unsettled)
        except OSError:
            self._close_index()
            raise

    def purge_trash(self, now: float | None = None) -> int:
        """Remove the trash's expired entries; the number of files purged."""
        return self.trash.purge(time.time() if now is None else now)

    def close(self) -> None:
        try:
            self.settle()
        except OSError:
            log.exception("media: the last batch of %s could not be flushed", self.folder.root)
        self._close_index()

    def _close_index(self) -> None:
        if self._index is not None:
            index, self._index = self._index, None
            index.close()

    def _next_journal(self) -> Path:
        """The journal file a new batch writes: not the one of the unsettled batch."""
        first, second = self.folder.media_journals
        if self._unsettled is not None and self._unsettled.journal == first:
            return second
        return first

    def _batch_ended(self, batch: FileJournal, *, broken: bool) -> None:
        if broken:  # committed but not all placed: the next open rolls it forward
            self._unsettled = None
            self._close_index()
        elif batch.unsettled is not None or batch.flushed:  # the previous one is durable now
            self._unsettled = batch.unsettled
            self._unsettled_since = time.monotonic()


class MediaBatch:
    """One change of a user's media: `with MediaBatch(media) as batch:` gives the index
    transaction (`batch.writer`) and its journal (`batch.journal`, whose `prepare` must be
    called with the changes before the block ends). The commit happens as the block ends."""

    def __init__(self, media: UserMedia) -> None:
        self.media = media
        self.journal = FileJournal(
            media.folder, media.trash, media._next_journal(), media._unsettled
        )
        self._stack = ExitStack()
        self._writer: Writer | None = None

    @property
    def writer(self) -> Writer:
        assert self._writer is not None, "use the batch in a with block"
        return self._writer

    def __enter__(self) -> MediaBatch:
        index = self.media.index()
        with ExitStack() as stack:
            stack.enter_context(self.journal)
            self._writer = stack.enter_context(index.atomic())
            self._stack = stack.pop_all()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            self._stack.__exit__(kind, exc, tb)
        except BaseException:
            self.media._batch_ended(self.journal, broken=self.journal.committed)
            raise
        self.media._batch_ended(self.journal, broken=False)


def _open(folder: UserFolder, trash: Trash) -> MediaIndex:
    folder.ensure()
    index = MediaIndex.open(folder.media_db)
    try:
        journal.recover(folder, trash, index)
        journal.remove_stray_temps(folder.media, index.has_name)
        trash.purge(time.time())
    except BaseException:
        index.close()
        raise
    return index
