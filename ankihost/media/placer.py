"""Placing a user's committed media batches in the background, in commit order.

Once a batch has committed (its changes safe in the media log), its files are written to the
media folder by a pool of threads shared by all users, while the user's next request goes
ahead: an upload waits only when it names a file still to be placed, or when more than
MAX_QUEUED_BATCHES are; whatever reads the media folder waits until all is placed. A failure is
kept and raised by the next `wait`. The caller holds the user's lock for every method.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Collection
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ankihost.media.journal import FileJournal

# Threads that place batches, shared by all users (one user's batches use one at a time).
PLACE_THREADS = 4
# An upload goes ahead while at most this many of the user's batches are still to place: the
# next upload overlaps the placing of the one before it, no more (each holds up to
# archive.UPLOAD_IN_MEMORY_BYTES of file data in memory, and whatever reads the folder after
# the last upload waits for the rest).
MAX_QUEUED_BATCHES = 1
_POOL: ThreadPoolExecutor | None = None
_POOL_LOCK = threading.Lock()


class Placer:
    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._queue: deque[FileJournal] = deque()
        self._running = False
        self._error: BaseException | None = None

    def add(self, batch: FileJournal) -> None:
        """Place `batch` after those added before it."""
        with self._changed:
            self._queue.append(batch)
            if not self._running:
                self._running = True
                _pool().submit(self._run)

    def wait(self, names: Collection[str] | None = None) -> None:
        """Until everything is placed; with `names`, only until none of them is still to place
        and at most MAX_QUEUED_BATCHES are. Raises the error a placement met, if any."""
        with self._changed:
            if names is None:
                self._changed.wait_for(lambda: not self._running)
            else:
                wanted = set(names)
                self._changed.wait_for(lambda: self._may_go_ahead(wanted))
            error, self._error = self._error, None
        if error is not None:
            raise error

    def _may_go_ahead(self, names: set[str]) -> bool:
        return len(self._queue) <= MAX_QUEUED_BATCHES and not any(
            names & batch.names for batch in self._queue)

    def _run(self) -> None:
        while True:
            with self._changed:
                if not self._queue:
                    self._running = False
                    self._changed.notify_all()
                    return
                batch = self._queue[0]
            try:
                batch.place()
            except BaseException as exc:
                with self._changed:
                    self._error = exc
                    self._queue.clear()
            else:
                with self._changed:
                    self._queue.popleft()
                    self._changed.notify_all()


def _pool() -> ThreadPoolExecutor:
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = ThreadPoolExecutor(PLACE_THREADS, thread_name_prefix="media-place")
        return _POOL
