"""Running one method for an authenticated user: decode the body, take the user's lock, run the
step, frame the reply, and run the reply's follow-up once it is sent.

Shared by `/sync/` and `/msync/` routes. The step runs while the user's own lock is held: on
the event loop when its `inline` check says it is bounded and does not wait on the disk, else
in a worker thread (`sync/handlers.py` says why). Reading and decompressing bodies happens
outside that lock.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any, TypeVar

import anyio
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import Response

from ankihost.config import Settings
from ankihost.errors import AuthFailed, BadRequest, PayloadTooLarge
from ankihost.protocol.header import SyncHeader
from ankihost.protocol.request import Step, SyncRequest
from ankihost.protocol.response import Reply
from ankihost.registry import Registry, UserState
from ankihost.sync import bodies
from ankihost.web.envelope import INLINE_DECOMPRESS_BYTES, decode, framed_response, read_raw_body
from ankihost.web.request_log import RequestLog

# Methods whose bodies are a few small fields. Parsed JSON can take ~30x its text in memory,
# so these never get the 3 x MAX_SYNC_PAYLOAD_MEGS allowance that carries collection data.
SMALL_BODY_LIMIT = 1024 * 1024
T = TypeVar("T")


def authenticate(registry: Registry, header: SyncHeader, record: RequestLog) -> UserState:
    """The user the header's host key belongs to; 403 for an unknown or revoked key. The
    device's last use is noted (in memory)."""
    credential = registry.accounts.credential(header.host_key)
    if credential is None:
        raise AuthFailed("unknown host key")
    registry.accounts.seen(credential, header.client_version, record.ip)
    state = registry.state_of(credential.account)
    record.user = state.name
    return state


def key_still_valid(registry: Registry, header: SyncHeader) -> Callable[[], None]:
    """A check, made again once the user's lock is held: a request that waited for the lock
    while its device was revoked (or its password changed) is refused like the next one."""

    def check() -> None:
        if registry.accounts.credential(header.host_key) is None:
            raise AuthFailed("the host key was revoked while the request waited")

    return check


def guarded(work: Callable[..., T], check: Callable[[], None]) -> Callable[..., T]:
    """`work`, after `check` (which raises if it must not run)."""

    def run(*args: Any) -> T:
        check()
        return work(*args)

    return run


def body_limit(step: Step, settings: Settings) -> int:
    return SMALL_BODY_LIMIT if step.small_body else settings.max_decompressed_bytes


async def decode_capped(request: Request, header: SyncHeader, method: str, limit: int) -> SyncRequest:
    """The decoded body; one over `limit` is a 400, as the official server answers it. The
    bodies that carry collection data (`bodies.READERS`) are read with their shape checked."""
    try:
        if method in bodies.READERS:
            return await _decode_checked(request, header, method, limit)
        return await decode(request, header, method, limit)
    except PayloadTooLarge as exc:
        raise BadRequest(exc.reason) from None


async def _decode_checked(request: Request, header: SyncHeader, method: str, limit: int) -> SyncRequest:
    """A small body whole, right here (the step parses it, as any other); a larger one read
    with its shape checked while it is decompressed, in a worker thread, never on disk."""
    raw = await read_raw_body(request, limit)
    try:
        read = None
        if raw.seek(0, 2) <= INLINE_DECOMPRESS_BYTES:
            whole = bodies.read_small_body(raw)
            read = None if whole is None else bodies.ReadBody(len(whole), whole=whole)
        if read is None:
            read = await anyio.to_thread.run_sync(bodies.read_body, method, raw, limit)
    finally:
        raw.close()
    return bodies.ReadSyncRequest(
        method=method, sync_version=header.version, host_key=header.host_key,
        client_version=header.client_version, session_key=header.session_key,
        body=io.BytesIO(read.whole or b""), body_size=read.size, read=read,
    )


async def run_step(
    request: Request, header: SyncHeader, method: str, step: Step, state: UserState, limit: int,
    still_valid: Callable[[], None],
) -> Response:
    with await decode_capped(request, header, method, limit) as sync_request:
        check = step.inline
        reply = await state.locked(
            guarded(step.run, still_valid), state, sync_request,
            inline=None if check is None else (lambda: check(state, sync_request)),
        )
    return await framed_response(reply, header.version >= 11, _follow_up(state, reply))


def _follow_up(state: UserState, reply: Reply) -> BackgroundTask | None:
    """The reply's follow-up work, run after it is sent like a step: under the user's lock,
    on the event loop or in a worker thread as the reply says."""
    work = reply.follow_up
    if work is None:
        return None
    inline = reply.follow_up_inline
    return BackgroundTask(state.locked, work, inline=lambda: inline)
