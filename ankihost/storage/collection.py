"""Opening a user's collection.anki2 the way every client expects it to be opened.

Owns the connection settings (the `unicase` collation, WAL, exclusive locking), the one
`atomic()` transaction helper and the `col` row. It knows nothing about HTTP or sessions.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)


def unicase(a: str, b: str) -> int:
    """Case-insensitive order used by every name index of a collection (spec 04 §1.2)."""
    a, b = a.casefold(), b.casefold()
    return (a > b) - (a < b)


def connect(path: Path | str, *, exclusive: bool = True) -> sqlite3.Connection:
    """A connection to a collection file with the collation and pragmas clients use.

    Autocommit mode: transactions are explicit, through `atomic()` or a sync session.
    """
    db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
    db.create_collation("unicase", unicase)
    if exclusive:
        db.execute("pragma locking_mode = exclusive")
    db.execute("pragma cache_size = -40960")
    return db


@contextmanager
def atomic(db: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """BEGIN … COMMIT, or a SAVEPOINT when already inside a transaction; rolls back on any error."""
    if db.in_transaction:
        db.execute("savepoint atomic")
        try:
            yield db
        except BaseException:
            db.execute("rollback to atomic")
            db.execute("release atomic")
            raise
        db.execute("release atomic")
        return
    db.execute("begin immediate")
    try:
        yield db
    except BaseException:
        db.execute("rollback")
        raise
    db.execute("commit")


@dataclass(frozen=True)
class ColRow:
    """The sync-relevant fields of the single `col` row."""

    crt: int
    mod: int
    scm: int
    usn: int
    ls: int
    ver: int


def read_col(db: sqlite3.Connection) -> ColRow:
    row = db.execute("select crt, mod, scm, usn, ls, ver from col").fetchone()
    return ColRow(*row)


def has_cards(db: sqlite3.Connection) -> bool:
    return bool(db.execute("select exists(select 1 from cards)").fetchone()[0])


def has_content(db: sqlite3.Connection) -> bool:
    """Any note, card or review: what makes a collection worth a snapshot."""
    return bool(db.execute(
        "select exists(select 1 from notes) or exists(select 1 from cards)"
        " or exists(select 1 from revlog)"
    ).fetchone()[0])


# SQLite result codes that mean "our disk, memory or file handles", not "the data is bad".
_SERVER_FAULT_CODES = frozenset({
    3,  # SQLITE_PERM
    5,  # SQLITE_BUSY
    6,  # SQLITE_LOCKED
    7,  # SQLITE_NOMEM
    8,  # SQLITE_READONLY
    10,  # SQLITE_IOERR
    13,  # SQLITE_FULL
    14,  # SQLITE_CANTOPEN
    22,  # SQLITE_NOLFS
})


def is_server_fault(exc: sqlite3.Error) -> bool:
    """True when the error is the server's trouble (disk full, I/O, memory), worth a 500."""
    code = getattr(exc, "sqlite_errorcode", None)
    return code is not None and code & 0xFF in _SERVER_FAULT_CODES


def mark_downloaded(db: sqlite3.Connection) -> None:
    """What a full download does to the server's copy first: usn + 1 and a new `mod`."""
    with atomic(db):
        db.execute("update col set usn = usn + 1, mod = ?", (now_millis(),))


def checkpoint(db: sqlite3.Connection) -> bool:
    """Fold the open collection's WAL into the main file; False when that was not possible."""
    busy, _, _ = db.execute("pragma wal_checkpoint(truncate)").fetchone()
    return not busy


def checkpoint_file(path: Path) -> None:
    """Fold a closed collection's `-wal` into the main file (opening and closing does it)."""
    db = connect(path)
    try:
        db.execute("pragma wal_checkpoint(truncate)")
    finally:
        db.close()


def fold_wal(path: Path) -> None:
    """Make a closed collection's main file complete before it is kept or swapped: after a
    crash its last commits may still sit in the -wal (a clean close folded and removed it:
    nothing to do then). A file SQLite cannot open is left as it is, with a warning."""
    if not Path(f"{path}-wal").exists():
        return
    try:
        checkpoint_file(path)
    except sqlite3.Error as exc:
        log.warning("could not fold the -wal of %s into it: %s", path, exc)


def now_millis() -> int:
    return int(time.time() * 1000)
