"""One log line per request, written when it ends, whatever the outcome.

The routes fill in what they learn (the user, the client's version, the status) on the request's
`RequestLog`; `write()` is called once, by the app, and is the only place the line is formatted
and the request counted in the metrics (`web/metrics.py`). The line's fields also travel as
`extra` fields, so the JSON log format has them as keys; client-supplied values are `printable`.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Message, Send

from ankihost.log import printable

if TYPE_CHECKING:
    from ankihost.web.metrics import Metrics

log = logging.getLogger("ankihost.request")


@dataclass
class RequestLog:
    http_method: str
    # what was asked for: "/sync/<method>", "/msync/<method>", or the path of an unknown route
    target: str
    ip: str
    started: float = field(default_factory=time.monotonic)
    user: str = "-"
    client: str = "-"
    status: int = 500
    # why the request was refused (4xx), or failed (5xx); "" when it succeeded
    reason: str = ""
    # where the request is counted (None: only logged)
    metrics: Metrics | None = None
    # body bytes as on the wire: read from the request, and the response's Content-Length
    bytes_in: int = 0
    bytes_out: int = 0
    # a full upload answered "refused" with 200: "quota", "too_large" or "corrupt"
    refused: str | None = None
    # the outcome of a sign-in to a page: "ok", "failed" or "throttled"
    login: str | None = None
    # don't write the line (a Prometheus scrape every few seconds); still counted
    quiet: bool = False

    def write(self) -> None:
        """The line (a refused request's reason included: one line per request, never its
        body), and the request counted in the metrics; every value a client chose is capped
        and escaped (`log.printable`)."""
        seconds = time.monotonic() - self.started
        if self.metrics is not None:
            self.metrics.record(self, seconds)
        if self.quiet:
            return
        fields = {
            "method": printable(self.http_method, 16), "target": printable(self.target),
            "user": printable(self.user), "client": printable(self.client),
            "status": self.status, "ms": int(seconds * 1000), "ip": printable(self.ip, 64),
        }
        if self.reason:
            fields["reason"] = printable(self.reason)
        log.info("%s %s user=%s client=%s status=%d ms=%d ip=%s" + (" reason=%s" if self.reason else ""),
                 *fields.values(), extra={"fields": fields})


def counting(request: Request, record: RequestLog) -> Request:
    """The same request, with every body byte read from it added to `record.bytes_in`."""
    receive = request.receive

    async def counted() -> Message:
        message = await receive()
        if message["type"] == "http.request":
            record.bytes_in += len(message.get("body", b""))
        return message

    return Request(request.scope, counted)


def sent_bytes(response: Response) -> int:
    """The body size a response declares (0 for a streamed one: see `counting_send`)."""
    length = response.headers.get("content-length", "")
    return int(length) if length.isdigit() else 0


def counting_send(send: Send, record: RequestLog) -> Send:
    """`send`, counting the body of a streamed response (no Content-Length; a full download)
    in the metrics as it goes: its size is known only once it is sent, after the log line."""
    metrics = record.metrics
    if metrics is None:
        return send

    async def counted(message: Message) -> None:
        if message["type"] == "http.response.body":
            metrics.record_sent(record, len(message.get("body", b"")))
        await send(message)

    return counted
