"""The HTTPS port's first look at a connection: TLS goes on to HTTP, plain HTTP is told to use https.

A `TlsPort` reads the first bytes of a new connection. A TLS handshake record is handed, bytes
and all, to the event loop's TLS protocol (uvloop's where it runs) in front of an HTTP/1.1
`Connection`; anything else gets a plain-text 400 saying the port speaks HTTPS. Failed
handshakes are logged one line each with the reason in words (untrusted issuer, old TLS).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from typing import Any

from ankihost.web.cycle import plain_response
from ankihost.web.http1 import Connection, Hub

log = logging.getLogger("ankihost.listener")

TLS_HANDSHAKE_RECORD = b"\x16"
PLAIN_HTTP_MESSAGE = "This port speaks HTTPS: use https:// in the sync server address."
HANDSHAKE_HINTS = {
    "TLSV1_ALERT_UNKNOWN_CA": "the client does not trust the certificate's issuer (TLSV1_ALERT_UNKNOWN_CA)",
    "SSLV3_ALERT_BAD_CERTIFICATE": "the client refused the certificate, e.g. for another name (BAD_CERTIFICATE)",
    "SSLV3_ALERT_CERTIFICATE_UNKNOWN": "the client refused the certificate (CERTIFICATE_UNKNOWN)",
    "TLSV1_ALERT_DECRYPT_ERROR": "the client could not verify the certificate's signature (DECRYPT_ERROR)",
    "UNSUPPORTED_PROTOCOL": "the client offers only TLS versions before 1.2 (UNSUPPORTED_PROTOCOL)",
    "NO_SHARED_CIPHER": "no cipher in common with the client (NO_SHARED_CIPHER)",
}


class TlsPort(asyncio.Protocol):
    """A new connection to the HTTPS port, until its first bytes show what it speaks: a TLS
    handshake goes on through TLS to a `Connection`; plain HTTP is answered, in plain text,
    that the port speaks HTTPS. Failed handshakes are logged with the reason, one line each."""

    # as a slot of the hub (`http1.Slot`): counted against the connection cap from the moment
    # it is accepted until its `Connection` takes over (or it is closed); no request yet, so
    # closing it for a newcomer loses nothing
    cycle = None
    queued: tuple[()] = ()

    def __init__(self, hub: Hub, context: ssl.SSLContext) -> None:
        self.hub = hub
        self.context = context
        self.transport: asyncio.Transport | None = None
        self.timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        if not self.hub.admit(self):
            transport.close()  # (no plain-text 503 on a TLS port)
            return
        self.timer = self.hub.loop.call_later(self.hub.limits.header_timeout, self.close)

    def connection_lost(self, exc: Exception | None) -> None:
        self.hub.forget(self)
        if self.timer is not None:
            self.timer.cancel()

    def evictable(self) -> bool:
        return True

    def check_timeouts(self, now: float) -> None:
        """Nothing: its own timer closes it (the handshake has a timeout of its own too)."""

    def close(self) -> None:
        self.hub.forget(self)
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        self.hub.forget(self)
        if self.transport is not None:
            self.transport.abort()

    def data_received(self, data: bytes) -> None:
        transport = self.transport
        assert transport is not None and self.timer is not None
        self.timer.cancel()
        if data[:1] != TLS_HANDSHAKE_RECORD:
            log.info("plain HTTP from %s on the HTTPS port: answered 400", _peer(transport))
            transport.write(plain_response(400, PLAIN_HTTP_MESSAGE))
            transport.close()
            return
        waiter = self.hub.loop.create_future()
        waiter.add_done_callback(lambda done: self._handshake_done(done, transport))
        tls = _ssl_protocol_class()(self.hub.loop, Connection(self.hub, replaces=self), self.context, waiter,
                                    server_side=True,
                                    ssl_handshake_timeout=self.hub.limits.header_timeout)
        transport.set_protocol(tls)
        tls.connection_made(transport)
        view = memoryview(data)
        while view:
            buffer = tls.get_buffer(len(view))
            size = min(len(buffer), len(view))
            buffer[:size] = view[:size]
            tls.buffer_updated(size)
            view = view[size:]

    def _handshake_done(self, waiter: asyncio.Future[None], transport: asyncio.BaseTransport) -> None:
        if waiter.cancelled() or waiter.exception() is not None:
            self.hub.forget(self)  # (on success, its Connection took the slot over)
        _log_handshake_failure(waiter, transport)


def _ssl_protocol_class() -> Any:
    """uvloop's TLS protocol on a uvloop loop (much faster), else asyncio's."""
    loop = asyncio.get_running_loop()
    if type(loop).__module__.startswith("uvloop"):
        import uvloop.loop

        return uvloop.loop.SSLProtocol  # type: ignore[attr-defined]
    from asyncio import sslproto

    return sslproto.SSLProtocol


def _log_handshake_failure(waiter: asyncio.Future[None], transport: asyncio.BaseTransport) -> None:
    if waiter.cancelled() or waiter.exception() is None:
        return
    exc = waiter.exception()
    reason = getattr(exc, "reason", None) or exc.__class__.__name__
    log.info("TLS handshake with %s failed: %s", _peer(transport), HANDSHAKE_HINTS.get(str(reason), reason))


def _peer(transport: asyncio.BaseTransport) -> str:
    peer = transport.get_extra_info("peername")
    return str(peer[0]) if isinstance(peer, tuple) else "-"
