"""`/msync/<method>`: media sync for every protocol, one table row per method.

Every step runs under the user's lock in a worker thread (they wait on the disk); see
`media/handlers.py` for the steps and `web/steps.py` for how a step is run.
"""

from __future__ import annotations

from starlette.responses import Response

from ankihost.config import Settings
from ankihost.errors import BadRequest
from ankihost.media.handlers import METHODS
from ankihost.registry import Registry
from ankihost.web.envelope import Envelope
from ankihost.web.request_log import RequestLog
from ankihost.web.steps import authenticate, body_limit, key_still_valid, run_step


class MediaRoutes:
    def __init__(self, settings: Settings, registry: Registry) -> None:
        self.settings = settings
        self.registry = registry

    async def handle(self, envelope: Envelope, method: str, record: RequestLog) -> Response:
        step = METHODS.get(method)
        if step is None:
            raise BadRequest(f"unknown method msync/{method}")
        limit = body_limit(step, self.settings)
        await envelope.receive(limit)
        state = authenticate(self.registry, envelope, record)
        still_valid = key_still_valid(self.registry, envelope)
        return await run_step(envelope, method, step, state, limit, still_valid)
