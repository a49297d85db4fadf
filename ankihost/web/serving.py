"""Running the listeners: the sync listener and, when turned on, the admin listener (admin pages
and /metrics), both in one event loop, since they share every piece of the server's state.

The admin socket is bound (`bind_admin`) before the data folder is touched, so a port in use
stops start-up with a clear message. The sync listener (`web/listener.py`) owns the signals
and the app's lifespan; the admin listener is served beside it and stops when it does.
"""

from __future__ import annotations

import ipaddress
import logging
import socket

from ankihost.config import ConfigError, Settings

log = logging.getLogger("ankihost")


def bind_admin(settings: Settings) -> socket.socket:
    """The admin listener's socket; ConfigError naming the settings if it cannot be had."""
    family = socket.AF_INET6 if ipaddress.ip_address(settings.admin_host).version == 6 else socket.AF_INET
    try:
        sock = socket.create_server((settings.admin_host, settings.admin_port), family=family, backlog=128)
    except OSError as exc:
        raise ConfigError(f"ANKIHOST_ADMIN_HOST/ANKIHOST_ADMIN_PORT: cannot listen on "
                          f"{settings.admin_host}:{settings.admin_port}: {exc}") from None
    sock.setblocking(False)
    return sock


def announce(settings: Settings, sock: socket.socket) -> None:
    port = sock.getsockname()[1]
    what = "admin pages and /metrics" if settings.admin_password is not None else "/metrics"
    log.info("%s on http://%s:%d/", what, settings.admin_host, port)
    if not ipaddress.ip_address(settings.admin_host).is_loopback and settings.metrics_token is None:
        log.warning("/metrics is open to anyone who reaches %s:%d; set ANKIHOST_METRICS_TOKEN to ask "
                    "for a token", settings.admin_host, port)
