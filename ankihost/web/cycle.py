"""One HTTP request and its reply as the ASGI app sees them: `receive`, `send`, the reply's framing.

A `Cycle` hands the app the request body as its `Connection` parses it, and writes the reply:
the head together with the first piece of body, Content-Length or chunked framing, a cached
Date header, "connection: close" when the connection ends after it. `send` raises
`ClientDisconnected` (an OSError, as ASGI 2.4 asks) once the client has gone.
"""

from __future__ import annotations

import asyncio
import http
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ankihost.web.http1 import Connection

log = logging.getLogger("ankihost.http")

Message = MutableMapping[str, Any]
App = Callable[[MutableMapping[str, Any], Callable[[], Awaitable[Message]],
                Callable[[Message], Awaitable[None]]], Awaitable[None]]

# Replies up to this size are joined to their head and written at once; larger ones by writev.
JOIN_BYTES = 64 * 1024

ASGI = {"version": "3.0", "spec_version": "2.4"}
DISCONNECT: Message = {"type": "http.disconnect"}
STATUS_LINES = {s.value: f"HTTP/1.1 {s.value} {s.phrase}\r\n".encode() for s in http.HTTPStatus}


def plain_response(status: int, text: str = "") -> bytes:
    """A complete response that closes the connection (refusals and timeouts)."""
    body = (text or http.HTTPStatus(status).phrase).encode() + b"\n"
    return (STATUS_LINES[status] + b"content-type: text/plain; charset=utf-8\r\n"
            b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(body), body))


class ClientDisconnected(OSError):
    """`send` after the client went away (ASGI 2.4: an OSError)."""


class Cycle:
    """One request and its reply: the ASGI `receive` and `send` of one app call."""

    __slots__ = ("conn", "scope", "keep_alive", "chunks", "buffered", "complete", "final", "waiter", "status",
                 "reply_headers", "started", "head_written", "chunked", "ended", "task", "continued", "discard")

    def __init__(self, conn: Connection, scope: dict[str, Any], keep_alive: bool) -> None:
        self.conn = conn
        self.scope = scope
        self.keep_alive = keep_alive
        self.chunks: list[bytes] = []
        self.buffered = 0
        self.complete = self.final = self.started = self.head_written = self.chunked = self.ended = False
        self.continued = False
        self.discard = False  # the reply is sent: the rest of the body is dropped
        self.waiter: asyncio.Future[None] | None = None
        self.status = 200
        self.reply_headers: Any = ()
        self.task: asyncio.Task[None] | None = None

    def wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def run(self) -> None:
        conn = self.conn
        try:
            await conn.hub.app(self.scope, self.receive, self.send)
        except asyncio.CancelledError:
            self._unfinished()
        except Exception as exc:
            if conn.lost:
                log.debug("app error after the client left: %r", exc)
            else:
                log.error("unhandled error in the app", exc_info=exc)
            self._unfinished()
        else:
            if not self.ended:
                if not self.started:
                    log.error("the app returned without a reply")
                self._unfinished()
        finally:
            if self.task is not None:
                conn.hub.tasks.discard(self.task)

    def _unfinished(self) -> None:
        """The app ended without a whole reply: a 500 if nothing was sent, else cut it off."""
        conn = self.conn
        if self.ended or conn.lost:
            return
        if not self.head_written:
            conn.transport.write(plain_response(500))
            conn.close()
        else:
            conn.transport.abort()
        self.ended = True
        conn.cycle = None

    async def receive(self) -> Message:
        conn = self.conn
        while True:
            if self.chunks:
                return self._take()
            if self.complete:
                if not self.final:
                    self.final = True
                    return {"type": "http.request", "body": b"", "more_body": False}
                if self.ended or conn.lost:
                    return DISCONNECT
            elif conn.lost:
                return DISCONNECT
            elif not self.head_written and self._expects_continue():
                conn.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            self.waiter = conn.hub.loop.create_future()
            try:
                await self.waiter
            finally:
                self.waiter = None

    def _take(self) -> Message:
        chunks = self.chunks
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        self.chunks, self.buffered = [], 0
        self.final = self.complete
        self.conn.body_taken(self)
        return {"type": "http.request", "body": data, "more_body": not self.complete}

    def _expects_continue(self) -> bool:
        """True once, if the client waits for "100 Continue" before sending its body."""
        if self.continued:
            return False
        self.continued = True
        return any(name == b"expect" and value.lower() == b"100-continue" for name, value in self.scope["headers"])

    async def send(self, message: Message) -> None:
        kind = message["type"]
        if kind == "http.response.body":
            if not self.started or self.ended:
                raise RuntimeError("http.response.body without a response start, or after the end")
            conn = self.conn
            if conn.lost:
                raise ClientDisconnected("the client closed the connection")
            body = message.get("body", b"")
            more = message.get("more_body", False)
            self._write(body, more)
            if not more:
                self.ended = True
                self.wake()
                conn.cycle_done(self)
            elif conn.write_paused:
                await conn.drain()
        elif kind == "http.response.start":
            if self.started:
                raise RuntimeError("the response was already started")
            self.started = True
            self.status = message["status"]
            self.reply_headers = message.get("headers") or ()
        else:
            raise RuntimeError(f"unexpected ASGI message {kind!r}")

    def _write(self, body: bytes, more: bool) -> None:
        head = b""
        if not self.head_written:
            self.head_written = True
            head = self._head(len(body), more)
        bodiless = self.scope["method"] == "HEAD" or self.status in (204, 304)
        if bodiless:
            body = b""
        if self.chunked and not bodiless:  # (a HEAD gets no chunks, not even the last one)
            size = b"%x\r\n" % len(body) if body else b""
            tail = (b"\r\n" if body else b"") + (b"" if more else b"0\r\n\r\n")
            pieces = [head, size, body, tail]
        else:
            pieces = [head, body]
        transport = self.conn.transport
        if len(body) <= JOIN_BYTES:
            joined = b"".join(pieces)
            if joined:
                transport.write(joined)
        else:
            transport.writelines(pieces)

    def _head(self, size: int, more: bool) -> bytes:
        status = self.status
        parts = [STATUS_LINES.get(status) or b"HTTP/1.1 %d \r\n" % status]
        has_length = False
        for name, value in self.reply_headers:
            if b"\n" in value or b"\r" in value or b"\n" in name or b"\r" in name:
                raise RuntimeError("a response header contains a line break")
            if name.lower() == b"content-length":
                has_length = True
            parts.append(b"%s: %s\r\n" % (name, value))
        if not has_length and status not in (204, 304) and status >= 200:
            if more:
                self.chunked = True
                parts.append(b"transfer-encoding: chunked\r\n")
            else:
                parts.append(b"content-length: %d\r\n" % size)
        parts.append(self.conn.hub.date)
        if not self.keep_alive or self.conn.will_close():
            parts.append(b"connection: close\r\n")
        parts.append(b"\r\n")
        return b"".join(parts)
