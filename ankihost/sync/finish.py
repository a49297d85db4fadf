"""`finish`: stamp the collection (`ls`, `mod`, `usn + 1`) inside the session's transaction.

The returned time is exactly what is stored in `col.mod`; clients copy it and compare it for
equality in the next `meta`. Committing and ending the session is `session.commit`'s job.
"""

from __future__ import annotations

import sqlite3

from ankihost.storage import objects
from ankihost.storage.collection import now_millis, read_col


def finish(db: sqlite3.Connection) -> int:
    """The new modification time in ms, strictly later than the previous one."""
    now = max(now_millis(), read_col(db).mod + 1)
    objects.finish_col(db, now)
    return now
