"""Progress of a long admin operation (a backup, a restore that waits for a sync), as events.

An operation calls `report(...)` with plain JSON fields wherever it is, on the event loop or
in a worker thread (the reporter travels in a context variable, which worker threads
inherit). Who listens decides what happens: the admin channel sends each event to the command
line as a line of its own (`admin/channel.py`); a command running the operation itself shows
it on the terminal. With nobody listening, `report` does nothing. A reporter raises
`OperationCancelled` when its listener has gone away, which stops the operation there.

Events: `{"message": "…"}` (a line for the operator) and
`{"done": bytes, "total": bytes, "what": "…"}` (how far the work is).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from typing import Any

Reporter = Callable[[dict[str, Any]], None]

_current: ContextVar[Reporter | None] = ContextVar("ankihost_admin_progress", default=None)

# Byte counts are passed on at most this often (messages always).
MIN_INTERVAL_SECS = 0.2


class OperationCancelled(Exception):
    """The one who asked for the operation is gone; it stops (undoing what it started)."""


def report(**event: Any) -> None:
    reporter = _current.get()
    if reporter is not None:
        reporter(event)


def message(text: str) -> None:
    report(message=text)


@contextlib.contextmanager
def reporting(reporter: Reporter | None) -> Iterator[None]:
    token = _current.set(reporter)
    try:
        yield
    finally:
        _current.reset(token)


class Meter:
    """Counts the bytes of one piece of work and reports them now and then: the `Progress` the
    core's long operations take (`snapshots/progress.py`)."""

    def __init__(self, total: int = 0, what: str = "") -> None:
        self.total = total
        self.done = 0
        self.what = what
        self._last = 0.0

    def expect(self, total: int) -> None:
        self.total = total
        self.done = 0

    def add(self, count: int) -> None:
        self.done += count
        now = time.monotonic()
        if now - self._last >= MIN_INTERVAL_SECS:
            self._last = now
            report(done=self.done, total=max(self.total, self.done), what=self.what)

    def name(self, what: str) -> None:
        self.what = what

    def say(self, text: str) -> None:
        message(text)
