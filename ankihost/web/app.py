"""The ASGI application: routing by path suffix, the one error-to-response mapping, request logs.

Routes are matched by their suffix (`…/sync/<method>`, `…/msync/<method>`, `…/health`), so the
server works behind a reverse-proxy subpath and with or without a trailing slash.
"""

from __future__ import annotations

import logging
import re
import time
from typing import Any

import anyio
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.types import Receive, Scope, Send

from ankihost.config import IP_HEADERS, Settings
from ankihost.errors import SyncError
from ankihost.registry import Registry
from ankihost.web import sync_routes

log = logging.getLogger("ankihost.request")

_ROUTE = re.compile(r"(?:^|/)(sync|msync)/([^/]+)/?$")
_HEALTH = re.compile(r"(?:^|/)health/?$")


def error_response(error: SyncError) -> Response:
    """The only place an error becomes a response: status, and the status as plain text."""
    return PlainTextResponse(f"{error.status}", status_code=error.status)


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


SHUTDOWN_WAIT_SECS = 30
LOGIN_THREADS = 4


async def close_all(registry: Registry) -> None:
    """On shutdown, roll back open sync sessions and close every database, each under its
    user's lock so no step still running in a worker thread shares a connection with us."""
    for state in registry.all():
        with anyio.move_on_after(SHUTDOWN_WAIT_SECS) as waited:
            await state.locked(registry.close_user, state)
        if waited.cancelled_caught:
            log.warning("%s was still busy at shutdown; SQLite rolls back on next start",
                        state.user.name)


class SyncApp:
    """The ASGI application: a plain callable, with no routing table or middleware stack.

    Every request is one of three suffixes, so a regex replaces a router, and `_logged`
    already turns every exception into a response; Starlette's Router and middleware would
    add ~0.2 ms per request, which adds up over the ~16 requests of a normal sync. Starlette's
    `Request` and `Response` are still used: they are thin wrappers over the ASGI messages.
    """

    def __init__(self, settings: Settings, registry: Registry) -> None:
        self.settings = settings
        self.registry = registry
        # Password checks (PBKDF2, ~0.3 s each) share a few threads of their own, so a burst
        # of logins can never take the worker threads that sync steps of logged-in users need.
        self.login_slots = anyio.CapacityLimiter(LOGIN_THREADS)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            request = Request(scope, receive)
            response = await self.handle(request)
            await response(scope, receive, send)
        elif scope["type"] == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await close_all(self.registry)
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def handle(self, request: Request) -> Response:
        path = request.scope["path"]
        if _HEALTH.search(path):
            return _health(request)
        match = _ROUTE.search(path)
        if match is None:
            return Response(status_code=404)
        area, method = match.groups()
        allowed = ("GET", "POST") if (area, method) == ("msync", "begin") else ("POST",)
        if request.method not in allowed:
            return Response(status_code=405, headers={"Allow": ",".join(allowed)})
        return await self._logged(request, area, method)

    async def _logged(self, request: Request, area: str, method: str) -> Response:
        started = time.monotonic()
        info: dict[str, Any] = {"user": "-", "client": "-"}
        status = 500
        try:
            response = await sync_routes.dispatch(
                request, area, method, self.settings, self.registry, info, self.login_slots
            )
            status = response.status_code
            return response
        except SyncError as error:
            status = error.status
            _log_error(error, area, method)
            return error_response(error)
        except Exception:
            log.exception("internal error in /%s/%s", area, method)
            return error_response(SyncError("internal error"))
        finally:
            log.info(
                "%s /%s/%s user=%s client=%s status=%d ms=%d ip=%s", request.method, area,
                method, info["user"], info["client"], status,
                (time.monotonic() - started) * 1000, client_ip(request, self.settings),
            )


def _log_error(error: SyncError, area: str, method: str) -> None:
    if error.status >= 500:
        log.error("/%s/%s failed: %s", area, method, error.reason, exc_info=error)
    else:
        log.info("/%s/%s refused (%d): %s", area, method, error.status, error.reason)


def _health(request: Request) -> Response:
    if request.method not in ("GET", "HEAD"):
        return Response(status_code=405, headers={"Allow": "GET,HEAD"})
    return Response(status_code=200)

