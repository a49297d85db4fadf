"""A user's media state: the one owner of their open media index, trash and pending flush.

`UserMedia.index()` opens `media.db` on first use (creating or migrating it), finishes or drops
a batch a crash interrupted, sweeps the media folder's stray temp files and purges the expired
trash; `close()` closes it. Every change of media goes through `MediaBatch`, which pairs the
index transaction with its journal (`journal.py`) and keeps the batch's background flush,
which the next batch, a purge and `close()` wait for. The caller holds the user's lock.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from contextlib import ExitStack
from types import TracebackType

from ankihost.errors import ServerError
from ankihost.media import journal
from ankihost.media.index import MediaIndex, Writer
from ankihost.media.journal import FileJournal, Flush
from ankihost.media.trash import DEFAULT_DAYS, Trash
from ankihost.storage.paths import UserFolder

log = logging.getLogger(__name__)


class UserMedia:
    def __init__(self, folder: UserFolder, trash_days: int = DEFAULT_DAYS) -> None:
        self.folder = folder
        self.trash = Trash(folder.media_trash, trash_days)
        self._index: MediaIndex | None = None
        self._flush: Flush | None = None

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

    def settle(self) -> None:
        """Wait for the last batch's background flush. If it failed, the index is closed, so
        that the next use recovers from the journal (which the flush did not clear)."""
        flush, self._flush = self._flush, None
        if flush is None:
            return
        try:
            flush.wait()
        except OSError:
            self._close_index()
            raise

    def purge_trash(self, now: float | None = None) -> int:
        """Remove the trash's expired entries; the number of files purged."""
        self.settle()
        return self.trash.purge(time.time() if now is None else now)

    def close(self) -> None:
        try:
            self.settle()
        except OSError:
            log.exception("media: the last batch of %s did not flush", self.folder.root)
        self._close_index()

    def _close_index(self) -> None:
        if self._index is not None:
            index, self._index = self._index, None
            index.close()

    def _batch_ended(self, flush: Flush | None, *, broken: bool) -> None:
        self._flush = flush
        if broken:  # committed but not all placed: the next open rolls it forward
            self._close_index()


class MediaBatch:
    """One change of a user's media: `with MediaBatch(media) as batch:` gives the index
    transaction (`batch.writer`) and its journal (`batch.journal`, whose `prepare` must be
    called with the changes before the block ends). The commit happens as the block ends."""

    def __init__(self, media: UserMedia) -> None:
        self.media = media
        self.journal = FileJournal(media.folder, media.trash)
        self._stack = ExitStack()
        self._writer: Writer | None = None

    @property
    def writer(self) -> Writer:
        assert self._writer is not None, "use the batch in a with block"
        return self._writer

    def __enter__(self) -> MediaBatch:
        self.media.settle()  # the journal file is free again
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
            self.media._batch_ended(None, broken=self.journal.committed)
            raise
        self.media._batch_ended(self.journal.flush, broken=False)


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
