"""Running work on a user's data between two of their syncs, never in the middle of one.

A normal sync spans many requests (`start` … `finish`) and the user's lock is free between
them, so holding the lock is not enough. `when_idle` takes the lock and, if a sync session is
open, lets go and tries again until the session ends; past the deadline it gives up with 409
and nothing done. A session whose client has sent nothing for `GIVEN_UP_SECS` was given up
(clients time out after 60 s without an answer): it is rolled back, as the client's next sync
would do anyway. Other users are never waited for.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar, cast

from ankihost.errors import SessionConflict
from ankihost.registry import UserState

log = logging.getLogger(__name__)
T = TypeVar("T")

GIVEN_UP_SECS = 300
# How long an admin command waits for a user's sync to end before giving up.
WAIT_SECS = 600
RETRY_SECS = 0.25
# While waiting, `on_wait` hears about it this often.
WAIT_REPORT_SECS = 5.0

_BUSY = object()


async def when_idle(
    state: UserState, work: Callable[..., T], *args: Any, wait_secs: float = WAIT_SECS,
    on_wait: Callable[[float], None] | None = None,
) -> T:
    """`work(*args)` in a worker thread under the user's lock, with no sync session open.
    SessionConflict when a sync is still running after `wait_secs` (0: do not wait)."""
    started = time.monotonic()
    reported: float | None = None
    while True:
        result = await state.locked(_unless_syncing, state, work, args)
        if result is not _BUSY:
            return cast(T, result)
        now = time.monotonic()
        if now - started >= wait_secs:
            raise SessionConflict(
                f"{state.name!r} is syncing and the sync did not end within {wait_secs:.0f} s; "
                "nothing was changed, try again later")
        if on_wait is not None and (reported is None or now - reported >= WAIT_REPORT_SECS):
            on_wait(now - started)
            reported = now
        await asyncio.sleep(RETRY_SECS)


def _unless_syncing(state: UserState, work: Callable[..., T], args: tuple[Any, ...]) -> T | object:
    session = state.collection.session
    if session is not None:
        if time.monotonic() - session.last_request < GIVEN_UP_SECS:
            return _BUSY
        log.info("rolling back a sync of %s its client gave up", state.name)
        state.collection.abort_session()
    return work(*args)
