"""A user's snapshots on disk: capture, compress, list, expand, prune, and what a crash leaves."""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path

import pytest
import zstandard

from ankihost.errors import BadRequest
from ankihost.snapshots import compressed
from ankihost.snapshots.retention import DAY_SECS, Retention
from ankihost.snapshots.shelf import PERIODIC, UPLOAD, UserSnapshots, new_id, taken_of
from ankihost.storage.collection import connect
from ankihost.storage.paths import UserFolder


@pytest.fixture
def folder(tmp_path: Path, client_collection: bytes) -> UserFolder:
    user = UserFolder(tmp_path / "alice")
    user.ensure()
    user.collection.write_bytes(client_collection)
    return user


def live(folder: UserFolder) -> sqlite3.Connection:
    db = connect(folder.collection)
    db.execute("pragma journal_mode = wal")
    return db


def rows(path: Path, sql: str) -> list[tuple[object, ...]]:
    db = connect(path, exclusive=False)
    try:
        return db.execute(sql).fetchall()
    finally:
        db.close()


def test_a_capture_holds_committed_changes_still_in_the_wal(folder: UserFolder, tmp_path: Path) -> None:
    db = live(folder)
    db.execute("pragma wal_autocheckpoint = 0")
    db.execute("update col set usn = 777")
    shelf = UserSnapshots(folder)
    pending = shelf.capture(db, PERIODIC)
    assert pending.name.startswith(".pending-") and pending.name.endswith(".periodic.anki2")
    [made] = shelf.settle(None)
    assert not pending.exists()
    assert made.header is not None and made.header.col_usn == 777 and made.header.notes == 40
    out = tmp_path / "out.anki2"
    compressed.expand(made.path, out)
    assert rows(out, "select usn from col") == [(777,)]
    assert rows(out, "pragma integrity_check") == [("ok",)]
    db.close()


def test_the_file_is_plain_zstd_with_a_header_zstd_skips(folder: UserFolder, client_collection: bytes) -> None:
    shelf = UserSnapshots(folder)
    shelf.capture_file(folder.collection, UPLOAD)
    [made] = shelf.settle(None)
    assert zstandard.ZstdDecompressor().stream_reader(made.path.read_bytes()).read() == client_collection
    assert made.header is not None and made.header.raw_bytes == len(client_collection)
    assert made.file_bytes < len(client_collection) / 2


def test_ids_are_utc_times_made_unique() -> None:
    t = 1_800_000_000
    first = new_id(t, set())
    assert first == time.strftime("%Y%m%d-%H%M%S", time.gmtime(t))
    assert new_id(t, {first}) == first + "-2"
    assert new_id(t, {first, first + "-2"}) == first + "-3"
    assert taken_of(first) == t and taken_of(first + "-3") == t
    for bad in ("", "x", "20270101", "20270101-000000-1", "20271301-000000", "20270101-000000-02"):
        assert taken_of(bad) is None


def test_two_captures_in_one_second_get_two_ids(folder: UserFolder) -> None:
    shelf = UserSnapshots(folder)
    shelf.capture_file(folder.collection, UPLOAD, taken=1_800_000_000)
    shelf.capture_file(folder.collection, UPLOAD, taken=1_800_000_000)
    made = shelf.settle(None)
    assert [s.id for s in shelf.list()] == [made[0].id, made[0].id + "-2"]


def damaged(path: Path, at: int) -> None:
    data = bytearray(path.read_bytes())
    data[at] ^= 0xFF
    path.write_bytes(bytes(data))


def test_a_damaged_snapshot_is_refused_when_expanded(folder: UserFolder, tmp_path: Path) -> None:
    shelf = UserSnapshots(folder)
    shelf.capture_file(folder.collection, UPLOAD)
    [made] = shelf.settle(None)
    damaged(made.path, made.file_bytes // 2)
    with pytest.raises(BadRequest, match="damaged"):
        compressed.expand(made.path, tmp_path / "out.anki2")


def test_a_truncated_snapshot_is_refused_when_expanded(folder: UserFolder, tmp_path: Path) -> None:
    shelf = UserSnapshots(folder)
    shelf.capture_file(folder.collection, UPLOAD)
    [made] = shelf.settle(None)
    os.truncate(made.path, made.file_bytes - 200)
    with pytest.raises(BadRequest, match="damaged"):
        compressed.expand(made.path, tmp_path / "out.anki2")


def test_a_snapshot_with_a_broken_header_is_listed_without_one(folder: UserFolder) -> None:
    shelf = UserSnapshots(folder)
    shelf.capture_file(folder.collection, UPLOAD)
    [made] = shelf.settle(None)
    damaged(made.path, 0)
    [listed] = shelf.list()
    assert listed.id == made.id and listed.header is None
    with pytest.raises(BadRequest, match="not a snapshot"):
        compressed.read_header(made.path)


def test_retention_is_applied_when_settling(folder: UserFolder) -> None:
    shelf = UserSnapshots(folder)
    now = time.time()
    for age_days in (100, 50, 3, 2, 1):
        shelf.capture_file(folder.collection, PERIODIC, taken=now - age_days * DAY_SECS)
    shelf.settle(Retention(keep=2, keep_days=60))
    assert [s.taken for s in shelf.list()] == [taken_of(new_id(now - d * DAY_SECS, set())) for d in (2, 1)]
    assert shelf.disk_bytes() == sum(s.file_bytes for s in shelf.list())


def test_recovery_finishes_pending_copies_and_drops_partial_ones(folder: UserFolder) -> None:
    shelf = UserSnapshots(folder)
    shelf.capture_file(folder.collection, UPLOAD)  # "crash" before it was compressed
    partial = folder.new_snapshot_temp()
    partial.write_bytes(b"half a snapshot")
    assert folder.remove_leftovers() == [f"snapshots/{partial.name}"]
    shelf.recover()
    [made] = shelf.list()
    assert made.reason == UPLOAD and not shelf.has_pending()
    assert sorted(p.name for p in folder.snapshots.iterdir()) == [made.path.name]


def test_recovery_turns_the_previous_collection_of_older_versions_into_a_snapshot(
    folder: UserFolder, client_collection: bytes, tmp_path: Path
) -> None:
    folder.previous_collection.write_bytes(client_collection)
    os.utime(folder.previous_collection, (1_700_000_000, 1_700_000_000))
    UserSnapshots(folder).recover()
    assert not folder.previous_collection.exists()
    [made] = UserSnapshots(folder).list()
    assert made.reason == "previous" and made.taken == 1_700_000_000
    compressed.expand(made.path, tmp_path / "out.anki2")
    assert (tmp_path / "out.anki2").read_bytes() == client_collection
