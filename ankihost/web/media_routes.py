"""`/msync/<method>`: media sync for protocol-11 clients, one table row per method.

Every step runs under the user's lock in a worker thread (they wait on the disk); see
`media/handlers.py` for the steps and `web/steps.py` for how a step is run.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from ankihost.config import Settings
from ankihost.errors import BadRequest
from ankihost.media.handlers import METHODS
from ankihost.protocol.header import SyncHeader
from ankihost.registry import Registry
from ankihost.web.request_log import RequestLog
from ankihost.web.steps import authenticate, body_limit, key_still_valid, run_step


class MediaRoutes:
    def __init__(self, settings: Settings, registry: Registry) -> None:
        self.settings = settings
        self.registry = registry

    async def handle(
        self, request: Request, header: SyncHeader, method: str, record: RequestLog
    ) -> Response:
        step = METHODS.get(method)
        if step is None:
            raise BadRequest(f"unknown method msync/{method}")
        state = authenticate(self.registry, header, record)
        limit = body_limit(step, self.settings)
        return await run_step(request, header, method, step, state, limit,
                              key_still_valid(self.registry, header))
