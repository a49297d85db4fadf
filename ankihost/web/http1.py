"""HTTP/1.1 connections of the listener: httptools parsing, the limits, one ASGI cycle at a time.

A `Connection` parses requests as bytes arrive and refuses an oversized request line (414) or
head (431) as soon as the limit is passed, without reading the rest. Each request runs the ASGI
app in a task of its own: the body streams in through `receive` (reading pauses while the app
has not taken what is buffered) and the reply goes out through `send`, the head in the same
write as the first piece of body. Timeouts are checked once a second by `Hub.tick`, from times
kept on the coarse `Hub.clock`, so a request starts no timer of its own.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
from collections import deque
from collections.abc import Collection
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import unquote

import httptools

from ankihost.web.cycle import ASGI, App, ClientDisconnected, Cycle, plain_response

if TYPE_CHECKING:
    from ankihost.web.listener import ListenerLimits

log = logging.getLogger("ankihost.http")

# Request body bytes buffered for the app before reading from the client pauses.
BODY_BUFFER_BYTES = 256 * 1024
# A body still arriving after its reply was sent (a refusal before the end) is read and
# dropped, so the client reads the reply rather than a reset; past this much, the connection
# is closed instead.
DISCARD_LIMIT_BYTES = 4 * 1024 * 1024

IDLE, HEAD, BODY, DEAD = 0, 1, 2, 3  # parse phase: between requests, in a head, in a body, refused
METHODS = {m.encode(): m for m in ("GET", "POST", "HEAD", "PUT", "DELETE", "OPTIONS", "PATCH")}


SERVICE_UNAVAILABLE = plain_response(503, "The server is busy; try again shortly.")


class _Refused(Exception):
    """Raised from a parser callback to stop parsing a request that breaks a limit."""


class Slot(Protocol):
    """An open connection as the hub counts it against the cap: a `Connection`, or a TLS one
    whose handshake has not made it one yet (`tlsport.TlsPort`)."""

    @property
    def cycle(self) -> Cycle | None: ...

    @property
    def queued(self) -> Collection[Cycle]: ...

    def evictable(self) -> bool: ...

    def check_timeouts(self, now: float) -> None: ...

    def close(self) -> None: ...

    def abort(self) -> None: ...


class Hub:
    """What every connection shares: the app, the limits, the clock, the open connections and
    the running app tasks."""

    def __init__(self, app: App, limits: ListenerLimits, scheme: str) -> None:
        self.app = app
        self.limits = limits
        self.scheme = scheme
        self.loop = asyncio.get_running_loop()
        self.clock = self.loop.time()
        self.date = b""
        self.connections: dict[Slot, None] = {}
        self.tasks: set[asyncio.Task[None]] = set()
        self.closing = False
        self.refused = 0
        self._set_date()

    def _set_date(self) -> None:
        self.date = b"date: " + email.utils.formatdate(usegmt=True).encode() + b"\r\n"

    def tick(self) -> None:
        """Once a second: move the clock and the Date header on, and apply the timeouts."""
        now = self.clock = self.loop.time()
        self._set_date()
        for connection in list(self.connections):
            connection.check_timeouts(now)
        if self.refused:
            log.warning("%d connection(s) refused with 503: %d open, all busy (ANKIHOST_MAX_CONNECTIONS)",
                        self.refused, len(self.connections))
            self.refused = 0

    def admit(self, connection: Slot) -> bool:
        if len(self.connections) >= self.limits.max_connections and not self._evict_one():
            self.refused += 1
            return False
        self.connections[connection] = None
        return True

    def _evict_one(self) -> bool:
        """Close the oldest connection that waits for a request (or is slow sending its head).
        Whatever its age: under a flood the oldest waiting one is the flood's, and a client that
        just connected would be pushed out only after every older waiting connection."""
        for connection in self.connections:
            if connection.evictable():
                self.forget(connection)
                connection.close()
                return True
        return False

    def forget(self, connection: Slot) -> None:
        self.connections.pop(connection, None)


class Connection(asyncio.Protocol):
    """One client connection: parses its requests and runs them one after the other."""

    def __init__(self, hub: Hub, replaces: Slot | None = None) -> None:
        self.hub = hub
        # the TLS connection this one carries on once its handshake is done (its slot is ours)
        self.replaces = replaces
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.client: tuple[str, int] | None = None
        self.server: tuple[str, int] | None = None
        self.phase = IDLE
        self.since = self.last_read = hub.clock
        self.head_bytes = self.header_bytes = 0
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.refusal: tuple[int, str] | None = None
        self.cycle: Cycle | None = None  # the request the app is answering
        self.parsing: Cycle | None = None  # the request whose body is arriving
        self.queued: deque[Cycle] = deque()  # pipelined requests waiting for their turn
        self.served = 0
        self.discarded = 0
        self.lost = self.read_paused = self.write_paused = False
        self.write_stalled_since = 0.0
        self.write_buffered = 0
        self.drain_waiters: list[asyncio.Future[None]] = []

    # -- transport events -------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        if self.replaces is not None:
            self.hub.forget(self.replaces)
        if not self.hub.admit(self):
            self.lost = True
            self.transport.write(SERVICE_UNAVAILABLE)
            self.transport.close()
            return
        peer = transport.get_extra_info("peername")
        self.client = (str(peer[0]), int(peer[1])) if isinstance(peer, tuple) else None
        own = transport.get_extra_info("sockname")
        self.server = (str(own[0]), int(own[1])) if isinstance(own, tuple) else None

    def connection_lost(self, exc: Exception | None) -> None:
        self._gone()

    def _gone(self) -> None:
        """The connection is (being) closed: requests still running see a disconnect."""
        self.lost = True
        self.phase = DEAD
        self.hub.forget(self)
        for cycle in (self.cycle, self.parsing, *self.queued):
            if cycle is not None:
                cycle.wake()
        self._release_drain()

    def data_received(self, data: bytes) -> None:
        if self.phase == DEAD:
            return
        self.last_read = self.hub.clock
        if self.phase != BODY:
            if self.phase == IDLE:
                self.phase, self.since = HEAD, self.hub.clock
            self.head_bytes += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            status, reason = self.refusal or (500, "internal error while parsing")
            if self.refusal is None:
                log.error("error in a parser callback", exc_info=exc.__context__)
            self.refuse(status, reason)
        except httptools.HttpParserUpgrade:
            self.phase = DEAD  # protocol upgrades are not offered: answer this request, then close
            self._pause_reading()
        except httptools.HttpParserError as exc:
            self.refuse(400, f"malformed request ({exc})")
        else:
            if self.phase == HEAD and self.head_bytes > self.hub.limits.max_head_bytes:
                self.refuse(431, f"request head over {self.hub.limits.max_head_bytes} bytes")

    def eof_received(self) -> bool | None:
        return None  # close our side too

    def pause_writing(self) -> None:
        self.write_paused = True
        self.write_stalled_since = self.hub.clock
        self.write_buffered = self.transport.get_write_buffer_size()

    def resume_writing(self) -> None:
        self.write_paused = False
        self._release_drain()

    # -- parser callbacks ---------------------------------------------------------------------
    def on_url(self, url: bytes) -> None:
        if self.phase == IDLE:
            self.phase, self.since = HEAD, self.hub.clock
        self.url += url
        if len(self.url) > self.hub.limits.max_url_bytes:
            self.refusal = (414, f"request target over {self.hub.limits.max_url_bytes} bytes")
            raise _Refused

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.lower(), value))
        self.header_bytes += len(name) + len(value) + 4
        limits = self.hub.limits
        if len(self.headers) > limits.max_header_count:
            self.refusal = (431, f"more than {limits.max_header_count} header fields")
            raise _Refused
        if self.header_bytes + len(self.url) > limits.max_head_bytes:
            self.refusal = (431, f"request head over {limits.max_head_bytes} bytes")
            raise _Refused

    def on_headers_complete(self) -> None:
        if self.lost:
            return
        cycle = Cycle(self, self._scope(), self.parser.should_keep_alive())
        self.url, self.headers, self.head_bytes, self.header_bytes = b"", [], 0, 0
        self.phase, self.last_read, self.parsing = BODY, self.hub.clock, cycle
        if self.cycle is None:
            self._start(cycle)
        else:
            self.queued.append(cycle)
            self._pause_reading()

    def on_body(self, body: bytes) -> None:
        cycle = self.parsing
        if cycle is None:  # the connection was closed earlier in this piece of data
            return
        if cycle.discard:
            self.discarded += len(body)
            if self.discarded > DISCARD_LIMIT_BYTES:
                self.close()
            return
        cycle.chunks.append(body)
        cycle.buffered += len(body)
        cycle.wake()
        if cycle.buffered > BODY_BUFFER_BYTES:
            self._pause_reading()

    def on_message_complete(self) -> None:
        cycle = self.parsing
        if cycle is None:
            return
        cycle.complete = True
        cycle.wake()
        self.parsing = None
        if self.phase == BODY:
            self.phase, self.since = IDLE, self.hub.clock

    def _scope(self) -> dict[str, Any]:
        url = self.url
        if url[:1] != b"/":  # absolute form (or "*"): keep the path and query only
            parsed = httptools.parse_url(url)
            url = (parsed.path or b"/") + (b"?" + parsed.query if parsed.query else b"")
        raw_path, _, query = url.partition(b"?")
        try:
            path = raw_path.decode("ascii")
        except UnicodeDecodeError:
            self.refusal = (400, "request target is not ASCII")
            raise _Refused from None
        method = self.parser.get_method()
        return {
            "type": "http", "asgi": ASGI, "http_version": self.parser.get_http_version(),
            "method": METHODS.get(method) or method.decode("ascii", "replace"),
            "scheme": self.hub.scheme, "path": unquote(path) if "%" in path else path,
            "raw_path": raw_path, "query_string": query, "root_path": "",
            "headers": self.headers, "client": self.client, "server": self.server,
        }

    # -- running requests ------------------------------------------------------------------------
    def _start(self, cycle: Cycle) -> None:
        self.cycle = cycle
        task = self.hub.loop.create_task(cycle.run())
        cycle.task = task
        self.hub.tasks.add(task)

    def cycle_done(self, cycle: Cycle) -> None:
        """The reply to `cycle` was sent whole: next request, keep-alive, or close."""
        self.cycle = None
        self.served += 1
        if not cycle.keep_alive or self.hub.closing or self.phase == DEAD:
            self.close()
            return
        if not cycle.complete:  # answered before the whole body came: read the rest and drop it
            cycle.discard, cycle.chunks, self.discarded = True, [], 0
            self._resume_reading()
            return
        if self.phase == IDLE:
            self.since = self.hub.clock
        if self.queued:
            self._start(self.queued.popleft())
        if self.read_paused and not self.queued:
            self._resume_reading()

    def body_taken(self, cycle: Cycle) -> None:
        if self.read_paused and cycle is self.cycle and not self.queued and self.phase != DEAD:
            self._resume_reading()

    async def drain(self) -> None:
        if self.lost:
            raise ClientDisconnected("the client closed the connection")
        waiter = self.hub.loop.create_future()
        self.drain_waiters.append(waiter)
        await waiter
        if self.lost:
            raise ClientDisconnected("the client closed the connection")

    def _release_drain(self) -> None:
        waiters, self.drain_waiters = self.drain_waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def _pause_reading(self) -> None:
        if not self.read_paused and not self.lost:
            self.read_paused = True
            self.transport.pause_reading()

    def _resume_reading(self) -> None:
        if self.read_paused and not self.lost:
            self.read_paused = False
            self.last_read = self.hub.clock
            self.transport.resume_reading()

    # -- refusals, timeouts, closing -------------------------------------------------------------
    def refuse(self, status: int, reason: str) -> None:
        """Answer `status` (unless a reply is under way) and close; logged once, without data."""
        log.info("refused a request from %s: %s (%d)", self.client[0] if self.client else "-", reason, status)
        if not self.lost and (self.cycle is None or not self.cycle.head_written):
            self.transport.write(plain_response(status))
        self.close()

    def abort(self) -> None:
        """Close at once, dropping what was not sent."""
        self.transport.abort()

    def close(self) -> None:
        """Close after what was written is sent."""
        if not self.transport.is_closing():
            self.transport.close()
        self._gone()

    def will_close(self) -> bool:
        """The connection closes after the reply under way (refused, upgrade, shutdown)."""
        return self.phase == DEAD or self.hub.closing

    def evictable(self) -> bool:
        return self.cycle is None and self.phase in (IDLE, HEAD)

    def check_timeouts(self, now: float) -> None:
        limits = self.hub.limits
        if self.write_paused:
            self._check_write_progress(now)
        elif self.phase == BODY:
            if not self.read_paused and now - self.last_read > limits.body_idle_timeout:
                self._time_out(f"no body data for {limits.body_idle_timeout:g} s")
        elif self.cycle is not None:
            return  # the app is working on a request
        elif self.phase == HEAD:
            if now - self.since > limits.header_timeout:
                self._time_out(f"request head not complete within {limits.header_timeout:g} s")
        elif self.phase == IDLE:
            limit = limits.keep_alive_timeout if self.served else limits.header_timeout
            if now - self.since > limit:
                self.close()

    def _check_write_progress(self, now: float) -> None:
        buffered = self.transport.get_write_buffer_size()
        if buffered < self.write_buffered:
            self.write_buffered, self.write_stalled_since = buffered, now
        elif now - self.write_stalled_since > self.hub.limits.body_idle_timeout:
            log.info("closed the connection of %s: it read nothing of the reply for %g s",
                     self.client[0] if self.client else "-", self.hub.limits.body_idle_timeout)
            self.transport.abort()

    def _time_out(self, reason: str) -> None:
        if self.cycle is not None and self.cycle.head_written:
            log.info("closed the connection of %s: %s", self.client[0] if self.client else "-", reason)
            self.transport.abort()
        else:
            self.refuse(408, reason)
