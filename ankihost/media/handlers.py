"""The `/msync/<method>` handlers as the web layer calls them: `METHODS[name].run(state, request)`.

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
from ankihost.media import sync
from ankihost.protocol.request import Step
from ankihost.protocol.response import Reply, file_reply, json_reply
from ankihost.protocol.values import int_in_range

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
            log.exception("media %s failed for %s", request.method, state.name)
            raise ServerError(f"media {request.method}: {type(exc).__name__}") from exc

    return guarded


def _ok(data: Any) -> Reply:
    return json_reply({"data": data, "err": ""})


@_server_errors
def begin(state: UserState, request: SyncRequest) -> Reply:
    version = request.json_object().get("v")
    if not isinstance(version, str) or not version:
        raise BadRequest("begin: missing client version")
    return _ok({"usn": state.media.index().last_usn(), "sk": request.host_key})


@_server_errors
def media_changes(state: UserState, request: SyncRequest) -> Reply:
    after = int_in_range(request.json_object(), "lastUsn", USN_MIN, USN_MAX)
    return _ok(sync.changes_since(state.media.index(), after))


@_server_errors
def upload_changes(state: UserState, request: SyncRequest) -> Reply:
    request.body.seek(0)
    try:
        processed, usn = sync.apply_upload(state.media, request.body, state.account.quota_bytes)
    except sync.QuotaExceeded as refused:
        log.info("media upload refused for %s: over quota", state.name)
        return json_reply({"err": str(refused)})  # shown to the user as it is
    return _ok([processed, usn])


@_server_errors
def download_files(state: UserState, request: SyncRequest) -> Reply:
    names = request.json_object().get("files")
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise BadRequest("downloadFiles: 'files' must be a list of names")
    built = sync.build_download(state.media.index(placed=True), state.folder, names)
    if isinstance(built, bytes):
        return Reply(data=built)
    return file_reply(built, delete_after=True)


@_server_errors
def media_sanity(state: UserState, request: SyncRequest) -> Reply:
    local = int_in_range(request.json_object(), "local", 0, COUNT_MAX)
    # The client's last request of a media sync: the sync ends with its files in place.
    return _ok(sync.sanity(state.media.index(placed=True), local))


# One row per method; all run in a worker thread (they wait on the disk). Only
# `uploadChanges` carries file data.
METHODS: dict[str, Step] = {
    "begin": Step(begin, small_body=True),
    "mediaChanges": Step(media_changes, small_body=True),
    "uploadChanges": Step(upload_changes),
    "downloadFiles": Step(download_files, small_body=True),
    "mediaSanity": Step(media_sanity, small_body=True),
}
