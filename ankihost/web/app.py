"""The ASGI application: routing by path suffix, the one error-to-response mapping, request logs.

Routes are matched by their suffix (`…/sync/<method>`, `…/msync/<method>`, `…/health`), so the
server works behind a reverse-proxy subpath and with or without a trailing slash.
"""

from __future__ import annotations

import logging
import re
import time
from contextlib import asynccontextmanager
from typing import Any

import anyio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

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


async def close_all(registry: Registry) -> None:
    """On shutdown, roll back open sync sessions and close every database, each under its
    user's lock so no step still running in a worker thread shares a connection with us."""
    for state in registry.all():
        with anyio.move_on_after(SHUTDOWN_WAIT_SECS) as waited:
            async with state.lock:
                await anyio.to_thread.run_sync(registry.close_user, state)
        if waited.cancelled_caught:
            log.warning("%s was still busy at shutdown; SQLite rolls back on next start",
                        state.user.name)


def create_app(settings: Settings, registry: Registry) -> Starlette:
    handler = _Handler(settings, registry)

    async def endpoint(request: Request) -> Response:
        return await handler.handle(request)

    @asynccontextmanager
    async def lifespan(app: Starlette):  # type: ignore[no-untyped-def]
        yield
        await close_all(registry)

    app = Starlette(
        routes=[Route("/{path:path}", endpoint, methods=["GET", "HEAD", "POST", "PUT", "DELETE"])],
        lifespan=lifespan,
    )
    app.state.registry = registry
    return app


class _Handler:
    def __init__(self, settings: Settings, registry: Registry) -> None:
        self.settings = settings
        self.registry = registry

    async def handle(self, request: Request) -> Response:
        path = request.url.path
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
                request, area, method, self.settings, self.registry, info
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

