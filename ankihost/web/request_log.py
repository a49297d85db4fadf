"""One log line per request, written when it ends, whatever the outcome.

The routes fill in what they learn (the user, the client's version, the status) on the request's
`RequestLog`; `write()` is called once, by the app, and is the only place the line is formatted.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from ankihost.log import printable

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

    def write(self) -> None:
        """The line (a refused request's reason included: one line per request, never its
        body); every value a client chose is capped and escaped (`log.printable`)."""
        log.info(
            "%s %s user=%s client=%s status=%d ms=%d ip=%s%s", printable(self.http_method, 16),
            printable(self.target), printable(self.user), printable(self.client), self.status,
            (time.monotonic() - self.started) * 1000, printable(self.ip, 64),
            f" reason={printable(self.reason)}" if self.reason else "",
        )
