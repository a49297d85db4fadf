"""The normal-sync methods as the web layer calls them: `METHODS[name](state, request)`.

Each handler checks the session key, writes any chunk the session sent earlier that is still
unwritten, parses the body (a malformed body is a 400 that leaves the session alone), runs one
step under `rolled_back_on_failure`, and wraps the JSON reply. A reply's `follow_up` is run by
the web layer after the reply is sent (`chunk`: make the next chunk; `applyChunk`: write this
one). The caller holds the user's lock. `meta`, `abort`, `upload` and `download` live elsewhere.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ankihost.protocol.response import Reply, json_reply
from ankihost.sync import changes, chunks, finish, sanity, session, start

if TYPE_CHECKING:
    from ankihost.protocol.request import SyncRequest
    from ankihost.registry import UserState

Handler = Callable[["UserState", "SyncRequest"], Reply]
LightCheck = Callable[["UserState", "SyncRequest"], bool]


def handle_start(state: UserState, request: SyncRequest) -> Reply:
    key = session.session_key(request)
    message = start.parse_start(request.json_object())
    current = session.open_session(state, key, message.client_usn, message.client_is_newer)
    with session.rolled_back_on_failure(state):
        return json_reply(start.start(state.collection(), current, message))


def handle_apply_graves(state: UserState, request: SyncRequest) -> Reply:
    current, body = _begin_step(state, request)
    graves = start.parse_apply_graves(body)
    with session.rolled_back_on_failure(state):
        start.apply_graves(state.collection(), current, graves)
    return json_reply(None)


def handle_apply_changes(state: UserState, request: SyncRequest) -> Reply:
    current, body = _begin_step(state, request)
    message = changes.parse_apply_changes(body)
    with session.rolled_back_on_failure(state):
        reply = changes.apply_changes(state.collection(), current, message)
    # the client's next request is its first `chunk`
    return json_reply(reply, follow_up=_chunk_preparer(state, current))


def handle_chunk(state: UserState, request: SyncRequest) -> Reply:
    current, _ = _begin_step(state, request)
    with session.rolled_back_on_failure(state):
        reply = chunks.next_chunk(state.collection(), current)
    if current.chunks_done:
        return json_reply(reply)
    return json_reply(reply, follow_up=_chunk_preparer(state, current))


def _chunk_preparer(state: UserState, current: session.SyncSession) -> Callable[[], None]:
    """Follow-up work: make the session's next chunk while the client handles this reply."""

    def prepare() -> None:  # after the reply is sent, under the user's lock again
        if state.session is current:  # not ended or replaced meanwhile
            chunks.prepare_next_chunk(state.collection(), current)

    return prepare


def handle_apply_chunk(state: UserState, request: SyncRequest) -> Reply:
    current, body = _begin_step(state, request)
    current.unapplied.append(chunks.parse_apply_chunk(body))

    def write() -> None:  # after the reply is sent, under the user's lock again
        if state.session is current:  # not ended or replaced meanwhile
            chunks.apply_unapplied(state.collection(), current)

    return json_reply(None, follow_up=write)


def handle_sanity_check(state: UserState, request: SyncRequest) -> Reply:
    _, body = _begin_step(state, request)
    client = sanity.parse_sanity(body)
    with session.rolled_back_on_failure(state):
        result = sanity.sanity_check(state.collection(), client)
    if not result.ok:
        session.abandon(state)  # roll back now; the client follows with `abort`
    return json_reply(result.reply)


def handle_finish(state: UserState, request: SyncRequest) -> Reply:
    _begin_step(state, request)
    with session.rolled_back_on_failure(state):
        now = finish.finish(state.collection())
    session.commit(state)
    return json_reply(now)


def _begin_step(state: UserState, request: SyncRequest) -> tuple[session.SyncSession, Any]:
    """The caller's session (400 empty key, 409 none or another's), with every chunk it sent
    written (an error writing one fails this step), and the request's JSON body."""
    current = session.active_session(state, session.session_key(request))
    if current.unapplied or current.apply_error is not None:
        with session.rolled_back_on_failure(state):
            chunks.settle(state.collection(), current)
    return current, request.json_object()


# `applyChunk` bodies up to this size may be parsed on the event loop (`LIGHT`). A real
# client's chunk of ~250 objects is 20-60 KiB (~0.3 ms to parse); 64 KiB of the smallest
# possible rows takes ~5 ms, no longer than the GIL would hold the loop off for if the parse
# ran in a worker thread. `chunk`, `meta` and other bodies are `{"_pad": null}`-sized.
LIGHT_BODY_BYTES = 64 * 1024
SMALL_BODY_BYTES = 4096


def _light_chunk(state: UserState, request: SyncRequest) -> bool:
    """`chunk` with its reply already made and nothing left to write first: the handler
    only hands the reply over."""
    current = state.session
    return (
        _settled(state) and current.key == request.session_key
        and isinstance(current.next_chunk, dict) and request.body_size <= SMALL_BODY_BYTES
    )


def _light_apply_chunk(state: UserState, request: SyncRequest) -> bool:
    """`applyChunk` with nothing earlier left to write: the handler only parses."""
    return _settled(state) and request.body_size <= LIGHT_BODY_BYTES


def _light_apply_graves(state: UserState, request: SyncRequest) -> bool:
    """`applyGraves` with a few graves (~20 bytes each) and nothing left to write first."""
    return _settled(state) and request.body_size <= SMALL_BODY_BYTES


def _light_apply_changes(state: UserState, request: SyncRequest) -> bool:
    """`applyChanges` with a small body. Its work is converting a few notetypes, decks and
    config entries between rows and JSON, both ways: Python that holds the GIL, so a worker
    thread would not let other users' requests run meanwhile anyway."""
    return _settled(state) and request.body_size <= LIGHT_BODY_BYTES


def _settled(state: UserState) -> bool:
    current = state.session
    return current is not None and not current.unapplied and current.apply_error is None


LIGHT: dict[str, LightCheck] = {
    "applyGraves": _light_apply_graves,
    "applyChanges": _light_apply_changes,
    "chunk": _light_chunk,
    "applyChunk": _light_apply_chunk,
}

METHODS: dict[str, Handler] = {
    "start": handle_start,
    "applyGraves": handle_apply_graves,
    "applyChanges": handle_apply_changes,
    "chunk": handle_chunk,
    "applyChunk": handle_apply_chunk,
    "sanityCheck2": handle_sanity_check,
    "finish": handle_finish,
}
