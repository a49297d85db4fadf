"""Media sync: each user's media folder and media index, and the `/msync/…` handlers.

`open_index(state)` is the only way in: it opens (creating or migrating) `media.db` once per
user, completes or undoes an upload a crash interrupted, removes what else a crash left behind,
and caches it on `state.media`. The collection sync's `meta` reply takes its `media_usn` from
`handlers.last_usn(state)`, the same value as `begin`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ankihost.media import files, sync
from ankihost.media.index import MediaIndex

if TYPE_CHECKING:
    from ankihost.registry import UserState
    from ankihost.storage.paths import UserFolder

__all__ = ["MediaIndex", "close_index", "open_index", "prepare"]


def prepare(folder: UserFolder) -> None:
    """At start-up, as the official server does: create or upgrade the user's media.db and
    finish whatever a crash interrupted, so the first sync pays none of it."""
    _open(folder).close()


def open_index(state: UserState) -> MediaIndex:
    """The user's open media index; the caller holds the user's lock."""
    if state.media is None:
        state.media = _open(state.folder)
    index: MediaIndex = state.media
    return index


def _open(folder: UserFolder) -> MediaIndex:
    folder.ensure()
    index = MediaIndex.open(folder.media_db)
    try:
        sync.recover_after_crash(index, folder)
        files.remove_stray_temps(folder.media, index.has_name)
        sync.remove_stray_downloads(folder.root)
    except BaseException:
        index.close()
        raise
    return index


def close_index(state: UserState) -> None:
    if state.media is not None:
        index, state.media = state.media, None
        index.close()
