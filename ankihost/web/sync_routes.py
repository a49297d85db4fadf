"""`/sync/<method>` and `/msync/<method>`: decode the envelope, authenticate, run the step.

Each step runs while the user's own lock is held: on the event loop when the step's
`INLINE_STEPS` check says it is bounded and does not wait on the disk, else in a worker thread
(`sync/handlers.py: INLINE` says why). Reading and decompressing bodies, password checks and
upload validation happen outside that lock.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import anyio
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import Response

from ankihost.config import Settings
from ankihost.errors import AuthFailed, BadRequest, PayloadTooLarge
from ankihost.media import handlers as media_handlers
from ankihost.protocol.header import HEADER_NAME, SyncHeader, parse_header
from ankihost.protocol.request import SyncRequest
from ankihost.protocol.response import Reply
from ankihost.registry import Registry, UserState
from ankihost.sync import full, login, meta
from ankihost.sync import handlers as normal_handlers
from ankihost.web import legacy
from ankihost.web.envelope import decompress_body, framed_response, open_target, read_raw_body

Step = Callable[[UserState, SyncRequest], Reply]
LOGIN_BODY_LIMIT = 64 * 1024
# Methods whose bodies are a few small fields. Parsed JSON can take ~30x its text in memory,
# so these never get the 3 x MAX_SYNC_PAYLOAD_MEGS allowance that carries collection data.
SMALL_BODY_LIMIT = 1024 * 1024
SMALL_BODY_METHODS = frozenset({
    "meta", "chunk", "sanityCheck2", "finish", "abort", "download",
    "begin", "mediaChanges", "downloadFiles", "mediaSanity",
})


def body_limit(method: str, settings: Settings) -> int:
    if method in SMALL_BODY_METHODS:
        return SMALL_BODY_LIMIT
    return settings.max_decompressed_bytes

COLLECTION_METHODS: dict[str, Step] = {
    "abort": meta.abort,
    "download": full.download,
    **normal_handlers.METHODS,
}
INLINE_STEPS: dict[str, normal_handlers.InlineCheck] = {
    "meta": meta.runs_inline, **normal_handlers.INLINE,
}
# Handled on their own paths below; listed so the full method set is visible in one place.
SPECIAL_METHODS = ("hostKey", "meta", "upload")


async def dispatch(
    request: Request, area: str, method: str, settings: Settings, registry: Registry,
    info: dict[str, Any], login_slots: anyio.CapacityLimiter,
) -> Response:
    header_value = request.headers.get(HEADER_NAME)
    if header_value is None:
        return await legacy.dispatch(request, area, method, settings, registry, info)
    header = parse_header(header_value)
    info["client"] = header.client_version
    table = media_handlers.METHODS if area == "msync" else COLLECTION_METHODS
    if method not in table and not (area == "sync" and method in SPECIAL_METHODS):
        raise BadRequest(f"unknown method {area}/{method}")
    if method == "hostKey":
        return await _login(request, header, registry, info, login_slots)
    state = registry.by_host_key(header.host_key)
    if state is None:
        raise AuthFailed("unknown host key")
    info["user"] = state.user.name
    if area == "sync" and method == "upload":
        return await _upload(request, header, state, settings)
    step = table.get(method) or _meta_step(settings)
    with await _decode(request, header, method, body_limit(method, settings)) as sync_request:
        check = INLINE_STEPS.get(method) if area == "sync" else None
        reply = await state.locked(
            step, state, sync_request,
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


def _meta_step(settings: Settings) -> Step:
    def step(state: UserState, request: SyncRequest) -> Reply:
        return meta.meta(
            state, request, max_collection_bytes=settings.max_decompressed_bytes,
            media_usn=media_handlers.last_usn,
        )
    return step


async def _decode(
    request: Request, header: SyncHeader, method: str, limit: int, target: IO[bytes] | None = None
) -> SyncRequest:
    """Read and decompress the body; a body over `limit` is a 400, as upstream answers it."""
    try:
        return await _decode_capped(request, header, method, limit, target)
    except PayloadTooLarge as exc:
        raise BadRequest(exc.reason) from None


async def _decode_capped(
    request: Request, header: SyncHeader, method: str, limit: int, target: IO[bytes] | None
) -> SyncRequest:
    raw = await read_raw_body(request, limit)
    body = target or open_target(None)
    try:
        size = await decompress_body(raw, body, limit)
    except BaseException:
        body.close()
        raise
    body.seek(0)
    return SyncRequest(
        method=method, sync_version=header.version, host_key=header.host_key,
        client_version=header.client_version, session_key=header.session_key,
        client_ip="", body=body, body_size=size,
    )


async def _login(
    request: Request, header: SyncHeader, registry: Registry, info: dict[str, Any],
    slots: anyio.CapacityLimiter,
) -> Response:
    with await _decode(request, header, "hostKey", LOGIN_BODY_LIMIT) as sync_request:
        info["user"] = "?"
        reply = await anyio.to_thread.run_sync(
            login.host_key, registry, sync_request, limiter=slots
        )
        info["user"] = sync_request.json_object()["u"]
    return await framed_response(reply, compressed=header.version >= 11)


async def _upload(
    request: Request, header: SyncHeader, state: UserState, settings: Settings
) -> Response:
    compressed = header.version >= 11
    state.folder.ensure()
    target = open_target(state.folder.root)
    path = Path(target.name)
    limit = settings.max_decompressed_bytes - 1  # upstream refuses len >= 3 x MAX
    try:
        upload = await _decode_capped(request, header, "upload", limit, target)
    except PayloadTooLarge:
        return await framed_response(full.refuse_upload(full.TOO_LARGE_MESSAGE, path), compressed)
    except BaseException:
        full.refuse_upload("unreadable body", path)
        raise
    finally:
        target.close()
    problem = await anyio.to_thread.run_sync(full.check_upload, path, upload.body_size)
    if problem:
        return await framed_response(full.refuse_upload(problem, path), compressed)
    reply = await state.locked(full.install_upload, state, path)
    return await framed_response(reply, compressed)
