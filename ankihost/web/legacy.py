"""Requests without the `anki-sync` header: the multipart/gzip envelope of protocols 8–10.

Clients older than Anki 2.1.57 / AnkiDroid 2.16 use it. They can log in, and `meta` then
answers `cont: false` with a message asking the user to update, which the client shows.
Everything else they send gets a 400 (spec 01 §6 D1). Full legacy support is future work.
"""

from __future__ import annotations

from typing import Any

from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import Response

from ankihost.config import Settings
from ankihost.errors import AuthFailed, BadRequest
from ankihost.protocol.header import LEGACY_SYNC_VERSION
from ankihost.protocol.request import SyncRequest
from ankihost.registry import Registry
from ankihost.sync import login, meta
from ankihost.web.envelope import framed_response, gunzip_into, read_raw_body, spooled
from ankihost.web.logins import LoginGate
from ankihost.web.request_log import RequestLog

LEGACY_BODY_LIMIT = 1 << 20
LEGACY_METHODS = ("hostKey", "meta")


async def handle(
    request: Request, area: str, method: str, settings: Settings, registry: Registry,
    logins: LoginGate, record: RequestLog,
) -> Response:
    if area != "sync" or method not in LEGACY_METHODS:
        raise BadRequest(f"legacy protocol request for {area}/{method}: client must update")
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise BadRequest("request has neither an anki-sync header nor a multipart body")
    fields = await _read_form(request, min(settings.max_payload_bytes, LEGACY_BODY_LIMIT))
    sync_request = SyncRequest(
        method=method, sync_version=LEGACY_SYNC_VERSION,
        host_key=fields.get("k") or fields.get("sk") or "", client_version="legacy",
        session_key=fields.get("s", ""), body=fields["data"],
        body_size=fields["size"],
    )
    with sync_request:
        if method == "hostKey":
            name, password = login.credentials(sync_request)
            record.user = name
            key = await logins.login(name, password, "legacy", record.ip)
            return await framed_response(login.reply(key), compressed=False)
        state = registry.by_host_key(sync_request.host_key)
        if state is None:
            raise AuthFailed("unknown host key")
        record.user = state.name
        reply = await state.locked(meta.legacy_meta, state, sync_request)
    return await framed_response(reply, compressed=False)


async def _read_form(request: Request, limit: int) -> dict[str, Any]:
    with await read_raw_body(request, limit) as raw:
        replay = raw.read()

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": replay, "more_body": False}

    try:
        form = await Request(request.scope, receive).form(max_files=2, max_fields=10)
    except Exception as exc:  # the multipart parser's own errors
        raise BadRequest(f"invalid multipart body: {exc}") from None
    data = form.get("data")
    payload = await data.read() if isinstance(data, UploadFile) else (data or "").encode()
    await form.close()
    body = spooled()
    if payload and form.get("c", None) not in (None, "0"):
        size = gunzip_into(payload, body, 3 * limit)
    else:
        size = body.write(payload)
    body.seek(0)
    fields = {k: v for k, v in form.items() if isinstance(v, str)}
    return {**fields, "data": body, "size": size}
