"""The `/msync/<method>` handlers as the web layer calls them: `METHODS[name](state, request)`.

Each one parses the request, calls `media.sync`, and wraps the result in the media envelope
`{"data": …, "err": ""}` (except `downloadFiles`, which answers a bare zip). The caller holds
the user's lock. SQLite and file-system failures leave here as ServerError (500).
"""

from __future__ import annotations

import functools
import logging
import sqlite3
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ankihost.errors import BadRequest, ServerError
from ankihost.media import open_index, sync
from ankihost.protocol.response import Reply, file_reply, json_reply

if TYPE_CHECKING:
    from ankihost.protocol.request import SyncRequest
    from ankihost.registry import UserState

log = logging.getLogger(__name__)

Handler = Callable[["UserState", "SyncRequest"], Reply]
USN_MIN, USN_MAX = -(2**31), 2**31 - 1  # a USN is a signed 32-bit integer on the wire
COUNT_MAX = 2**32 - 1  # mediaSanity's `local` is an unsigned 32-bit integer


def _server_errors(handler: Handler) -> Handler:
    @functools.wraps(handler)
    def guarded(state: UserState, request: SyncRequest) -> Reply:
        try:
            return handler(state, request)
        except (sqlite3.Error, OSError) as exc:
            log.exception("media %s failed for %s", request.method, state.user.name)
            raise ServerError(f"media {request.method}: {type(exc).__name__}") from exc

    return guarded


def _ok(data: Any) -> Reply:
    return json_reply({"data": data, "err": ""})


def _int_field(body: dict[str, Any], key: str, low: int, high: int) -> int:
    value = body.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise BadRequest(f"{key!r} must be an integer in [{low}, {high}], got {value!r:.50}")
    return value


def last_usn(state: UserState) -> int:
    """The media USN for the collection sync's `meta` reply (`media_usn`)."""
    try:
        return open_index(state).last_usn()
    except sqlite3.Error as exc:
        raise ServerError(f"media index: {exc}") from exc


@_server_errors
def begin(state: UserState, request: SyncRequest) -> Reply:
    version = request.extra.get("v") or request.json_object().get("v")
    if not isinstance(version, str) or not version:
        raise BadRequest("begin: missing client version")
    index = open_index(state)
    return _ok({"usn": index.last_usn(), "sk": request.host_key})


@_server_errors
def media_changes(state: UserState, request: SyncRequest) -> Reply:
    after = _int_field(request.json_object(), "lastUsn", USN_MIN, USN_MAX)
    return _ok(sync.changes_since(open_index(state), after))


@_server_errors
def upload_changes(state: UserState, request: SyncRequest) -> Reply:
    index = open_index(state)
    request.body.seek(0)
    processed, usn = sync.apply_upload(index, state.folder, request.body)
    return _ok([processed, usn])


@_server_errors
def download_files(state: UserState, request: SyncRequest) -> Reply:
    names = request.json_object().get("files")
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise BadRequest("downloadFiles: 'files' must be a list of names")
    index = open_index(state)
    built = sync.build_download(index, state.folder.media, names, state.folder.root)
    if isinstance(built, bytes):
        return Reply(data=built)
    return file_reply(built, delete_after=True)


@_server_errors
def media_sanity(state: UserState, request: SyncRequest) -> Reply:
    local = _int_field(request.json_object(), "local", 0, COUNT_MAX)
    return _ok(sync.sanity(open_index(state), local))


METHODS: dict[str, Handler] = {
    "begin": begin,
    "mediaChanges": media_changes,
    "uploadChanges": upload_changes,
    "downloadFiles": download_files,
    "mediaSanity": media_sanity,
}
