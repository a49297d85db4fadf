"""The media index: the official schema, USN rules, paging, transactions, migrations."""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from ankihost.errors import ServerError
from ankihost.media.index import MAX_CHANGES_PER_REPLY, MediaIndex, Outcome


def sha(data: bytes) -> bytes:
    return hashlib.sha1(data).digest()


@pytest.fixture
def index(tmp_path: Path) -> Iterator[MediaIndex]:
    opened = MediaIndex.open(tmp_path / "media.db")
    yield opened
    opened.close()


def test_fresh_file_has_the_official_schema(tmp_path: Path) -> None:
    MediaIndex.open(tmp_path / "media.db").close()
    db = sqlite3.connect(tmp_path / "media.db")
    assert db.execute("pragma user_version").fetchone() == (4,)
    assert db.execute("pragma journal_mode").fetchone() == ("wal",)
    columns = {
        table: [(r[1], r[2].lower(), r[3], r[5]) for r in db.execute(f"pragma table_info({table})")]
        for table in ("media", "meta")
    }
    assert columns["media"] == [
        ("fname", "text", 1, 1), ("csum", "blob", 1, 0), ("size", "int", 1, 0),
        ("usn", "int", 1, 0), ("mtime", "int", 1, 0),
    ]
    assert columns["meta"] == [
        ("last_usn", "int", 1, 0), ("total_bytes", "int", 1, 0),
        ("total_nonempty_files", "int", 1, 0),
    ]
    assert db.execute("select * from meta").fetchall() == [(0, 0, 0)]
    indexes = db.execute("select name, sql from sqlite_master where type = 'index'").fetchall()
    assert ("ix_usn", "CREATE INDEX ix_usn ON media (usn)") in [
        (n, " ".join(s.split()).replace("create index", "CREATE INDEX").replace(" on ", " ON "))
        for n, s in indexes if s
    ]
    db.close()


def test_upload_rules_one_usn_per_effective_change(index: MediaIndex) -> None:
    with index.atomic() as w:
        assert w.record_deletion("never.txt") is Outcome.ALREADY_DELETED
        assert w.record_addition("a.txt", sha(b"a"), 1) is Outcome.ADDED
        assert w.record_addition("b.txt", sha(b"bb"), 2) is Outcome.ADDED
        assert w.last_usn == 2
    with index.atomic() as w:
        assert w.record_addition("a.txt", sha(b"a"), 1) is Outcome.IDENTICAL
        assert w.record_addition("b.txt", sha(b"BBB"), 3) is Outcome.REPLACED
        assert w.record_deletion("a.txt") is Outcome.REMOVED
        assert w.record_deletion("a.txt") is Outcome.ALREADY_DELETED
    totals = index.totals()
    assert (totals.last_usn, totals.total_bytes, totals.live_files) == (4, 3, 1)
    tomb = index.get("a.txt")
    assert tomb is not None and not tomb.live and tomb.sha1 == sha(b"a") and tomb.usn == 4
    assert index.get_live("a.txt") is None
    with index.atomic() as w:
        assert w.record_addition("a.txt", sha(b"a"), 1) is Outcome.ADDED  # resurrected
    assert index.last_usn() == 5 and index.live_file_count() == 2


def test_changes_are_in_usn_order_with_latest_state_only(index: MediaIndex) -> None:
    with index.atomic() as w:
        w.record_addition("z.txt", sha(b"1"), 1)
        w.record_addition("a.txt", sha(b"2"), 1)
        w.record_addition("m.txt", sha(b"3"), 1)
        w.record_addition("z.txt", sha(b"4"), 1)  # z changes again: only usn 4 is reported
        w.record_deletion("a.txt")
    rows = [(e.name, e.usn, e.sha1.hex() if e.live else "") for e in index.changes_after(0)]
    assert rows == [("m.txt", 3, sha(b"3").hex()), ("z.txt", 4, sha(b"4").hex()), ("a.txt", 5, "")]
    assert [e.usn for e in index.changes_after(4)] == [5]
    assert index.changes_after(5) == [] and index.changes_after(10**6) == []
    assert len(index.changes_after(-(2**31))) == 3


def test_changes_are_paged_by_1000(index: MediaIndex) -> None:
    with index.atomic() as w:
        for i in range(MAX_CHANGES_PER_REPLY + 5):
            w.record_addition(f"f{i:05}.txt", sha(str(i).encode()), 1)
    first = index.changes_after(0)
    assert len(first) == MAX_CHANGES_PER_REPLY
    assert [e.usn for e in first] == list(range(1, MAX_CHANGES_PER_REPLY + 1))
    rest = index.changes_after(first[-1].usn)
    assert [e.usn for e in rest] == list(range(1001, 1006))


def test_an_error_rolls_back_rows_and_counters(index: MediaIndex) -> None:
    with index.atomic() as w:
        w.record_addition("a.txt", sha(b"a"), 1)
    with pytest.raises(RuntimeError), index.atomic() as w:
        w.record_addition("b.txt", sha(b"b"), 1)
        w.record_deletion("a.txt")
        raise RuntimeError("disk on fire")
    assert index.last_usn() == 1 and index.live_file_count() == 1
    assert index.get("b.txt") is None and index.get_live("a.txt") is not None


def test_forget_drops_the_row_without_a_tombstone(index: MediaIndex) -> None:
    with index.atomic() as w:
        w.record_addition("a.txt", sha(b"a"), 1)
        w.record_addition("b.txt", sha(b"bb"), 2)
    index.forget("a.txt")
    assert index.get("a.txt") is None
    totals = index.totals()
    assert (totals.last_usn, totals.total_bytes, totals.live_files) == (2, 2, 1)


def test_reopening_keeps_everything(tmp_path: Path) -> None:
    first = MediaIndex.open(tmp_path / "media.db")
    with first.atomic() as w:
        w.record_addition("a.txt", sha(b"a"), 1)
    first.close()
    again = MediaIndex.open(tmp_path / "media.db")
    assert again.last_usn() == 1 and again.get_live("a.txt") is not None
    again.close()


def _v3_file(path: Path) -> None:
    db = sqlite3.connect(path)
    db.executescript(
        """
        create table media (fname text not null primary key, csum blob, sz int not null,
                            usn int not null, deleted int not null);
        create index ix_usn on media (usn);
        create table meta (usn int not null, sz int not null);
        insert into meta values (9, 7);
        insert into media values ('a.txt', x'aa', 3, 2, 0), ('b.txt', x'bb', 4, 5, 0),
                                 ('gone.txt', null, 0, 9, 1);
        pragma user_version = 3;
        """
    )
    db.close()


def test_a_version_3_file_is_migrated_without_lowering_the_usn(tmp_path: Path) -> None:
    _v3_file(tmp_path / "media.db")
    index = MediaIndex.open(tmp_path / "media.db")
    totals = index.totals()
    assert (totals.last_usn, totals.total_bytes, totals.live_files) == (9, 7, 2)
    assert [(e.name, e.usn) for e in index.changes_after(0)] == [("a.txt", 2), ("b.txt", 5)]
    index.close()
    db = sqlite3.connect(tmp_path / "media.db")
    assert db.execute("pragma user_version").fetchone() == (4,)
    db.close()


def test_an_unknown_version_is_refused_and_left_alone(tmp_path: Path) -> None:
    db = sqlite3.connect(tmp_path / "media.db")
    db.execute("pragma user_version = 5")
    db.close()
    before = (tmp_path / "media.db").read_bytes()
    with pytest.raises(ServerError):
        MediaIndex.open(tmp_path / "media.db")
    assert (tmp_path / "media.db").read_bytes() == before


@pytest.mark.parametrize("prefetch", [False, True])
def test_prefetched_lookups_give_the_same_outcomes(index: MediaIndex, prefetch: bool) -> None:
    with index.atomic() as w:
        w.record_addition("a", sha(b"a"), 1)
        w.record_addition("gone", sha(b"g"), 1)
    with index.atomic() as w:
        if prefetch:
            w.prefetch(["a", "gone", "new", "a", "never"])
        assert w.record_addition("a", sha(b"a"), 1) is Outcome.IDENTICAL
        assert w.record_addition("new", sha(b"n"), 1) is Outcome.ADDED
        assert w.record_addition("new", sha(b"n"), 1) is Outcome.IDENTICAL  # sees its own row
        assert w.record_addition("new", sha(b"n2"), 2) is Outcome.REPLACED
        assert w.record_deletion("gone") is Outcome.REMOVED
        assert w.record_deletion("gone") is Outcome.ALREADY_DELETED
        assert w.record_deletion("never") is Outcome.ALREADY_DELETED
        assert w.last_usn == 2 + 3
    totals = index.totals()
    assert (totals.last_usn, totals.total_bytes, totals.live_files) == (5, 3, 2)
    assert index.get_live("gone") is None and index.get("gone") is not None
