"""kill -9 in the middle of a restore or a backup, at chosen points (the `ankihost` command
running by itself, killed by SIGKILL right there: `tests/support/crash.py`): the user's data
is as it was before or as it is after, never a mix, and the next start finishes or removes
what the crash left. Also: a backup to a full disk or a read-only one fails with a message and
leaves nothing."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from ankihost.snapshots.shelf import UserSnapshots
from ankihost.storage.collection import connect
from ankihost.storage.paths import UserFolder
from tests.support.admin_cli import ankihost_cli, crash_cli

USERS = [("alice", "pw"), ("bob", "pw2")]
MEDIA = {f"photo {i}.jpg": bytes([i]) * (3000 + i) for i in range(8)}


def notes(path: Path) -> int:
    db = connect(path, exclusive=False)
    try:
        assert db.execute("pragma integrity_check").fetchone()[0] == "ok"
        return int(db.execute("select count() from notes").fetchone()[0])
    finally:
        db.close()


@pytest.fixture
def prepared(tmp_path: Path, client_collection: bytes) -> tuple[Path, str]:
    """SYNC_BASE with alice's collection (40 notes) and media, bob's, and one snapshot of
    alice's holding 30 notes; the snapshot's id."""
    base = tmp_path / "prepared"
    for user in ("alice", "bob"):
        (base / user / "media").mkdir(parents=True)
        (base / user / "collection.anki2").write_bytes(client_collection)
    for name, data in MEDIA.items():
        (base / "alice" / "media" / name).write_bytes(data)
    fewer = tmp_path / "fewer.anki2"
    fewer.write_bytes(client_collection)
    db = connect(fewer, exclusive=False)
    db.execute("delete from notes where id in (select id from notes order by id limit 10)")
    db.close()
    shelf = UserSnapshots(UserFolder(base / "alice"))
    shelf.capture_file(fewer, "upload", taken=time.time() - 3600)
    [made] = shelf.settle(None)
    return base, made.id


def fresh_copy(prepared: tuple[Path, str], tmp_path: Path, name: str) -> Path:
    base = tmp_path / name
    shutil.copytree(prepared[0], base)
    return base


def leftovers(base: Path) -> list[str]:
    return sorted(str(p.relative_to(base)) for p in base.rglob("*")
                  if p.name.startswith((".restore-", ".freeze-", ".tmp-", ".pending-", ".scratch-")))


def recover(base: Path) -> dict[str, object]:
    """What an operator does next (the same recovery runs at server start): list alice's
    snapshots, which prepares her folder first."""
    result = ankihost_cli(base, USERS, "snapshot", "list", "alice", "--json")
    assert result.returncode == 0, result.stderr
    return dict(orjson.loads(result.stdout))


RESTORE_CRASHES = [
    ("ankihost.snapshots.compressed:expand", "after", 1, "before"),
    ("ankihost.snapshots.restore:_mark_changed", "after", 1, "before"),
    ("ankihost.snapshots.shelf:UserSnapshots.capture", "after", 1, "before"),
    ("ankihost.snapshots.restore:atomic_replace", "before", 1, "before"),
    ("os:replace", "after", 2, "after"),  # 1: the pending copy's rename, 2: the swap
    ("ankihost.snapshots.compressed:write", "after", 1, "after"),
    ("ankihost.snapshots.shelf:UserSnapshots.settle", "before", 2, "after"),
]


@pytest.mark.parametrize(("target", "when", "nth", "outcome"), RESTORE_CRASHES,
                         ids=[f"{t}-{w}-{n}" for t, w, n, _ in RESTORE_CRASHES])
def test_a_restore_killed_anywhere_leaves_the_old_or_the_new_collection(
    prepared: tuple[Path, str], tmp_path: Path, target: str, when: str, nth: int, outcome: str
) -> None:
    base, id = fresh_copy(prepared, tmp_path, "base"), prepared[1]
    crash_cli(base, USERS, target, when, nth, "snapshot", "restore", "alice", id)
    listed = recover(base)
    assert leftovers(base) == []
    assert notes(base / "alice" / "collection.anki2") == (40 if outcome == "before" else 30)
    kept = {s["reason"]: s["notes"] for s in listed["snapshots"]}  # type: ignore[union-attr]
    assert kept["upload"] == 30
    if outcome == "after":
        assert kept["restore"] == 40  # the collection the restore replaced
    again = ankihost_cli(base, USERS, "snapshot", "restore", "alice", id)
    assert again.returncode == 0, again.stderr
    assert notes(base / "alice" / "collection.anki2") == 30 and leftovers(base) == []


def alice_data(base: Path) -> tuple[int, dict[str, str]]:
    media = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in (base / "alice/media").iterdir()}
    return notes(base / "alice" / "collection.anki2"), media


BACKUP_CRASHES = [
    ("ankihost.snapshots.freeze:_link_media", "after", 1, False),
    ("ankihost.snapshots.archive:ArchiveWriter.add_file", "after", 4, False),
    ("ankihost.snapshots.backup:verify", "before", 1, False),
    ("ankihost.snapshots.backup:publish_new", "after", 1, True),  # just renamed into place
]


@pytest.mark.parametrize(("target", "when", "nth", "written"), BACKUP_CRASHES,
                         ids=[f"{t}-{w}-{n}" for t, w, n, _ in BACKUP_CRASHES])
def test_a_backup_killed_anywhere_leaves_the_data_as_it_was_and_no_half_archive(
    prepared: tuple[Path, str], tmp_path: Path, target: str, when: str, nth: int, written: bool
) -> None:
    base = fresh_copy(prepared, tmp_path, "base")
    dest_folder = tmp_path / "backups"
    dest_folder.mkdir()
    dest = dest_folder / "b.tar.zst"
    before = alice_data(base)
    crash_cli(base, USERS, target, when, nth, "backup", str(dest))
    assert dest.exists() == written
    if written:
        verified = ankihost_cli(base, USERS, "backup", "--verify", str(dest))
        assert verified.returncode == 0, verified.stderr
        dest.unlink()
    recover(base)
    assert alice_data(base) == before and leftovers(base) == []
    again = ankihost_cli(base, USERS, "backup", str(dest))
    assert again.returncode == 0, again.stderr
    assert [p.name for p in dest_folder.iterdir()] == ["b.tar.zst"]  # the dead run's part is gone


@contextlib.contextmanager
def small_disk(path: Path, size: str, *, read_only: bool = False) -> Iterator[Path]:
    """A real file system of its own (tmpfs) at `path`: so small it fills up, or read-only."""
    path.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], check=True)
    try:
        if read_only:
            subprocess.run(["mount", "-o", "remount,ro", str(path)], check=True)
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=True)


def test_a_backup_to_a_full_disk_fails_clearly_and_leaves_nothing(
    prepared: tuple[Path, str], tmp_path: Path
) -> None:
    base = fresh_copy(prepared, tmp_path, "base")
    (base / "alice/media/big.bin").write_bytes(os.urandom(1_300_000))  # incompressible
    before = alice_data(base)
    with small_disk(tmp_path / "full", "512k") as disk:
        result = ankihost_cli(base, USERS, "backup", str(disk / "b.tar.zst"))
        assert result.returncode == 1
        assert "No space left on device" in result.stderr and "no archive was written" in result.stderr
        assert list(disk.iterdir()) == []
    assert alice_data(base) == before and leftovers(base) == []


def test_a_backup_to_a_read_only_disk_fails_clearly_and_leaves_nothing(
    prepared: tuple[Path, str], tmp_path: Path
) -> None:
    base = fresh_copy(prepared, tmp_path, "base")
    with small_disk(tmp_path / "ro", "1m", read_only=True) as disk:
        result = ankihost_cli(base, USERS, "backup", str(disk / "b.tar.zst"))
        assert result.returncode == 1 and "Read-only file system" in result.stderr, result.stderr
        assert list(disk.iterdir()) == []
    assert leftovers(base) == []


def test_an_export_to_a_full_disk_fails_clearly_and_leaves_nothing(
    prepared: tuple[Path, str], tmp_path: Path
) -> None:
    base = fresh_copy(prepared, tmp_path, "base")
    (base / "alice/media/big.bin").write_bytes(os.urandom(1_300_000))
    with small_disk(tmp_path / "full", "256k") as disk:
        result = ankihost_cli(base, USERS, "export", "alice", str(disk / "a.colpkg"))
        assert result.returncode == 1 and "No space left on device" in result.stderr, result.stderr
        assert list(disk.iterdir()) == []
    assert leftovers(base) == []


def test_the_data_of_a_removed_account_is_backed_up_too(prepared: tuple[Path, str], tmp_path: Path) -> None:
    base = fresh_copy(prepared, tmp_path, "base")
    shutil.copytree(base / "bob", base / "carol")  # no account names carol any more
    result = ankihost_cli(base, USERS, "backup", str(tmp_path / "b.tar.zst"))
    assert result.returncode == 0, result.stderr
    target = tmp_path / "unpacked"
    assert ankihost_cli(base, USERS, "backup", "--restore", str(tmp_path / "b.tar.zst"), str(target)).returncode == 0
    assert notes(target / "carol" / "collection.anki2") == 40
    assert sqlite3.connect(target / ".ankihost" / "accounts.db").execute("pragma integrity_check").fetchone() == ("ok",)


SERVER_CRASHES = [
    ("ankihost.snapshots.shelf:UserSnapshots.settle", "before", 1),  # the pending copy, untouched
    ("ankihost.snapshots.compressed:write", "after", 1),  # compressed, not yet renamed
    # 1: the pending copy's link made durable; 2: the snapshot renamed into place, the pending
    # copy not yet removed
    ("ankihost.snapshots.shelf:fsync_dir", "before", 2),
]


@pytest.mark.parametrize(("target", "when", "nth"), SERVER_CRASHES,
                         ids=[f"{t}-{w}-{n}" for t, w, n in SERVER_CRASHES])
def test_a_server_killed_while_keeping_a_snapshot_finishes_it_at_start_up(
    tmp_path: Path, target: str, when: str, nth: int
) -> None:
    """The real client full-uploads twice; the server is killed while it keeps the replaced
    collection as a snapshot (after the reply); the next start finishes the snapshot."""
    from tests.support.client import SyncClient
    from tests.support.server import SyncServer

    base = tmp_path / "base"
    command = [sys.executable, "-m", "tests.support.crash", target, when, str(nth), "--", "serve"]
    server = SyncServer("ankihost", USERS, base=base, command=command)
    device = None
    with server, server.log_on_failure():
        device = SyncClient(server, *USERS[0], name="crash")
        try:
            basic = device.col.models.by_name("Basic")
            for i in range(12):
                note = device.col.new_note(basic)
                note["Front"] = f"first {i}"
                device.col.add_note(note, 1)
            assert device.sync().action == "upload"
            note = device.col.new_note(basic)
            note["Front"] = "second"
            device.col.add_note(note, 1)
            device.full_upload()
            deadline = time.monotonic() + 30
            while server.alive() and time.monotonic() < deadline:
                time.sleep(0.05)
            assert server.proc is not None and server.proc.poll() == -9, server.log_tail()
            server.command = [sys.executable, "-m", "ankihost"]
            server.start()  # start-up finishes the snapshot
            listed = orjson.loads(ankihost_cli(base, USERS, "snapshot", "list", "alice", "--json").stdout)
            assert [(s["reason"], s["notes"]) for s in listed["snapshots"]] == [("upload", 12)]
            assert leftovers(base) == []
            assert device.sync().required == 0  # NO_CHANGES: the upload itself stands
        finally:
            device.cleanup()
