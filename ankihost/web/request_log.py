"""One log line per request, written when it ends, whatever the outcome.

The routes fill in what they learn (the user, the client's version, the status) on the request's
`RequestLog`; `write()` is called once, by the app, and is the only place the line is formatted.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

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

    def write(self) -> None:
        log.info(
            "%s %s user=%s client=%s status=%d ms=%d ip=%s", self.http_method, self.target,
            self.user, self.client, self.status, (time.monotonic() - self.started) * 1000, self.ip,
        )
