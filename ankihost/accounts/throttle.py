"""Login throttling: repeated failures slow, then refuse (429), further tries for a while.

Counted in memory, per address, per (name, address) and per name, over a sliding window:

- an address with ADDRESS_LIMIT failures (any names) is refused for LOCKOUT_SECS;
- a name that failed PAIR_LIMIT times from one address is refused from that address only,
  so the right password from anywhere else still works;
- a name with NAME_SLOW_AFTER failures from anywhere answers every try late (SLOW_SECS, more
  with more failures): guessing it from many addresses stays slow, the owner only waits.

Refusals are 429 (never 403: the desktop app forgets its login on any 403). A success clears
that name's count for that address. Memory is bounded by MAX_TRACKED entries per table.
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from dataclasses import dataclass

WINDOW_SECS = 15 * 60
LOCKOUT_SECS = 15 * 60
ADDRESS_LIMIT = 20
PAIR_LIMIT = 5
NAME_SLOW_AFTER = 5
SLOW_SECS = 1.0
MAX_SLOW_SECS = 5.0
MAX_TRACKED = 100_000


class Throttled(Exception):
    """Too many failed logins: refuse this try (429)."""

    def __init__(self, reason: str, retry_after: float) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


@dataclass
class _Track:
    failures: deque[float]
    locked_until: float = 0.0


class _Table:
    """Failure times per key, oldest keys dropped past MAX_TRACKED."""

    def __init__(self) -> None:
        self._tracks: OrderedDict[object, _Track] = OrderedDict()

    def get(self, key: object, now: float) -> _Track | None:
        track = self._tracks.get(key)
        if track is not None:
            while track.failures and track.failures[0] <= now - WINDOW_SECS:
                track.failures.popleft()
            if not track.failures and track.locked_until <= now:
                del self._tracks[key]
                return None
        return track

    def fail(self, key: object, now: float, limit: int) -> bool:
        """Count a failure; whether this one locked the key out."""
        track = self.get(key, now) or self._tracks.setdefault(key, _Track(deque()))
        self._tracks.move_to_end(key)
        track.failures.append(now)
        if len(self._tracks) > MAX_TRACKED:
            self._tracks.popitem(last=False)
        if len(track.failures) >= limit and track.locked_until <= now:
            track.locked_until = now + LOCKOUT_SECS
            return True
        return False

    def clear(self, key: object) -> None:
        self._tracks.pop(key, None)

    def locked(self, key: object, now: float) -> float:
        """Seconds the key stays refused (0: not refused)."""
        track = self.get(key, now)
        return max(0.0, track.locked_until - now) if track else 0.0

    def count(self, key: object, now: float) -> int:
        track = self.get(key, now)
        return len(track.failures) if track else 0


class LoginThrottle:
    def __init__(self) -> None:
        self._addresses = _Table()
        self._pairs = _Table()
        self._names = _Table()

    def check(self, name: str, address: str, now: float | None = None) -> float:
        """Raise Throttled if this try is refused; else the seconds to wait before answering."""
        now = time.monotonic() if now is None else now
        if wait := self._addresses.locked(address, now):
            raise Throttled(f"too many failed logins from {address}", wait)
        if wait := self._pairs.locked((name, address), now):
            raise Throttled(f"too many failed logins for {name!r} from {address}", wait)
        excess = self._names.count(name, now) - NAME_SLOW_AFTER
        return 0.0 if excess < 0 else min(MAX_SLOW_SECS, SLOW_SECS * (1 + excess // NAME_SLOW_AFTER))

    def failed(self, name: str, address: str, now: float | None = None) -> bool:
        """Count a failed login; whether it locked the address or the name there out."""
        now = time.monotonic() if now is None else now
        self._names.fail(name, now, limit=10**9)
        by_pair = self._pairs.fail((name, address), now, PAIR_LIMIT)
        by_address = self._addresses.fail(address, now, ADDRESS_LIMIT)
        return by_pair or by_address

    def succeeded(self, name: str, address: str) -> None:
        self._pairs.clear((name, address))
