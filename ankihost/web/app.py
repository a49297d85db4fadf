"""The ASGI application: routing by path suffix, the one error-to-response mapping, request logs.

Routes are matched by their suffix (`…/sync/<method>`, `…/msync/<method>`, `…/health`,
`…/account/<page>`), so the server works behind a reverse-proxy subpath and with or without a
trailing slash. A request reads top to bottom: `handle` picks the envelope (protocol 11's
header, or `legacy`'s multipart form or query) and the surface (`sync_routes`, `media_routes`,
or the account pages, which answer with HTML pages of their own), which authenticates and runs
the method's step; every refusal is a `SyncError` that `error_response` turns into the
response, and `RequestLog` writes one line (and counts the request in the metrics) when it
ends. The admin listener's app is made here too (`admin_app`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time

import anyio
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.types import Receive, Scope, Send

from ankihost import __version__
from ankihost.admin.channel import ChannelServer
from ankihost.admin.lock import DataFolderLock
from ankihost.admin.operations import AdminContext, operations
from ankihost.config import IP_HEADERS, Settings
from ankihost.errors import MethodNotAllowed, NotFound, SyncError
from ankihost.log import printable
from ankihost.media.handlers import METHODS as MEDIA_METHODS
from ankihost.memory import release_memory, release_memory_soon
from ankihost.protocol.header import HEADER_NAME, parse_header
from ankihost.registry import Registry
from ankihost.snapshots.keeper import SnapshotKeeper
from ankihost.snapshots.retention import retention_of
from ankihost.web import legacy
from ankihost.web.envelope import Envelope, HeaderEnvelope
from ankihost.web.logins import LoginGate
from ankihost.web.media_routes import MediaRoutes
from ankihost.web.metrics import Metrics, endpoints
from ankihost.web.pages.account import AccountPages, account_page
from ankihost.web.pages.admin_app import AdminApp
from ankihost.web.request_log import RequestLog, counting, counting_send, sent_bytes
from ankihost.web.sync_routes import SyncRoutes

log = logging.getLogger("ankihost.request")

_ROUTE = re.compile(r"(?:^|/)(sync|msync)/([^/]+)/?$")
_HEALTH = re.compile(r"(?:^|/)health/?$")
SHUTDOWN_WAIT_SECS = 30
VERSION_HEADER = "X-Ankihost-Version"
# How often what devices and users did is written to the account store.
ACTIVITY_FLUSH_SECS = 2
# How long anyio keeps an idle worker thread (anyio's own constant) before it ends.
WORKER_THREAD_IDLE_SECS = 10
# A sync session with no request for this long was given up by its client (clients time out
# after 60 s): the idle closer rolls it back like an idle user's databases.
ABANDONED_SESSION_SECS = 600
# How often every user's media trash is checked for files past ANKIHOST_MEDIA_TRASH_DAYS.
MEDIA_TRASH_PURGE_SECS = 3600
# A user's media log is checkpointed once their media has not been used for this long.
MEDIA_SETTLE_SECS = 1.0


def error_response(error: SyncError) -> Response:
    """The only place an error becomes a response of the sync surface: the status, and the
    status as plain text (clients never read error bodies)."""
    headers = {"Allow": ",".join(error.allow)} if isinstance(error, MethodNotAllowed) else None
    return PlainTextResponse(f"{error.status}", status_code=error.status, headers=headers)


def client_ip(request: Request, settings: Settings) -> str:
    """The address for the log, from SYNC_IP_HEADER, falling back to the socket peer."""
    peer = request.client.host if request.client else "-"
    header = IP_HEADERS[settings.ip_header]
    value = request.headers.get(header) if header else None
    if not value:
        return peer
    if header == "x-forwarded-for":
        return value.rsplit(",", 1)[-1].strip() or peer
    return value.split(":")[0].strip() if header == "cloudfront-viewer-address" else value.strip()


async def close_all(registry: Registry) -> None:
    """On shutdown, roll back open sync sessions and close every database, each under its
    user's lock so no step still running in a worker thread shares a connection with us."""
    for state in registry.all():
        with anyio.move_on_after(SHUTDOWN_WAIT_SECS) as waited:
            await state.locked(state.close)
        if waited.cancelled_caught:
            log.warning("%s was still busy at shutdown; SQLite rolls back on next start", state.name)


async def settle_idle_media(registry: Registry) -> None:
    """Checkpoint the media log of every user whose media was not used for MEDIA_SETTLE_SECS
    (until then the log covers their batches), under their lock."""
    for state in registry.all():
        waited = state.media.unsettled_for()
        if waited is None or waited < MEDIA_SETTLE_SECS or state.removed:
            continue
        try:
            await state.locked(state.media.settle)
        except Exception:
            log.exception("could not checkpoint the media log of %s", state.name)


async def purge_media_trash(registry: Registry) -> None:
    """Purge every prepared user's expired media trash, each under their lock for as long as
    that takes (preparing a user purges it too)."""
    for state in registry.all():
        if not state.prepared or state.removed:
            continue
        try:
            await state.locked(state.media.purge_trash)
        except Exception:
            log.exception("could not purge the media trash of %s", state.name)


class SyncApp:
    """The ASGI application: a plain callable, with no routing table or middleware stack.

    Every request is one of three suffixes, so a regex replaces a router, and `handle`
    already turns every exception into a response; Starlette's Router and middleware would
    add ~0.2 ms per request, which adds up over the ~16 requests of a normal sync. Starlette's
    `Request` and `Response` are still used: they are thin wrappers over the ASGI messages.
    """

    def __init__(
        self, settings: Settings, admin: AdminContext, lock: DataFolderLock | None = None
    ) -> None:
        self.settings = settings
        self.admin = admin
        self.registry = admin.registry
        self.accounts = admin.directory
        self.lock = lock
        self.logins = LoginGate(self.accounts)
        self.sync_routes = SyncRoutes(settings, self.registry, self.logins)
        self.media_routes = MediaRoutes(settings, self.registry)
        self.channel = ChannelServer(admin.folder, admin, operations())
        self.snapshots = SnapshotKeeper(self.registry, retention_of(settings),
                                        settings.snapshot_interval_hours)
        self.started = time.monotonic()
        self.account_pages = AccountPages(admin, self.logins)
        self.metrics = Metrics(settings.metrics_per_user, lambda name: self.accounts.by_name(name) is not None)
        self.metrics.watch(self.accounts, self.registry, admin.folder)
        # the admin listener's app (admin pages, /metrics); None when neither is turned on
        self.admin_app = AdminApp(settings, admin, self.metrics, self.started) if settings.admin_listener else None
        self.metrics.name_endpoints(self._endpoints())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            request = Request(scope, receive)
            response, record = await self._handle(request)
            if record is not None and "content-length" not in response.headers:
                send = counting_send(send, record)  # a streamed download
            await response(scope, receive, send)
        elif scope["type"] == "lifespan":
            await self._lifespan(receive, send)

    def _endpoints(self) -> set[str]:
        """Every request target that is a route of ours: the metrics' endpoint labels."""
        admin_pages = self.admin_app.page_names() if self.admin_app is not None else []
        return endpoints(
            [*self.sync_routes.methods, "hostKey", "upload"], MEDIA_METHODS,
            [*(f"/account/{p}" for p in self.account_pages.routes), *(f"/admin/{p}" for p in admin_pages)],
        )

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        background: list[asyncio.Task[None]] = []
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await self.channel.start()
                background = [asyncio.create_task(self._flush_activity()),
                              asyncio.create_task(self.snapshots.run()),
                              asyncio.create_task(self._media_upkeep())]
                if self.settings.idle_close_secs:
                    background.append(asyncio.create_task(self._close_idle_users()))
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.channel.close()
                if self.admin_app is not None:
                    self.admin_app.close()
                for task in background:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
                await close_all(self.registry)
                await anyio.to_thread.run_sync(self.admin.close)
                if self.lock is not None:
                    self.lock.release()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _close_idle_users(self) -> None:
        idle = self.settings.idle_close_secs
        while True:
            await asyncio.sleep(max(1.0, idle / 4))
            try:
                if closed := await self.registry.close_idle(idle, ABANDONED_SESSION_SECS):
                    log.debug("closed the databases of idle users: %s", ", ".join(closed))
                    await anyio.to_thread.run_sync(release_memory)
                    # and once the idle worker threads are gone, with what they held
                    release_memory_soon(WORKER_THREAD_IDLE_SECS + 2)
            except Exception:
                log.exception("closing idle users' databases failed")

    async def _flush_activity(self) -> None:
        while True:
            await asyncio.sleep(ACTIVITY_FLUSH_SECS)
            try:
                await anyio.to_thread.run_sync(self.accounts.flush)
            except Exception:
                log.exception("could not write device activity to the account store")

    async def _media_upkeep(self) -> None:
        """Checkpoint the media logs of users gone idle; purge expired trash once an hour."""
        purged = time.monotonic()
        while True:
            await asyncio.sleep(MEDIA_SETTLE_SECS)
            await settle_idle_media(self.registry)
            if time.monotonic() - purged >= MEDIA_TRASH_PURGE_SECS:
                purged = time.monotonic()
                await purge_media_trash(self.registry)

    async def _handle(self, request: Request) -> tuple[Response, RequestLog | None]:
        """The response, and the request's log record (None for /health)."""
        path = request.scope["path"]
        if _HEALTH.search(path):
            return _health(request), None
        match = _ROUTE.search(path)
        if match is None and (page := account_page(path)) is not None:
            return await self._account_page(request, page)
        target = f"/{match[1]}/{match[2]}" if match else path
        record = RequestLog(request.method, target, client_ip(request, self.settings), metrics=self.metrics)
        request = counting(request, record)
        try:
            response = await self._route(request, match, record)
            record.status = response.status_code
            record.bytes_out = sent_bytes(response)
            return response, record
        except SyncError as error:
            record.status, record.reason = error.status, error.reason
            if error.status >= 500:
                log.error("%s failed: %s", printable(target), printable(error.reason), exc_info=error)
            return error_response(error), record
        except Exception:
            log.exception("internal error in %s", printable(target))
            record.reason = "internal error"
            return error_response(SyncError("internal error")), record
        finally:
            record.write()
            if match and match[1] == "sync" and match[2] != "hostKey" and record.user != "-":
                result = "ok" if record.status == 200 else f"{match[2]} failed ({record.status})"
                self.accounts.synced(record.user, result, record.client, record.ip)

    async def _account_page(self, request: Request, page: str) -> tuple[Response, RequestLog]:
        """A page of `…/account/`: HTML, with the pages' own error pages (never raises)."""
        ip = client_ip(request, self.settings)
        record = RequestLog(request.method, f"/account/{page}", ip, metrics=self.metrics)
        request = counting(request, record)
        try:
            response = await self.account_pages.handle(request, page, record, ip)
            record.status = response.status_code
            record.bytes_out = sent_bytes(response)
            return response, record
        finally:
            record.write()

    async def _route(
        self, request: Request, match: re.Match[str] | None, record: RequestLog
    ) -> Response:
        if match is None:
            raise NotFound("no such route")
        area, method = match.groups()
        allowed = ("GET", "POST") if (area, method) == ("msync", "begin") else ("POST",)
        if request.method not in allowed:
            raise MethodNotAllowed(allowed)
        envelope = self._envelope(request)
        record.client = envelope.client_version or "-"
        routes = self.media_routes if area == "msync" else self.sync_routes
        try:
            return await routes.handle(envelope, method, record)
        finally:
            envelope.close()

    def _envelope(self, request: Request) -> Envelope:
        """Protocol 11 has the anki-sync header; protocols 8–10 send a multipart form, or
        `GET /msync/begin?k=…&v=…` (the only GET route)."""
        if request.method == "GET":
            return legacy.QueryEnvelope(request)
        header_value = request.headers.get(HEADER_NAME)
        if header_value is None:
            return legacy.MultipartEnvelope(request, self.settings.max_payload_bytes)
        return HeaderEnvelope(request, parse_header(header_value))


def _health(request: Request) -> Response:
    """200 with an empty body, as the official server answers; the version in a header."""
    if request.method not in ("GET", "HEAD"):
        return error_response(MethodNotAllowed(("GET", "HEAD")))
    return Response(status_code=200, headers={VERSION_HEADER: __version__})
