"""Giving memory back to the system once it is no longer used.

glibc's malloc keeps freed memory in its arenas (one per thread that allocated) rather than
returning it, so after idle users' databases are closed (their page caches freed) or a big
request is done, the process would keep its peak size for good. `release_unused` asks the
allocator to return what it can (`malloc_trim(0)`); elsewhere it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from collections.abc import Callable


def _malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        trim: Callable[[int], int] | None = getattr(ctypes.CDLL(name), "malloc_trim", None)
    except OSError:
        return None
    return trim


_TRIM = _malloc_trim()


def release_unused() -> None:
    """Return the allocator's free memory to the system (a few ms; from any thread)."""
    if _TRIM is not None:
        _TRIM(0)
