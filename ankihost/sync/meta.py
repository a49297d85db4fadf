"""`meta` and `abort`: the first and the emergency call of every collection sync.

`meta` tells the client whether to sync normally, fully or not at all; both abort any sync
session of the user (rolling it back), as the official server does.
"""

from __future__ import annotations

import os
import time

from ankihost.errors import BadRequest, ClientTooOld
from ankihost.protocol.header import MAX_SYNC_VERSION, MIN_SYNC_VERSION
from ankihost.protocol.request import SyncRequest
from ankihost.protocol.response import Reply, json_reply
from ankihost.registry import UserState
from ankihost.storage import collection
from ankihost.sync.handlers import SMALL_BODY_BYTES

LEGACY_CLIENT_MESSAGE = (
    "This sync server (ankihost) needs Anki 2.1.57 or later, AnkiDroid 2.16 or later, or a "
    "current AnkiMobile. Please update your Anki app, then sync again."
)


def meta(state: UserState, request: SyncRequest, *, max_collection_bytes: int) -> Reply:
    body = request.json_object()
    version = body.get("v")
    if not isinstance(version, int) or isinstance(version, bool):
        raise BadRequest(f"meta needs an integer v, got {version!r}")
    if not MIN_SYNC_VERSION <= version <= MAX_SYNC_VERSION:
        raise ClientTooOld(f"meta version {version} is not supported")
    state.collection.abort_session()
    if request.is_legacy or version < MAX_SYNC_VERSION:
        return json_reply(_refusal(LEGACY_CLIENT_MESSAGE))
    db = state.collection.connection()
    col = collection.read_col(db)
    too_big = os.stat(state.folder.collection_path).st_size > max_collection_bytes
    return json_reply({
        "mod": col.mod,
        # A collection too large to sync normally forces a one-way sync, as upstream does.
        "scm": collection.now_millis() if too_big else col.scm,
        "usn": col.usn,
        "ts": int(time.time()),
        "msg": "",
        "cont": True,
        "hostNum": 0,
        "empty": not collection.has_cards(db),
        "media_usn": state.media.last_usn(),
    })


def runs_inline(state: UserState, request: SyncRequest) -> bool:
    """`meta` may run on the event loop (see `sync/handlers.py: INLINE`) with the
    collection and media index open and no session to roll back: a few small reads."""
    return state.idle_and_open() and request.body_size <= SMALL_BODY_BYTES


def legacy_meta(state: UserState, request: SyncRequest) -> Reply:
    """Protocol 8–10 clients: refuse with a message the client shows (spec 01 §6 D1)."""
    request.json_object()
    state.collection.abort_session()
    return json_reply(_refusal(LEGACY_CLIENT_MESSAGE))


def _refusal(message: str) -> dict[str, object]:
    return {"mod": 0, "scm": 0, "usn": 0, "ts": int(time.time()), "msg": message,
            "cont": False, "hostNum": 0, "empty": False, "media_usn": 0}


def abort(state: UserState, request: SyncRequest) -> Reply:
    """Abort whatever session is active, whatever its key (user cancel uses a new key)."""
    request.json_object()  # clients send {"_pad": null}; any object is accepted
    state.collection.abort_session()
    return json_reply(None)
