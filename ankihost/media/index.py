"""The server media index, `<user>/media.db`: one row per file name ever seen, and the media USN.

Same file name, schema (user_version 4, tables `media` and `meta`) and USN rules as the official
server, so either server can take over a folder the other wrote. All media SQL lives here,
including this file's own migrations (keyed by `user_version`). No file I/O beyond SQLite.
"""

from __future__ import annotations

import enum
import sqlite3
import time
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ankihost.errors import ServerError

SCHEMA_VERSION = 4
# The official server's page size for mediaChanges.
MAX_CHANGES_PER_REPLY = 1000
# Our per-user lock serialises requests; this only covers an admin tool reading meanwhile.
BUSY_TIMEOUT_MS = 5000
# Names per `in (…)` lookup; well under SQLite's smallest limit on bound parameters (999).
_MAX_QUERY_NAMES = 500

_CREATE_V4 = """
create table media (
  fname text not null primary key,
  csum blob not null,
  size int not null, -- 0 = deleted (a tombstone keeps the last csum)
  usn int not null,
  mtime int not null
);
create index ix_usn on media (usn);
create table meta (
  last_usn int not null,
  total_bytes int not null,
  total_nonempty_files int not null
);
insert into meta (last_usn, total_bytes, total_nonempty_files) values (0, 0, 0);
"""

# Version 3 (older official servers): media(fname, csum nullable, sz, usn, deleted), meta(usn, sz).
# Tombstones there had no csum and cannot be carried over; the USN never goes down.
_UPGRADE_V3 = """
create table media_v4 (
  fname text not null primary key,
  csum blob not null,
  size int not null,
  usn int not null,
  mtime int not null
);
insert into media_v4 (fname, csum, size, usn, mtime)
  select fname, csum, sz, usn, deleted from media where csum is not null;
create table meta_v4 (
  last_usn int not null,
  total_bytes int not null,
  total_nonempty_files int not null
);
insert into meta_v4 (last_usn, total_bytes, total_nonempty_files) select
  max((select coalesce(max(usn), 0) from meta), (select coalesce(max(usn), 0) from media)),
  (select coalesce(sum(size), 0) from media_v4 where size > 0),
  (select count(*) from media_v4 where size > 0);
drop table media;
drop table meta;
alter table media_v4 rename to media;
alter table meta_v4 rename to meta;
create index ix_usn on media (usn);
"""

# Recorded migrations: from user_version → the script that brings the file to SCHEMA_VERSION.
_MIGRATIONS: dict[int, str] = {0: _CREATE_V4, 3: _UPGRADE_V3}


@dataclass(frozen=True)
class Entry:
    name: str
    sha1: bytes
    size: int  # 0 = deleted
    usn: int
    mtime: int

    @property
    def live(self) -> bool:
        return self.size > 0


@dataclass
class Totals:
    last_usn: int
    total_bytes: int
    live_files: int


@dataclass(frozen=True)
class IndexChanges:
    """What one write transaction does: from media USN `usn_before`, the final row of every
    name it changed, and the `meta` totals after it (the media journal keeps this so that a
    commit lost to a power cut can be replayed)."""

    usn_before: int
    rows: list[Entry]
    totals: Totals

    @property
    def usn(self) -> int:
        return self.totals.last_usn


class Outcome(enum.Enum):
    """What recording one uploaded entry did; only the last three consume a USN."""

    ALREADY_DELETED = "already deleted"
    IDENTICAL = "already have"
    ADDED = "added"
    REPLACED = "replaced"
    REMOVED = "removed"

    @property
    def changed(self) -> bool:
        return self in (Outcome.ADDED, Outcome.REPLACED, Outcome.REMOVED)


class MediaIndex:
    """One open `media.db`. Not thread-safe: callers hold the user's lock."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    @classmethod
    def open(cls, path: Path) -> MediaIndex:
        db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        try:
            db.execute(f"pragma busy_timeout = {BUSY_TIMEOUT_MS}")
            # this connection is the only one while it is open, as for the collection: no
            # file locks taken and dropped around every read (three system calls each)
            db.execute("pragma locking_mode = exclusive")
            version = _supported_version(db)
            # WAL with synchronous=NORMAL: a commit does not wait for the disk. Every write
            # that must survive a power cut is a media batch (`user_media.MediaBatch`): its
            # record in the media log, flushed before the commit, holds the rows to replay,
            # and the WAL is flushed by the checkpoint that empties the log (`journal.py`).
            db.execute("pragma journal_mode = wal")
            db.execute("pragma synchronous = normal")
            _migrate(db, version)
        except BaseException:
            db.close()
            raise
        return cls(db)

    def close(self) -> None:
        self.db.close()

    def totals(self) -> Totals:
        row = self.db.execute(
            "select last_usn, total_bytes, total_nonempty_files from meta"
        ).fetchone()
        return Totals(*row)

    def last_usn(self) -> int:
        return self.totals().last_usn

    def live_file_count(self) -> int:
        return self.totals().live_files

    def get(self, name: str) -> Entry | None:
        row = self.db.execute(
            "select fname, csum, size, usn, mtime from media where fname = ?", (name,)
        ).fetchone()
        return Entry(*row) if row is not None else None

    def get_live(self, name: str) -> Entry | None:
        entry = self.get(name)
        return entry if entry is not None and entry.live else None

    def get_live_many(self, names: Collection[str]) -> dict[str, Entry]:
        """The live rows of those of `names` that have one, looked up at once."""
        return _live_rows(self.db, names)

    def has_name(self, name: str) -> bool:
        return self.get(name) is not None

    def changes_after(self, usn: int, limit: int = MAX_CHANGES_PER_REPLY) -> list[Entry]:
        """Rows changed after `usn`, oldest change first, at most `limit`."""
        rows = self.db.execute(
            "select fname, csum, size, usn, mtime from media where usn > ? order by usn limit ?",
            (usn, limit),
        )
        return [Entry(*row) for row in rows]

    @contextmanager
    def atomic(self) -> Iterator[Writer]:
        """One write transaction: commits (with the updated `meta` row) unless an error escapes."""
        self.db.execute("begin immediate")
        try:
            writer = Writer(self.db, self.totals())
            yield writer
            writer.save()
            self.db.execute("commit")
        except BaseException:
            self.db.execute("rollback")
            raise

    def forget(self, name: str) -> None:
        """Drop a live row without a tombstone (its file vanished), keeping `meta` consistent."""
        with self.atomic() as writer:
            writer.forget(name)

    def replay(self, changes: IndexChanges) -> None:
        """Write a journaled transaction again, when its commit was lost (see `journal.py`)."""
        with self.atomic() as writer:
            writer.replay(changes)


class Writer:
    """Records uploaded changes inside `MediaIndex.atomic()`, one USN per effective change."""

    def __init__(self, db: sqlite3.Connection, totals: Totals) -> None:
        self.db = db
        self.totals = totals
        self.usn_before = totals.last_usn
        self._known: dict[str, Entry | None] = {}  # name → live row, for names looked up
        self._written: dict[str, Entry] = {}  # name → the row this transaction stored last
        self._unsaved: list[Entry] = []  # rows stored here, written by `save` in one statement

    def prefetch(self, names: Collection[str]) -> None:
        """Look up the live rows of `names` at once (an upload has at most 25), so recording
        them needs no query of its own."""
        missing = [name for name in names if name not in self._known]
        found = _live_rows(self.db, missing)
        self._known.update((name, found.get(name)) for name in missing)

    @property
    def last_usn(self) -> int:
        return self.totals.last_usn

    def live(self, name: str) -> Entry | None:
        """The name's live row as this transaction sees it now."""
        return self._live(name)

    def changes(self) -> IndexChanges:
        """What this transaction has written so far."""
        totals = Totals(self.totals.last_usn, self.totals.total_bytes, self.totals.live_files)
        return IndexChanges(self.usn_before, list(self._written.values()), totals)

    def replay(self, changes: IndexChanges) -> None:
        """The rows and totals of a journaled transaction, written by `save` like new ones."""
        self._unsaved = list(changes.rows)
        self.totals = Totals(
            changes.totals.last_usn, changes.totals.total_bytes, changes.totals.live_files
        )

    def record_addition(self, name: str, sha1: bytes, size: int) -> Outcome:
        if size <= 0:
            raise ValueError("an added media file must not be empty")
        old = self._live(name)
        if old is not None and old.sha1 == sha1:
            return Outcome.IDENTICAL
        if old is not None:
            self._count(-old.size, -1)
        self._count(size, 1)
        self._store(name, sha1, size)
        return Outcome.REPLACED if old is not None else Outcome.ADDED

    def record_deletion(self, name: str) -> Outcome:
        old = self._live(name)
        if old is None:
            return Outcome.ALREADY_DELETED
        self._count(-old.size, -1)
        self._store(name, old.sha1, 0)
        return Outcome.REMOVED

    def forget(self, name: str) -> None:
        self._save_rows()
        old = self._live(name)
        if old is not None:
            self._count(-old.size, -1)
            self.db.execute("delete from media where fname = ?", (name,))
            self._known[name] = None

    def save(self) -> None:
        """Write the rows stored so far and the `meta` totals (before the commit)."""
        self._save_rows()
        t = self.totals
        self.db.execute(
            "update meta set last_usn = ?, total_bytes = ?, total_nonempty_files = ?",
            (t.last_usn, t.total_bytes, t.live_files),
        )

    def _save_rows(self) -> None:
        rows, self._unsaved = self._unsaved, []
        if rows:
            self.db.executemany(
                "insert or replace into media (fname, csum, size, usn, mtime)"
                " values (?, ?, ?, ?, ?)",
                [(e.name, e.sha1, e.size, e.usn, e.mtime) for e in rows],
            )

    def _live(self, name: str) -> Entry | None:
        if name in self._known:
            return self._known[name]
        row = self.db.execute(
            "select fname, csum, size, usn, mtime from media where fname = ? and size > 0",
            (name,),
        ).fetchone()
        return Entry(*row) if row is not None else None

    def _count(self, size_delta: int, files_delta: int) -> None:
        self.totals.total_bytes = max(0, self.totals.total_bytes + size_delta)
        self.totals.live_files = max(0, self.totals.live_files + files_delta)

    def _store(self, name: str, sha1: bytes, size: int) -> None:
        self.totals.last_usn += 1
        entry = Entry(name, sha1, size, self.totals.last_usn, int(time.time()))
        self._unsaved.append(entry)
        self._known[name] = entry if size > 0 else None
        self._written[name] = entry


def _live_rows(db: sqlite3.Connection, names: Collection[str]) -> dict[str, Entry]:
    """name → live row, for those of `names` that have one; one query per 500 names."""
    found: dict[str, Entry] = {}
    unique = list(dict.fromkeys(names))
    for start in range(0, len(unique), _MAX_QUERY_NAMES):
        part = unique[start : start + _MAX_QUERY_NAMES]
        rows = db.execute(
            "select fname, csum, size, usn, mtime from media where size > 0 and fname in"
            f" ({', '.join('?' * len(part))})",
            part,
        )
        found.update((row[0], Entry(*row)) for row in rows)
    return found


def _supported_version(db: sqlite3.Connection) -> int:
    """The file's user_version; ServerError, before anything is written, if we cannot serve it."""
    version: int = db.execute("pragma user_version").fetchone()[0]
    if version != SCHEMA_VERSION and version not in _MIGRATIONS:
        raise ServerError(f"media.db has unsupported user_version {version}")
    return version


def _migrate(db: sqlite3.Connection, version: int) -> None:
    if version != SCHEMA_VERSION:
        script = _MIGRATIONS[version]
        _run_in_transaction(db, lambda: _execute_script(db, script))


def _execute_script(db: sqlite3.Connection, script: str) -> None:
    for statement in script.split(";"):
        if statement.strip():
            db.execute(statement)
    db.execute(f"pragma user_version = {SCHEMA_VERSION}")


def _run_in_transaction(db: sqlite3.Connection, work: Callable[[], None]) -> None:
    db.execute("begin exclusive")
    try:
        work()
        db.execute("commit")
    except BaseException:
        db.execute("rollback")
        raise
