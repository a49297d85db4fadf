"""Which snapshots to keep: by count and by age, and never the newest.

A snapshot goes when more than `keep` newer ones exist (counting itself, the newest `keep`
stay), or when it is older than `keep_days`. The newest one always stays, however old: a user
who has not synced for months still has the copy from before their last change. Pure
functions; `snapshots/shelf.py` applies the verdict.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

from ankihost.config import Settings

DAY_SECS = 24 * 60 * 60


class Dated(Protocol):
    @property
    def taken(self) -> int: ...

    @property
    def id(self) -> str: ...


D = TypeVar("D", bound=Dated)


@dataclass(frozen=True)
class Retention:
    keep: int  # the most snapshots kept per user (at least 1)
    keep_days: float  # snapshots older than this many days are deleted (all but the newest)

    def __post_init__(self) -> None:
        if self.keep < 1 or self.keep_days <= 0:
            raise ValueError("keep must be at least 1 and keep_days more than 0")


def retention_of(settings: Settings) -> Retention:
    """The policy ANKIHOST_SNAPSHOT_KEEP and ANKIHOST_SNAPSHOT_KEEP_DAYS set."""
    return Retention(settings.snapshot_keep, settings.snapshot_keep_days)


def expired(snapshots: Sequence[D], now: float, policy: Retention) -> list[D]:
    """The snapshots `policy` no longer keeps at time `now` (Unix seconds), oldest first."""
    newest_first = sorted(snapshots, key=lambda s: (s.taken, s.id), reverse=True)
    oldest_kept = now - policy.keep_days * DAY_SECS
    gone = [s for rank, s in enumerate(newest_first)
            if rank > 0 and (rank >= policy.keep or s.taken < oldest_kept)]
    return gone[::-1]
