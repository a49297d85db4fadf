"""Running the listeners: the sync listener and, when turned on, the admin listener (admin pages
and /metrics), both in one event loop, since they share every piece of the server's state.

The admin socket is bound (`bind_admin`) before the data folder is touched, so a port in use
stops start-up with a clear message. The sync server owns the signals and the app's lifespan; the admin server
stops when the sync server does.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
from collections.abc import Iterator

import uvicorn

from ankihost.config import ConfigError, Settings
from ankihost.web.app import SyncApp

log = logging.getLogger("ankihost")
SYNC_GRACE_SECS = 10
ADMIN_GRACE_SECS = 2


def run(app: SyncApp, settings: Settings, admin_socket: socket.socket | None) -> None:
    """Serve until stopped; `admin_socket` (from `bind_admin`) when the admin listener is on."""
    # proxy_headers=False: SYNC_IP_HEADER alone says which header, if any, names the client
    # (uvicorn would otherwise trust X-Forwarded-For from 127.0.0.1 on its own).
    config = uvicorn.Config(app, host=settings.host, port=settings.port, log_config=None,
                            timeout_graceful_shutdown=SYNC_GRACE_SECS, proxy_headers=False)
    sync_server = uvicorn.Server(config)
    if app.admin_app is None or admin_socket is None:
        sync_server.run()
        return
    admin_config = uvicorn.Config(app.admin_app, log_config=None, lifespan="off", proxy_headers=False,
                                  timeout_graceful_shutdown=ADMIN_GRACE_SECS)
    admin_server = _AdminServer(admin_config, sync_server)
    _announce(settings, admin_socket)
    with asyncio.Runner(loop_factory=config.get_loop_factory()) as runner:
        runner.run(_serve_both(sync_server, admin_server, admin_socket))


def bind_admin(settings: Settings) -> socket.socket:
    """The admin listener's socket; ConfigError naming the settings if it cannot be had."""
    family = socket.AF_INET6 if ipaddress.ip_address(settings.admin_host).version == 6 else socket.AF_INET
    try:
        return socket.create_server((settings.admin_host, settings.admin_port), family=family)
    except OSError as exc:
        raise ConfigError(f"ANKIHOST_ADMIN_HOST/ANKIHOST_ADMIN_PORT: cannot listen on "
                          f"{settings.admin_host}:{settings.admin_port}: {exc}") from None


def _announce(settings: Settings, sock: socket.socket) -> None:
    port = sock.getsockname()[1]
    what = "admin pages and /metrics" if settings.admin_password is not None else "/metrics"
    log.info("%s on http://%s:%d/", what, settings.admin_host, port)
    if not ipaddress.ip_address(settings.admin_host).is_loopback and settings.metrics_token is None:
        log.warning("/metrics is open to anyone who reaches %s:%d; set ANKIHOST_METRICS_TOKEN to ask "
                    "for a token", settings.admin_host, port)


class _AdminServer(uvicorn.Server):
    """Leaves the signals to the sync server, and stops when it does."""

    def __init__(self, config: uvicorn.Config, sync_server: uvicorn.Server) -> None:
        super().__init__(config)
        self.sync_server = sync_server

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    async def on_tick(self, counter: int) -> bool:
        return self.sync_server.should_exit or await super().on_tick(counter)


async def _serve_both(sync_server: uvicorn.Server, admin_server: uvicorn.Server, sock: socket.socket) -> None:
    admin = asyncio.create_task(admin_server.serve(sockets=[sock]))
    try:
        await sync_server.serve()
    finally:
        admin_server.should_exit = True
        await admin
