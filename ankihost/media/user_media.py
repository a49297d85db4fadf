"""A user's media state: the one owner of their open media index.

`UserMedia.index()` opens `media.db` on first use (creating or migrating it), completes or
undoes an upload a crash interrupted, and sweeps the media folder's stray temp files;
`close()` closes it. The caller holds the user's lock.
"""

from __future__ import annotations

import sqlite3

from ankihost.errors import ServerError
from ankihost.media import journal, sync
from ankihost.media.index import MediaIndex
from ankihost.storage.paths import UserFolder


class UserMedia:
    def __init__(self, folder: UserFolder) -> None:
        self.folder = folder
        self._index: MediaIndex | None = None

    @property
    def is_open(self) -> bool:
        return self._index is not None

    def index(self) -> MediaIndex:
        """The open media index, opened (and repaired after a crash) on first use."""
        if self._index is None:
            self._index = _open(self.folder)
        return self._index

    def last_usn(self) -> int:
        """The media USN, as `begin` and the collection sync's `meta` report it."""
        try:
            return self.index().last_usn()
        except sqlite3.Error as exc:
            raise ServerError(f"media index: {exc}") from exc

    def close(self) -> None:
        if self._index is not None:
            index, self._index = self._index, None
            index.close()


def _open(folder: UserFolder) -> MediaIndex:
    folder.ensure()
    index = MediaIndex.open(folder.media_db)
    try:
        sync.recover_after_crash(index, folder)
        journal.remove_stray_temps(folder.media, index.has_name)
    except BaseException:
        index.close()
        raise
    return index
