"""The normal-sync methods as the web layer calls them: `STEPS[name].run(state, request)`.

Each handler checks the session key, writes any chunk the session sent earlier that is still
unwritten, parses the body (a malformed body is a 400 that leaves the session alone), runs one
step under `rolled_back_on_failure`, and wraps the JSON reply. A reply's `follow_up` is run by
the web layer after the reply is sent (`applyChanges`, `chunk`: make the next chunk;
`applyChunk`: write this one). The caller holds the user's lock; `STEPS` below, one row per
method, says which steps it may run on the event loop and when. `meta`, `abort`, `upload` and
`download` live elsewhere.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ankihost.protocol.request import Step
from ankihost.protocol.response import Reply, json_reply
from ankihost.sync import bodies, changes, chunks, finish, sanity, session, start

if TYPE_CHECKING:
    import sqlite3

    from ankihost.protocol.request import SyncRequest
    from ankihost.registry import UserState

Handler = Callable[["UserState", "SyncRequest"], Reply]
InlineCheck = Callable[["UserState", "SyncRequest"], bool]


def handle_start(state: UserState, request: SyncRequest) -> Reply:
    key = session.session_key(request.session_key)
    message = bodies.start_message(request)
    col = state.collection
    current = col.begin_session(key, message.client_usn, message.client_is_newer, request.host_key)
    with col.rolled_back_on_failure():
        return json_reply(start.start(col.connection(), current, message))


def handle_apply_graves(state: UserState, request: SyncRequest) -> Reply:
    current = _settled_session(state, request)
    graves = bodies.apply_graves_message(request)
    with state.collection.rolled_back_on_failure():
        start.apply_graves(state.collection.connection(), current, graves)
    return json_reply(None)


def handle_apply_changes(state: UserState, request: SyncRequest) -> Reply:
    current = _settled_session(state, request)
    message = bodies.apply_changes_message(request)
    with state.collection.rolled_back_on_failure():
        reply = changes.apply_changes(state.collection.connection(), current, message)
    # the client's next request is its first `chunk`
    return json_reply(reply, follow_up=_chunk_preparer(state, current), follow_up_inline=True)


def handle_chunk(state: UserState, request: SyncRequest) -> Reply:
    current, _ = _begin_step(state, request)
    with state.collection.rolled_back_on_failure():
        reply = chunks.next_chunk(state.collection.connection(), current)
    if current.chunks_done:
        return json_reply(reply)
    return json_reply(reply, follow_up=_chunk_preparer(state, current), follow_up_inline=True)


def _chunk_preparer(state: UserState, current: session.SyncSession) -> Callable[[], None]:
    """Follow-up work: make the session's next chunk while the client handles this reply
    (for the first chunk one scan of the usn indexes for the ids, then ~250 rows)."""
    return _for_session(state, current, chunks.prepare_next_chunk)


def _for_session(
    state: UserState, current: session.SyncSession,
    work: Callable[[sqlite3.Connection, session.SyncSession], None],
) -> Callable[[], None]:
    """Follow-up work on `current`, run after the reply is sent (under the user's lock
    again): skipped if the session has ended or been replaced meanwhile."""

    def follow_up() -> None:
        if state.collection.session is current:
            work(state.collection.connection(), current)

    return follow_up


def handle_apply_chunk(state: UserState, request: SyncRequest) -> Reply:
    current = _settled_session(state, request)
    incoming = bodies.apply_chunk_message(request)
    current.unapplied.append(incoming)
    write = _for_session(state, current, chunks.apply_unapplied)
    objects = len(incoming.revlog) + len(incoming.cards) + len(incoming.notes)
    inline = objects <= INLINE_CHUNK_OBJECTS and request.body_size <= INLINE_BODY_BYTES
    return json_reply(None, follow_up=write, follow_up_inline=inline)


def handle_sanity_check(state: UserState, request: SyncRequest) -> Reply:
    _, body = _begin_step(state, request)
    client = sanity.parse_sanity(body)
    with state.collection.rolled_back_on_failure():
        result = sanity.sanity_check(state.collection.connection(), client)
    if not result.ok:
        state.collection.abort_session()  # roll back now; the client follows with `abort`
    return json_reply(result.reply)


def handle_finish(state: UserState, request: SyncRequest) -> Reply:
    _begin_step(state, request)
    with state.collection.rolled_back_on_failure():
        now = finish.finish(state.collection.connection())
    state.collection.commit_session()
    return json_reply(now)


def _begin_step(state: UserState, request: SyncRequest) -> tuple[session.SyncSession, Any]:
    """`_settled_session`, and the request's JSON body."""
    return _settled_session(state, request), request.json_object()


def _settled_session(state: UserState, request: SyncRequest) -> session.SyncSession:
    """The caller's session (400 empty key, 409 none or another's), with every chunk it sent
    written (an error writing one fails this step)."""
    current = state.collection.active_session(session.session_key(request.session_key))
    if current.unsettled:
        with state.collection.rolled_back_on_failure():
            chunks.settle(state.collection.connection(), current)
    return current


# Where steps run (`UserState.locked`): on the event loop when `Step.inline` says so, else in a
# worker thread. CPython runs one thread of Python at a time, and SQLite lets go of the GIL
# on every row, so threads doing row-sized SQLite work mostly hand the GIL back and forth:
# with 8 users syncing at once, steps in threads cost ~2x the CPU per user (context switches,
# the GIL changing hands on every row) of the same steps on the event loop, and finished
# later. So a step runs inline when its work is proportional to a small request or to what
# the session has to send anyway (a chunk, the counts of `sanityCheck2`, the ids of the
# first `chunk`), with at worst a few ms of SQLite reads and writes in the page cache.
# Threads remain for what waits on the disk (`finish`'s commit, a collection that has to be
# opened, uploads, downloads, media) and for bodies too big to be handled in a few ms.
# Ending a session early (a failed step, a bad sanity check) is a rollback, which only drops
# the session's pages from the WAL (`UserState.abort_session`).
#
# Bodies up to this size are handled inline: a real client's chunk of ~250 objects is
# 20-60 KiB (~0.3 ms to parse); 64 KiB of the smallest possible rows parses in ~5 ms.
INLINE_BODY_BYTES = 64 * 1024
SMALL_BODY_BYTES = 4096
# The write of a chunk that came in an inline-sized body and has up to this many objects
# runs inline after its reply (~2 ms per 250 objects of a real client's size).
INLINE_CHUNK_OBJECTS = 1000


def _inline_start(state: UserState, request: SyncRequest) -> bool:
    """`start` with the collection open and no session to roll back."""
    return state.collection.idle_and_open() and request.body_size <= INLINE_BODY_BYTES


def _inline_step(state: UserState, request: SyncRequest, limit: int = INLINE_BODY_BYTES) -> bool:
    """A session step with a bounded body, no chunk left to write first and no error made
    ahead waiting to be raised."""
    current = state.collection.session
    return (
        current is not None and not current.unsettled
        and not isinstance(current.next_chunk, Exception) and request.body_size <= limit
    )


def _inline_apply_graves(state: UserState, request: SyncRequest) -> bool:
    """`applyGraves` deletes row by row: a few hundred graves (~20 bytes each) at most."""
    return _inline_step(state, request, SMALL_BODY_BYTES)


# One row per method; bodies of `chunk`, `sanityCheck2` and `finish` are a few small fields.
STEPS: dict[str, Step] = {
    "start": Step(handle_start, _inline_start),
    "applyGraves": Step(handle_apply_graves, _inline_apply_graves),
    "applyChanges": Step(handle_apply_changes, _inline_step),
    "chunk": Step(handle_chunk, _inline_step, small_body=True),
    "applyChunk": Step(handle_apply_chunk, _inline_step),
    "sanityCheck2": Step(handle_sanity_check, _inline_step, small_body=True),
    # it commits (an fsync): always a worker thread
    "finish": Step(handle_finish, small_body=True),
}
