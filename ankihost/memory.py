"""Giving memory back to the system once it is no longer used.

glibc's malloc keeps freed memory in its arenas (one per thread that allocated) rather than
returning it, so after idle users' databases are closed (their page caches freed) or a large
body is done, the process would keep its peak size for good. `release_memory` asks the
allocator to return what it can (`malloc_trim(0)`); `limit_arenas` keeps the worker threads
from spreading the heap over many arenas. Where there is no glibc both do nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import threading
from collections.abc import Callable
from typing import Any, cast

# After a large body, freed memory is handed back to the system this long after it was read,
# once its request is over (its reply sent, its follow-up done; see `release_memory_soon`).
# Measured: after a 250 MiB applyChunk the server kept 360 MB without it, 68 MB with it.
RELEASE_DELAY_SECS = 2.0
# The most malloc arenas (glibc's default is 8 per core, one per thread that allocates, up to
# that). Worker threads run Python under one lock, so more arenas buy little speed, and what
# each keeps after use is memory never returned. Measured (bench_many_users, 200 users then
# idle): 74 MB idle with the default, 65 MB with 2, against 57 MB at start-up.
MALLOC_ARENAS = 2
# mallopt's parameter number for the arena limit (glibc's malloc.h: M_ARENA_MAX).
_M_ARENA_MAX = -8


def _load_libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")  # (runs `ldconfig -p`: once, here)
    try:
        return ctypes.CDLL(name) if name else None
    except OSError:
        return None


_LIBC = _load_libc()


def _libc(name: str, argtypes: list[Any], restype: Any) -> Any:
    """The C library's function `name` with its signature set, or None where there is none
    (musl has no malloc_trim; macOS neither of ours)."""
    function = getattr(_LIBC, name, None)
    if function is not None:
        function.argtypes, function.restype = argtypes, restype
    return function


_TRIM = cast(Callable[[int], int] | None, _libc("malloc_trim", [ctypes.c_size_t], ctypes.c_int))


def limit_arenas(count: int = MALLOC_ARENAS) -> bool:
    """Cap glibc's malloc arenas at `count` (call before worker threads start); False where
    that is not possible, or when the admin chose a number with glibc's own MALLOC_ARENA_MAX."""
    if "MALLOC_ARENA_MAX" in os.environ:
        return False
    mallopt = _libc("mallopt", [ctypes.c_int, ctypes.c_int], ctypes.c_int)
    return mallopt is not None and bool(mallopt(_M_ARENA_MAX, count))


_pending = threading.Lock()


def release_memory() -> None:
    """Return the C heap's free pages to the system (glibc keeps them after large requests:
    freed chunks in the middle of a heap, and the heaps of worker threads, stay mapped)."""
    if _TRIM is not None:
        _TRIM(0)


def release_memory_soon(delay: float = RELEASE_DELAY_SECS) -> None:
    """`release_memory` in `delay` seconds, once however often it is asked for meanwhile:
    by then the large request's objects are gone (its reply sent, its follow-up done)."""
    if _TRIM is None or not _pending.acquire(blocking=False):
        return

    def run() -> None:
        try:
            release_memory()
        finally:
            _pending.release()

    timer = threading.Timer(delay, run)
    timer.daemon = True
    timer.start()
