"""`/sync/<method>`: the collection sync, one table row per method, for every protocol.

The request's `Envelope` (protocol 11's header and zstd, or the legacy multipart form) is all
that differs between protocols here. `hostKey` (login) and `upload` have paths of their own
below: a login runs in the login threads without any user's lock, and an upload is received
and checked before the user's lock is taken. Every other method is a `Step` in `methods`, run
by `web/steps.run_step`.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path

import anyio
from starlette.background import BackgroundTask
from starlette.responses import Response

from ankihost.config import Settings
from ankihost.errors import BadRequest, PayloadTooLarge
from ankihost.protocol.request import Step
from ankihost.protocol.response import Reply
from ankihost.registry import Registry, UserState
from ankihost.snapshots.keeper import settle
from ankihost.snapshots.retention import retention_of
from ankihost.sync import full, login, meta
from ankihost.sync.handlers import STEPS
from ankihost.web.envelope import Envelope, framed_response
from ankihost.web.logins import LoginGate
from ankihost.web.request_log import RequestLog
from ankihost.web.steps import authenticate, body_limit, decode_capped, guarded, key_still_valid, run_step

LOGIN_BODY_LIMIT = 64 * 1024


class SyncRoutes:
    def __init__(self, settings: Settings, registry: Registry, logins: LoginGate) -> None:
        self.settings = settings
        self.registry = registry
        self.logins = logins
        self.retention = retention_of(settings)
        check_meta = partial(meta.meta, max_collection_bytes=settings.max_decompressed_bytes)
        self.methods: dict[str, Step] = {
            "meta": Step(check_meta, meta.runs_inline, small_body=True),
            **STEPS,
            "abort": Step(meta.abort, small_body=True),
            "download": Step(full.download, small_body=True),
        }
        self.upload_limit = settings.max_decompressed_bytes - 1  # upstream refuses len >= 3 x MAX

    async def handle(self, envelope: Envelope, method: str, record: RequestLog) -> Response:
        if method == "hostKey":
            return await self._login(envelope, record)
        step = self.methods.get(method)
        if step is None and method != "upload":
            raise BadRequest(f"unknown method sync/{method}")
        limit = self.upload_limit if step is None else body_limit(step, self.settings)
        await envelope.receive(limit)
        if method == "meta":
            envelope.client_from_meta()
        state = authenticate(self.registry, envelope, record)
        still_valid = key_still_valid(self.registry, envelope)
        if step is None:
            return await self._upload(envelope, state, still_valid, record)
        return await run_step(envelope, method, step, state, limit, still_valid)

    async def _login(self, envelope: Envelope, record: RequestLog) -> Response:
        await envelope.receive(LOGIN_BODY_LIMIT)
        with await decode_capped(envelope, "hostKey", LOGIN_BODY_LIMIT) as sync_request:
            name, password = login.credentials(sync_request)
        record.user, record.client = name, envelope.client_version
        key = await self.logins.login(name, password, envelope.client_version, record.ip)
        return await framed_response(login.reply(key), envelope.compressed)

    async def _upload(
        self, envelope: Envelope, state: UserState, still_valid: Callable[[], None], record: RequestLog
    ) -> Response:
        """Decompress into a temp file in the user's folder, check it (a schema-11 file is
        upgraded there) outside the user's lock, then install it under the lock."""
        compressed = envelope.compressed
        await state.ensure_prepared()  # (a user added while the server runs may not be yet)
        target = state.folder.new_upload_file()
        path = Path(target.name)
        limit = self.upload_limit
        try:
            upload = await envelope.decode("upload", limit, target)
        except PayloadTooLarge:
            return await self._refused(full.refuse_too_large(path, limit), compressed, record)
        except BaseException:
            full.discard_upload(path)
            raise
        finally:
            target.close()
        problem = await anyio.to_thread.run_sync(full.check_upload, path, upload.body_size)
        if problem:
            return await self._refused(full.refuse_corrupt(problem, path), compressed, record)
        try:
            reply = await state.locked(guarded(full.install_upload, still_valid), state, path)
        except BaseException:  # e.g. the user was removed meanwhile (403)
            full.discard_upload(path)
            raise
        if reply.refused:
            return await self._refused(reply, compressed, record)
        # The replaced collection, kept as a pending snapshot, is compressed after the reply.
        return await framed_response(reply, compressed, BackgroundTask(settle, state, self.retention))

    @staticmethod
    async def _refused(reply: Reply, compressed: bool, record: RequestLog) -> Response:
        """An upload refused with a message the client shows: logged and counted as such."""
        record.refused, record.reason = reply.refused, reply.reason
        return await framed_response(reply, compressed)
