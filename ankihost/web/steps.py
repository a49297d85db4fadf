"""Running one method for an authenticated user: decode the body, take the user's lock, run the
step, frame the reply, and run the reply's follow-up once it is sent.

Shared by `/sync/` and `/msync/` routes, whatever the request's envelope. The step runs while
the user's own lock is held: on the event loop when its `inline` check says it is bounded and
does not wait on the disk, else in a worker thread (`sync/handlers.py` says why). Reading and
decompressing bodies happens outside that lock, and so does a reply's `before_send` work.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import anyio
from starlette.background import BackgroundTask
from starlette.responses import Response

from ankihost.config import Settings
from ankihost.errors import AuthFailed, BadRequest, PayloadTooLarge
from ankihost.protocol.request import Step, SyncRequest
from ankihost.protocol.response import Reply
from ankihost.registry import Registry, UserState
from ankihost.sync import bodies
from ankihost.web.envelope import Envelope, framed_response
from ankihost.web.request_log import RequestLog

# Methods whose bodies are a few small fields. Parsed JSON can take ~30x its text in memory,
# so these never get the 3 x MAX_SYNC_PAYLOAD_MEGS allowance that carries collection data.
SMALL_BODY_LIMIT = 1024 * 1024
T = TypeVar("T")


def authenticate(registry: Registry, envelope: Envelope, record: RequestLog) -> UserState:
    """The user the request's host key belongs to; 403 for an unknown or revoked key. The
    device's last use is noted (in memory)."""
    record.client = envelope.client_version
    credential = registry.accounts.credential(envelope.host_key)
    if credential is None:
        raise AuthFailed("unknown host key")
    named = envelope.named_client
    registry.accounts.seen(credential, named, record.ip)
    if not named and credential.device is not None and credential.device.client:
        record.client = credential.device.client  # an old client, named by its last `meta`
    state = registry.state_of(credential.account)
    record.user = state.name
    return state


def key_still_valid(registry: Registry, envelope: Envelope) -> Callable[[], None]:
    """A check, made again once the user's lock is held: a request that waited for the lock
    while its device was revoked (or its password changed) is refused like the next one."""

    def check() -> None:
        if registry.accounts.credential(envelope.host_key) is None:
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


async def decode_capped(envelope: Envelope, method: str, limit: int) -> SyncRequest:
    """The decoded body; one over `limit` is a 400, as the official server answers it. The
    bodies that carry collection data (`bodies.READERS`) are read with their shape checked."""
    try:
        if method in bodies.READERS:
            return await envelope.decode_checked(method, limit)
        return await envelope.decode(method, limit)
    except PayloadTooLarge as exc:
        raise BadRequest(exc.reason) from None


async def run_step(
    envelope: Envelope, method: str, step: Step, state: UserState, limit: int,
    still_valid: Callable[[], None],
) -> Response:
    with await decode_capped(envelope, method, limit) as sync_request:
        check = step.inline
        reply = await state.locked(
            guarded(step.run, still_valid), state, sync_request,
            inline=None if check is None else (lambda: check(state, sync_request)),
        )
    await _complete(reply)
    return await framed_response(reply, envelope.compressed, _follow_up(state, reply))


async def _complete(reply: Reply) -> None:
    """Run the reply's `before_send` work (the user's lock is free by now); its file is
    removed if that fails."""
    if reply.before_send is None:
        return
    try:
        await anyio.to_thread.run_sync(reply.before_send)
    except BaseException:
        if reply.path is not None and reply.delete_after:
            reply.path.unlink(missing_ok=True)
        raise


def _follow_up(state: UserState, reply: Reply) -> BackgroundTask | None:
    """The reply's follow-up work, run after it is sent like a step: under the user's lock,
    on the event loop or in a worker thread as the reply says."""
    work = reply.follow_up
    if work is None:
        return None
    inline = reply.follow_up_inline
    return BackgroundTask(state.locked, work, inline=lambda: inline)
