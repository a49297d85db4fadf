"""`meta` and `abort`: the first and the emergency call of every collection sync.

`meta` tells the client whether to sync normally, fully or not at all (a protocol 8 or 9 client
is stopped with a message when the collection needs features it lacks); both abort any sync
session of the user (rolling it back), as the official server does.
"""

from __future__ import annotations

import os
import sqlite3
import time

from ankihost.errors import BadRequest, ClientTooOld
from ankihost.protocol.header import MAX_SYNC_VERSION, MIN_SYNC_VERSION
from ankihost.protocol.request import SyncRequest
from ankihost.protocol.response import Reply, json_reply
from ankihost.registry import UserState
from ankihost.storage import collection, objects
from ankihost.sync.handlers import SMALL_BODY_BYTES

# Protocol versions that mark what a client can handle (spec 01 §1.8), and what `meta`
# tells an older one about a collection it would damage.
V2_SCHEDULER_VERSION = 9
V2_TIMEZONE_VERSION = 10
NO_V2_SCHEDULER_MESSAGE = "Your client does not support the v2 scheduler"
NO_NEW_TIMEZONE_MESSAGE = "Your client does not support the new timezone handling."


def meta(state: UserState, request: SyncRequest, *, max_collection_bytes: int) -> Reply:
    version = _version(request.json_object())
    state.collection.abort_session()
    db = state.collection.connection()
    col = collection.read_col(db)
    too_big = os.stat(state.folder.collection_path).st_size > max_collection_bytes
    refusal = old_client_refusal(db, version)
    return json_reply({
        "mod": col.mod,
        # A collection too large to sync normally forces a one-way sync, as upstream does.
        "scm": collection.now_millis() if too_big else col.scm,
        "usn": col.usn,
        "ts": int(time.time()),
        "msg": refusal or "",
        "cont": refusal is None,
        "hostNum": 0,
        "empty": not collection.has_cards(db),
        "media_usn": state.media.last_usn(),
    })


def _version(body: dict[str, object]) -> int:
    """The body's `v`: 400 when it is no integer, 501 (client too old) outside 8–11."""
    version = body.get("v")
    if not isinstance(version, int) or isinstance(version, bool):
        raise BadRequest(f"meta needs an integer v, got {version!r}")
    if not MIN_SYNC_VERSION <= version <= MAX_SYNC_VERSION:
        raise ClientTooOld(f"meta version {version} is not supported")
    return version


def old_client_refusal(db: sqlite3.Connection, version: int) -> str | None:
    """The message that stops a protocol 8 or 9 client from syncing a collection it does not
    understand (None: it may sync): 8 predates the v2 scheduler, 9 the creation offset of
    the new timezone handling. Config values count only when they are what upstream reads:
    `schedVer` exactly 2, `creationOffset` a 32-bit integer."""
    if version < V2_SCHEDULER_VERSION:
        scheduler = objects.config_value(db, "schedVer")
        if type(scheduler) is int and scheduler == 2:
            return NO_V2_SCHEDULER_MESSAGE
    if version < V2_TIMEZONE_VERSION:
        offset = objects.config_value(db, "creationOffset")
        if type(offset) is int and -(2**31) <= offset < 2**31:
            return NO_NEW_TIMEZONE_MESSAGE
    return None


def runs_inline(state: UserState, request: SyncRequest) -> bool:
    """`meta` may run on the event loop (see `sync/handlers.py: INLINE`) with the
    collection and media index open and no session to roll back: a few small reads."""
    return state.idle_and_open() and request.body_size <= SMALL_BODY_BYTES


def abort(state: UserState, request: SyncRequest) -> Reply:
    """Abort whatever session is active, whatever its key (user cancel uses a new key)."""
    request.json_object()  # clients send {"_pad": null}; any object is accepted
    state.collection.abort_session()
    return json_reply(None)
