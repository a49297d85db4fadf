"""A small loopback HTTP forwarding proxy, to watch and interrupt client traffic.

The real client is pointed at :attr:`ForwardingProxy.endpoint` instead of the
server's; every request is forwarded to the upstream server unchanged (method,
path, headers, body) and the upstream response is passed back unchanged (status,
headers, body bytes). Request bodies sent with ``Transfer-Encoding: chunked``
are read completely and forwarded with a ``Content-Length`` (same bytes); a
chunked response is passed back as one chunk (same bytes).

A request body can be replaced before it is forwarded (:meth:`ForwardingProxy.edit`).

Hooks are keyed by the request path (e.g. ``"/sync/finish"``) and run either
**before** a request is forwarded (:meth:`ForwardingProxy.on`) or **after** the
upstream answered it, before the answer is passed back
(:meth:`ForwardingProxy.after`). A hook returns one of:

* ``FORWARD`` (or ``None``): carry on as usual;
* ``DROP``: close the client's connection without forwarding (before) or
  without passing the answer back (after) - what the client sees when the
  server dies mid-request.

A hook is called once per matching request; :meth:`ForwardingProxy.on` can
limit it to the first ``times`` matches. Every request path is recorded in
:attr:`ForwardingProxy.paths` (in arrival order), forwarded or not. With
``record=True`` every forwarded request and its answer are also kept whole in
:attr:`ForwardingProxy.exchanges` (e.g. to replay a real client's traffic).

The proxy exposes ``endpoint`` and ``starts`` (the upstream's start counter),
so a :class:`tests.support.client.SyncClient` can use it as its server::

    with ForwardingProxy(server) as proxy:
        proxy.on("/sync/finish", lambda path: kill(server) or DROP)
        client.use_server(proxy)
"""

from __future__ import annotations

import http.client
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Protocol

FORWARD = "forward"
DROP = "drop"

Hook = Callable[[str], str | None]

# Hop-by-hop headers (RFC 9110 §7.6.1) are not forwarded as they are.
_HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade"}
)


@dataclass(frozen=True)
class Exchange:
    """One forwarded request and the upstream's answer, as they went over the wire."""

    method: str
    path: str
    headers: tuple[tuple[str, str], ...]  # as forwarded (hop-by-hop ones dropped)
    body: bytes
    status: int
    response_headers: tuple[tuple[str, str], ...]
    response_body: bytes


class Upstream(Protocol):
    @property
    def port(self) -> int | None: ...

    starts: int


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _ProxyServer

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib name
        pass  # quiet

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            parts: list[bytes] = []
            while True:
                size_line = self.rfile.readline()
                size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    # trailers until the empty line
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(parts)
                parts.append(self.rfile.read(size))
                self.rfile.readline()  # CRLF after the chunk
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _drop(self) -> None:
        self.close_connection = True
        try:
            self.connection.shutdown(2)
        except OSError:
            pass

    def _proxy(self) -> None:
        body = self._read_body()
        proxy = self.server.owner
        path = self.path
        with proxy.lock:
            proxy.paths.append(path)
        if proxy.run_hook(path) == DROP:
            self._drop()
            return
        body = proxy.edited(path, body)
        port = proxy.upstream.port
        if port is None:
            self._drop()
            return
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=proxy.timeout)
        try:
            headers = {k: v for k, v in self.headers.items()
                       if k.lower() not in _HOP_BY_HOP and k.lower() != "content-length"}
            headers["Content-Length"] = str(len(body))  # one, whatever case the client used
            conn.request(self.command, path, body=body, headers=headers)
            response = conn.getresponse()
            payload = response.read()
            chunked = "chunked" in (response.getheader("Transfer-Encoding") or "").lower()
            response_headers = response.getheaders()
        except (OSError, http.client.HTTPException):
            conn.close()
            self._drop()  # the upstream died: so does the client's request
            return
        conn.close()
        if proxy.exchanges is not None:
            exchange = Exchange(self.command, path, tuple(headers.items()), body, response.status,
                                tuple(response_headers), payload)
            with proxy.lock:
                proxy.exchanges.append(exchange)
        if proxy.run_hook(path, after=True) == DROP:
            self._drop()  # the upstream answered; the client never hears it
            return
        self.send_response_only(response.status, response.reason)
        for name, value in response_headers:
            if name.lower() in _HOP_BY_HOP:
                continue
            if chunked and name.lower() == "content-length":
                continue
            self.send_header(name, value)
        if chunked:
            self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        if chunked:
            if payload:
                self.wfile.write(f"{len(payload):x}\r\n".encode() + payload + b"\r\n")
            self.wfile.write(b"0\r\n\r\n")
        elif self.command != "HEAD":
            self.wfile.write(payload)
        self.wfile.flush()

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _proxy


class _ProxyServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    owner: ForwardingProxy


class ForwardingProxy:
    """Forward 127.0.0.1:<own port> to the upstream server's current port."""

    def __init__(self, upstream: Upstream, timeout: float = 120.0, *, record: bool = False) -> None:
        self.upstream = upstream
        self.timeout = timeout
        self.lock = threading.Lock()
        self.paths: list[str] = []
        self.exchanges: list[Exchange] | None = [] if record else None
        self._hooks: dict[tuple[str, bool], list[tuple[Hook, list[int]]]] = {}
        self._edits: dict[str, list[tuple[Callable[[bytes], bytes], list[int]]]] = {}
        self._httpd = _ProxyServer(("127.0.0.1", 0), _Handler)
        self._httpd.owner = self
        self._thread: threading.Thread | None = None

    # -- the client-facing side (what SyncClient needs) ---------------------------
    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    @property
    def starts(self) -> int:
        """The upstream server's start counter: after a restart, SyncClient
        tolerates the stale pooled connections (settable only to satisfy the
        HasEndpoint protocol)."""
        return self.upstream.starts

    @starts.setter
    def starts(self, value: int) -> None:
        self.upstream.starts = value

    # -- hooks ----------------------------------------------------------------------
    def on(self, path: str, hook: Hook, times: int | None = None) -> None:
        """Run ``hook(path)`` before forwarding a request for ``path`` (at most
        ``times`` times; always if None)."""
        self._add(path, False, hook, times)

    def after(self, path: str, hook: Hook, times: int | None = None) -> None:
        """Run ``hook(path)`` after the upstream answered a request for ``path``,
        before the answer is passed back (``DROP``: the client never gets it)."""
        self._add(path, True, hook, times)

    def _add(self, path: str, after: bool, hook: Hook, times: int | None) -> None:
        remaining = [-1 if times is None else times]
        with self.lock:
            self._hooks.setdefault((path, after), []).append((hook, remaining))

    def edit(self, path: str, editor: Callable[[bytes], bytes], times: int | None = None) -> None:
        """Forward ``editor(body)`` instead of the body of a request for ``path`` (after
        the ``on`` hooks; at most ``times`` times, always if None): a client that sends
        something else than it meant to, e.g. to see what a server makes of bad input."""
        remaining = [-1 if times is None else times]
        with self.lock:
            self._edits.setdefault(path, []).append((editor, remaining))

    def edited(self, path: str, body: bytes) -> bytes:
        with self.lock:
            due = []
            for editor, remaining in self._edits.get(path, []):
                if remaining[0] != 0:
                    remaining[0] -= 1 if remaining[0] > 0 else 0
                    due.append(editor)
        for editor in due:
            body = editor(body)
        return body

    def clear_hooks(self) -> None:
        with self.lock:
            self._hooks.clear()
            self._edits.clear()

    def run_hook(self, path: str, after: bool = False) -> str | None:
        with self.lock:
            due: list[Hook] = []
            for hook, remaining in self._hooks.get((path, after), []):
                if remaining[0] != 0:
                    remaining[0] -= 1 if remaining[0] > 0 else 0
                    due.append(hook)
        verdict: str | None = FORWARD
        for hook in due:  # outside the lock: a hook may take its time
            if hook(path) == DROP:
                verdict = DROP
        return verdict

    def count(self, path: str) -> int:
        with self.lock:
            return self.paths.count(path)

    # -- lifecycle ------------------------------------------------------------------
    def start(self) -> ForwardingProxy:
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="proxy", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def __enter__(self) -> ForwardingProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
