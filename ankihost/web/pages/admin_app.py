"""The admin listener's ASGI app (ANKIHOST_ADMIN_HOST:ANKIHOST_ADMIN_PORT): `/metrics`, and the
admin pages when ANKIHOST_ADMIN_PASSWORD is set.

Pages are found by the last part of the path, so the listener also works behind a proxy
subpath. `/metrics` needs no session (a Prometheus scraper cannot sign in): it is open on this
listener, which listens on the loopback address unless told otherwise, or asks for
`Authorization: Bearer <ANKIHOST_METRICS_TOKEN>` when that is set. Requests are logged and
counted like the sync listener's, as `/admin/<page>`; scrapes are counted but not logged.
"""

from __future__ import annotations

import logging
import re

import anyio
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, Response
from starlette.types import Receive, Scope, Send

from ankihost.admin.operations import AdminContext
from ankihost.config import Settings
from ankihost.log import RecentErrors
from ankihost.web.metrics import Metrics
from ankihost.web.pages.admin import AdminPages
from ankihost.web.pages.admin_signin import AdminGate, AdminPassword
from ankihost.web.pages.render import SECURITY_HEADERS
from ankihost.web.pages.sessions import same_token
from ankihost.web.request_log import RequestLog, counting, sent_bytes

_PAGE = re.compile(r"(?:^|/)((?:static/)?[A-Za-z0-9._-]*)$")
METRICS = "metrics"
PAGES_OFF = ("<!doctype html><title>Admin pages are off</title><p>The admin pages are off: set "
             "ANKIHOST_ADMIN_PASSWORD and restart the server to turn them on.")


class AdminApp:
    def __init__(self, settings: Settings, context: AdminContext, metrics: Metrics, started: float) -> None:
        self.metrics = metrics
        self.token = settings.metrics_token
        self.recent = RecentErrors()
        self.pages: AdminPages | None = None
        if settings.admin_password is not None:
            gate = AdminGate(AdminPassword(settings.admin_password))
            self.pages = AdminPages(context, gate, self.recent, started)
            logging.getLogger().addHandler(self.recent)

    def close(self) -> None:
        logging.getLogger().removeHandler(self.recent)

    def page_names(self) -> list[str]:
        return [METRICS, *(self.pages.routes if self.pages is not None else ())]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            response = await self.handle(Request(scope, receive))
            await response(scope, receive, send)
        elif scope["type"] == "lifespan":  # the sync app's lifespan runs the server's
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})

    async def handle(self, request: Request) -> Response:
        match = _PAGE.search(request.scope["path"])
        page = match[1] if match else "?"
        peer = request.client.host if request.client else "-"
        record = RequestLog(request.method, f"/admin/{page}", peer, metrics=self.metrics)
        request = counting(request, record)
        try:
            if page == METRICS:
                record.quiet = True
                response = await self._metrics(request)
            elif self.pages is None:
                response = HTMLResponse(PAGES_OFF, 404, headers=SECURITY_HEADERS)
            else:
                response = await self.pages.handle(request, page, record, peer)
            record.status = response.status_code
            record.bytes_out = sent_bytes(response)
            return response
        finally:
            record.write()

    async def _metrics(self, request: Request) -> Response:
        if request.method not in ("GET", "HEAD"):
            return PlainTextResponse("GET only\n", 405, headers={"Allow": "GET, HEAD"})
        if self.token is not None:
            given = request.headers.get("authorization", "")
            scheme, _, credential = given.partition(" ")
            if scheme.lower() != "bearer" or not same_token(credential.strip(), self.token.value):
                return PlainTextResponse("a bearer token is needed (ANKIHOST_METRICS_TOKEN)\n", 401,
                                         headers={"WWW-Authenticate": 'Bearer realm="ankihost metrics"'})
        body = await anyio.to_thread.run_sync(self.metrics.exposition)
        # the classic text format (every name here is a legacy name, so the 1.0.0 format would be
        # the same text): Prometheus 2 and 3 and other scrapers all read it
        return Response(body, media_type=CONTENT_TYPE_PLAIN_0_0_4, headers={"Cache-Control": "no-store"})
