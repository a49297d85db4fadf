"""A user's media state: the one owner of their open media index, media log, trash and placer.

`UserMedia.index()` opens `media.db` on first use (creating or migrating it), finishes or drops
the batches a crash left in the media log, sweeps the media folder's stray temp files and
purges the expired trash; `close()` waits for the placer, checkpoints and closes it. Every
change of media goes through `MediaBatch`, which pairs the index transaction with its journal
(`journal.py`) and hands the committed batch to the placer (`placer.py`); `place()` waits for
it, `settle()` (the server calls it once the user is idle) checkpoints the log. The caller
holds the user's lock.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import time
from collections.abc import Collection
from contextlib import ExitStack
from types import TracebackType

from ankihost.errors import ServerError
from ankihost.media import journal, recovery
from ankihost.media.index import MediaIndex, Writer
from ankihost.media.journal import FileJournal
from ankihost.media.log import MediaLog
from ankihost.media.placer import Placer
from ankihost.media.trash import DEFAULT_DAYS, Trash, TrashEntry
from ankihost.storage.paths import UserFolder

log = logging.getLogger(__name__)


class UserMedia:
    def __init__(self, folder: UserFolder, trash_days: int = DEFAULT_DAYS) -> None:
        self.folder = folder
        self.trash = Trash(folder.media_trash, trash_days)
        self.log = MediaLog(folder)
        self.placer = Placer()
        self._index: MediaIndex | None = None
        self._last_used = 0.0  # time.monotonic() of the last use of the index

    @property
    def is_open(self) -> bool:
        return self._index is not None

    def index(self, *, placed: bool = False) -> MediaIndex:
        """The open media index, opened (and repaired after a crash) on first use. With
        `placed`, every committed batch's files are in the media folder too (for whatever
        reads files; the index alone is always up to date)."""
        if self._index is None:
            self._index = _open(self.folder, self.trash, self.log)
        if placed:
            self.place()
        self._last_used = time.monotonic()
        return self._index

    def place(self, names: Collection[str] | None = None) -> None:
        """Wait for the batches placed in the background (`placer.py`): all of them, or, with
        `names`, those that change one of them (and enough to keep the queue short). If a
        placement failed, the index is closed: its next use recovers from the media log."""
        try:
            self.placer.wait(names)
        except Exception:  # whatever failed, the batches dropped from the queue are in the log
            self._close_index()
            raise

    def trash_entries(self) -> list[TrashEntry]:
        """The trash, newest first, with every batch's changes placed."""
        self.index(placed=True)
        return self.trash.entries()

    def last_usn(self) -> int:
        """The media USN, as `begin` and the collection sync's `meta` report it."""
        try:
            return self.index().last_usn()
        except sqlite3.Error as exc:
            raise ServerError(f"media index: {exc}") from exc

    def unsettled_for(self) -> float | None:
        """Seconds since the index was last used, if batches still rely on the media log
        (a checkpoint waits until the user's media sync is over: downloads included)."""
        if not self.log.unsettled:
            return None
        return time.monotonic() - self._last_used

    def settle(self) -> None:
        """Checkpoint: make every batch durable now and empty the media log. If that fails,
        the index is closed, so that its next use recovers from the log. (Without an open
        index there is nothing of this process's to flush: what a crash left in the log waits
        for the recovery that opening the index runs.)"""
        if self._index is None:
            return
        self.place()
        try:
            self.log.checkpoint()
        except Exception:
            self._close_index()
            raise

    def purge_trash(self, now: float | None = None) -> int:
        """Remove the trash's expired entries; the number of files purged."""
        self.place()
        return self.trash.purge(time.time() if now is None else now)

    def close(self) -> None:
        try:
            self.settle()
        except Exception:
            log.exception("media: the last changes of %s could not be flushed", self.folder.root)
        self._close_index()

    def _close_index(self) -> None:
        with contextlib.suppress(Exception):  # recovery places what is left
            self.placer.wait()
        self.log.close()
        self.log = MediaLog(self.folder)  # what recovery will read back, from the start
        if self._index is not None:
            index, self._index = self._index, None
            index.close()


class MediaBatch:
    """One change of a user's media: `with MediaBatch(media) as batch:` gives the index
    transaction (`batch.writer`) and its journal (`batch.journal`, whose `prepare` must be
    called with the changes before the block ends). The commit happens as the block ends;
    then the files are placed in the background (`UserMedia.place` waits for that)."""

    def __init__(self, media: UserMedia) -> None:
        self.media = media
        self.journal = FileJournal(media.folder, media.trash, media.log)
        self._stack = ExitStack()
        self._writer: Writer | None = None

    @property
    def writer(self) -> Writer:
        assert self._writer is not None, "use the batch in a with block"
        return self._writer

    def __enter__(self) -> MediaBatch:
        index = self.media.index()
        if self.media.log.size >= journal.LOG_CHECKPOINT_BYTES:
            self.media.settle()
        with ExitStack() as stack:
            stack.enter_context(self.journal)
            self._writer = stack.enter_context(index.atomic())
            self._stack = stack.pop_all()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stack.__exit__(kind, exc, tb)
        if self.journal.unplaced:
            self.media.placer.add(self.journal)


def _open(folder: UserFolder, trash: Trash, media_log: MediaLog) -> MediaIndex:
    folder.ensure()
    index = MediaIndex.open(folder.media_db)
    try:
        recovery.recover(folder, trash, index, media_log)
        recovery.remove_stray_temps(folder.media, index.has_name)
        trash.purge(time.time())
    except BaseException:
        index.close()
        raise
    return index
