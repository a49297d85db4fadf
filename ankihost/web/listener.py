"""The HTTP(S) listener that serves the ASGI app: `run(app, host, port, limits, tls)`.

It owns the socket and everything about connections: the limits of `ListenerLimits`, the
file-descriptor soft limit (raised to the hard limit), TLS from `ankihost.tls.context` with
renewed certificates picked up while running, the ASGI lifespan, and graceful shutdown on
SIGTERM/SIGINT (no new connections; requests under way get `shutdown_grace` seconds; then the
app's lifespan shutdown). The HTTP/1.1 protocol itself is in `ankihost.web.http1`.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import resource
import signal
import socket
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ankihost.config import Settings
from ankihost.web.cycle import App
from ankihost.web.http1 import Connection, Hub
from ankihost.web.tlsport import TlsPort

if TYPE_CHECKING:
    from ankihost.tls.context import CertificateStore, TlsFiles

log = logging.getLogger("ankihost.listener")

# Limits that are named constants only.
MAX_URL_BYTES = 8 * 1024  # request target; longer: 414
MAX_HEAD_BYTES = 32 * 1024  # request line and header fields together; larger: 431
MAX_HEADER_COUNT = 100  # header fields; more: 431
LISTEN_BACKLOG = 2048
FD_RESERVE = 64  # descriptors kept free of connections (databases, logs, temp files)
TICK_SECS = 1.0  # how often timeouts are checked

# Tunable limits: the defaults of their ANKIHOST_… settings (config.py).
MAX_CONNECTIONS = 1000
HEADER_TIMEOUT_SECS = 20.0
BODY_IDLE_TIMEOUT_SECS = 90.0
KEEP_ALIVE_TIMEOUT_SECS = 60.0
SHUTDOWN_GRACE_SECS = 10.0


@dataclass(frozen=True)
class ListenerLimits:
    """Limits on connections and requests; see the constants above for units and defaults."""

    max_connections: int = MAX_CONNECTIONS
    header_timeout: float = HEADER_TIMEOUT_SECS
    body_idle_timeout: float = BODY_IDLE_TIMEOUT_SECS
    keep_alive_timeout: float = KEEP_ALIVE_TIMEOUT_SECS
    shutdown_grace: float = SHUTDOWN_GRACE_SECS
    max_url_bytes: int = MAX_URL_BYTES
    max_head_bytes: int = MAX_HEAD_BYTES
    max_header_count: int = MAX_HEADER_COUNT

    @classmethod
    def from_settings(cls, settings: Settings) -> ListenerLimits:
        """The tunable limits, from their ANKIHOST_… settings (declared in config.py)."""
        return cls(
            max_connections=settings.max_connections, header_timeout=settings.header_timeout,
            body_idle_timeout=settings.body_idle_timeout,
            keep_alive_timeout=settings.keepalive_timeout, shutdown_grace=settings.shutdown_grace,
        )


class ListenError(Exception):
    """The address cannot be listened on (in use, not local, no permission)."""


def raise_fd_limit() -> int:
    """Raise the soft limit on open files to the hard limit; returns the soft limit in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if target > soft:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            log.info("open-file limit raised from %d to %d", soft, target)
            soft = target
    return soft


def connection_cap(limits: ListenerLimits, fd_limit: int) -> int:
    """`limits.max_connections`, lowered if the file-descriptor limit could not hold them."""
    return max(1, min(limits.max_connections, fd_limit - FD_RESERVE))


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6 and ipaddress.ip_address(host).is_unspecified:
            # "::" takes IPv4 clients too, as the official server does (not IPv6 alone)
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind((host, port))
        sock.listen(LISTEN_BACKLOG)
    except OSError as exc:
        sock.close()
        raise ListenError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.setblocking(False)
    return sock


def run(app: App, host: str, port: int, limits: ListenerLimits, tls: TlsFiles | None = None,
        on_listening: Callable[[str], None] | None = None,
        also: tuple[App, socket.socket] | None = None) -> None:
    """Serve `app` on host:port until SIGTERM/SIGINT, then shut down gracefully.

    `tls` is an `ankihost.tls.context.TlsFiles` (or None for plain HTTP); bad files raise a
    `ConfigError` naming the setting before anything listens. `on_listening(url)` is called once
    the socket is bound (default: log "listening on URL"). Raises `ListenError` if the address
    cannot be bound. `also` is a second app on a socket bound already (the admin listener),
    served in the same event loop over plain HTTP, without a lifespan, until `app` stops."""
    store = None
    if tls is not None:
        from ankihost.tls.context import CertificateStore

        store = CertificateStore(tls)
        log.info("TLS certificate: %s", store.info.describe())
    fd_limit = raise_fd_limit()
    cap = connection_cap(limits, fd_limit)
    if cap < limits.max_connections:
        log.warning("at most %d connections: the open-file limit is %d", cap, fd_limit)
        limits = ListenerLimits(**{**limits.__dict__, "max_connections": cap})
    sock = bind(host, port)
    try:
        _event_loop_runner()(Listener(app, limits, store, also).serve(sock, on_listening))
    finally:
        sock.close()


def _event_loop_runner() -> Callable[[Any], Any]:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is installed wherever it builds
        return asyncio.run
    return uvloop.run


class Listener:
    """One listening socket, its connections, and the app's lifespan."""

    def __init__(self, app: App, limits: ListenerLimits, store: CertificateStore | None,
                 also: tuple[App, socket.socket] | None = None) -> None:
        self.app = app
        self.limits = limits
        self.store = store
        self.also = also
        self.stop = asyncio.Event()
        self.forced = False

    async def serve(self, sock: socket.socket, on_listening: Callable[[str], None] | None) -> None:
        loop = asyncio.get_running_loop()
        hub = Hub(self.app, self.limits, "https" if self.store else "http")
        lifespan = Lifespan(self.app)
        await lifespan.startup()
        store = self.store
        factory: Callable[[], asyncio.Protocol] = (
            (lambda: Connection(hub)) if store is None else (lambda: TlsPort(hub, store.context)))
        server = await loop.create_server(factory, sock=sock, backlog=LISTEN_BACKLOG)
        servers = [(server, hub)]
        if self.also is not None:
            second_app, second_sock = self.also
            second = Hub(second_app, self.limits, "http")
            servers.append((await loop.create_server(
                lambda: Connection(second), sock=second_sock, backlog=LISTEN_BACKLOG), second))
        bound = sock.getsockname()
        url = f"{hub.scheme}://{_host_text(bound[0])}:{bound[1]}"
        (on_listening or (lambda u: log.info("listening on %s", u)))(url)
        self._install_signals(loop)
        ticker = loop.create_task(self._tick([h for _, h in servers]))
        watcher = loop.create_task(self.store.watch()) if self.store else None
        try:
            await self.stop.wait()
        finally:
            await asyncio.gather(*(self._shut_down(s, h) for s, h in servers))
            for task in (ticker, watcher):
                if task is not None:
                    task.cancel()
            await lifespan.shutdown()
            log.info("shutdown complete")

    def _install_signals(self, loop: asyncio.AbstractEventLoop) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_stop_signal, sig)
        if self.store is not None and hasattr(signal, "SIGHUP"):
            loop.add_signal_handler(signal.SIGHUP, self.store.check, True)

    def _on_stop_signal(self, sig: int) -> None:
        if self.stop.is_set():
            log.warning("second %s: stopping now", signal.Signals(sig).name)
            self.forced = True
        else:
            log.info("%s: finishing requests under way, then stopping", signal.Signals(sig).name)
        self.stop.set()

    async def _tick(self, hubs: list[Hub]) -> None:
        while True:
            await asyncio.sleep(TICK_SECS)
            for hub in hubs:
                hub.tick()

    async def _shut_down(self, server: asyncio.AbstractServer, hub: Hub) -> None:
        """Stop accepting, close idle connections, give requests under way the grace period,
        then cut off what is left."""
        hub.closing = True
        server.close()
        for connection in list(hub.connections):
            if connection.cycle is None and not connection.queued:
                connection.close()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.limits.shutdown_grace
        while (hub.tasks or hub.connections) and loop.time() < deadline and not self.forced:
            await asyncio.sleep(0.05)
            hub.clock = loop.time()
        if hub.tasks:
            log.warning("%d request(s) still running after %g s: cancelled", len(hub.tasks),
                        self.limits.shutdown_grace)
        for task in list(hub.tasks):
            task.cancel()
        for connection in list(hub.connections):
            connection.abort()
        if hub.tasks:
            await asyncio.wait(list(hub.tasks), timeout=1.0)


def _host_text(host: str) -> str:
    return f"[{host}]" if ":" in host else host


class Lifespan:
    """The ASGI lifespan protocol: startup before listening, shutdown after the last request.
    The apps served here all speak it, so an app that fails or ends during start-up stops the
    server with its error (never serving without what start-up sets up)."""

    def __init__(self, app: App) -> None:
        self.app = app
        self.inbox: asyncio.Queue[MutableMapping[str, Any]] = asyncio.Queue()
        self.outbox: asyncio.Queue[MutableMapping[str, Any]] = asyncio.Queue()
        self.task: asyncio.Task[None] | None = None

    async def startup(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._main())
        await self.inbox.put({"type": "lifespan.startup"})
        reply = await self._reply()
        if reply.get("type") == "lifespan.startup.failed":
            raise RuntimeError(f"the app failed to start: {reply.get('message', '')}")
        if not reply:  # the app raised, or returned, before it said it had started
            self.task.result()
            raise RuntimeError("the app ended during its start-up")

    async def shutdown(self) -> None:
        if self.task is None or self.task.done():
            return
        await self.inbox.put({"type": "lifespan.shutdown"})
        await self._reply()
        await self.task

    async def _reply(self) -> MutableMapping[str, Any]:
        assert self.task is not None
        getter = asyncio.ensure_future(self.outbox.get())
        await asyncio.wait((getter, self.task), return_when=asyncio.FIRST_COMPLETED)
        if getter.done():
            return getter.result()
        getter.cancel()
        return {}

    async def _main(self) -> None:
        scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"}, "state": {}}
        await self.app(scope, self.inbox.get, self.outbox.put)
