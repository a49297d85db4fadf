"""Snapshots, restore, backup and export end to end: a real ankihost process, the real Anki
client (anki 26.9.3) as devices, and the `ankihost` command run as an operator runs it (a
separate process that talks to the running server over its admin channel)."""

from __future__ import annotations

import hashlib
import shutil
import threading
import zipfile
from pathlib import Path

import orjson
import pytest
import zstandard
from anki._backend import RustBackend
from anki.collection import Collection
from anki.import_export_pb2 import MediaEntries, PackageMetadata

from tests.support.admin_cli import ankihost_cli
from tests.support.client import NO_CHANGES, FullSyncRequired, SyncClient
from tests.support.content import build_rich_collection
from tests.support.media_files import write_media
from tests.support.server import SyncServer, running_server
from tests.support.snapshot import assert_same, only_tables, snapshot

pytestmark = pytest.mark.e2e

ALICE, BOB = ("alice", "alice's pass"), ("bob", "b0b:pass")
USERS = [ALICE, BOB]
# What a package or a restored server must carry exactly (every column of every row).
CONTENT = ("notes", "cards", "revlog", "decks", "deck_config", "notetypes", "fields", "templates", "tags")


def device(clients: dict[str, SyncClient], name: str, server: SyncServer, user: tuple[str, str] = ALICE) -> SyncClient:
    clients[name] = SyncClient(server, *user, name=name)
    return clients[name]


def add_notes(client: SyncClient, count: int, prefix: str) -> None:
    basic = client.col.models.by_name("Basic")
    for i in range(count):
        note = client.col.new_note(basic)
        note["Front"], note["Back"] = f"{prefix} {i}", "back"
        client.col.add_note(note, 1)


def unzstd(data: bytes) -> bytes:
    return zstandard.ZstdDecompressor().decompressobj().decompress(data)


def media_of(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir() if p.is_file()}


def admin(server: SyncServer, *args: str) -> str:
    result = ankihost_cli(server.base, server.users, *args)
    assert result.returncode == 0, f"ankihost {' '.join(args)}: {result.stdout}\n{result.stderr}"
    return result.stdout


def test_a_restore_undoes_a_stale_devices_full_upload(clients: dict[str, SyncClient]) -> None:
    with running_server("ankihost", USERS) as server:
        a = device(clients, "a", server)
        build_rich_collection(a.col, notes=120, reviews=30)
        assert a.sync().action == "upload"
        b = device(clients, "b", server)
        assert b.sync().action == "download"
        add_notes(a, 15, "made on a after b last synced")
        assert a.sync().action == "normal"
        wanted = snapshot(a.col)

        add_notes(b, 1, "stale b")
        b.full_upload()  # the user chose Upload on the stale device: a's 15 notes are gone

        listed = orjson.loads(admin(server, "snapshot", "list", "alice", "--json"))
        [before_upload] = [s for s in listed["snapshots"] if s["reason"] == "upload"]
        assert before_upload["notes"] == wanted["counts"]["notes"]
        out = admin(server, "snapshot", "restore", "alice", before_upload["id"])
        assert "choose Download" in out

        with pytest.raises(FullSyncRequired):  # the prompt: Upload / Download / Cancel
            b.sync()
        assert b.sync(on_conflict="download").action == "download"
        assert_same(only_tables(wanted, *CONTENT), only_tables(snapshot(b.col), *CONTENT),
                    "the state before the stale upload and what b downloaded")
        with pytest.raises(FullSyncRequired):
            a.sync()
        assert a.sync(on_conflict="download").action == "download"
        assert_same(snapshot(a.col), snapshot(b.col), "a and b after the restore")
        assert a.sync().required == NO_CHANGES and b.sync().required == NO_CHANGES


def syncing_in_a_loop(client: SyncClient, stop: threading.Event, errors: list[BaseException],
                      done: list[int]) -> None:
    try:
        while not stop.is_set():
            add_notes(client, 5, f"round {len(done)}")
            assert client.sync().action == "normal"
            done.append(client.col.note_count())
    except BaseException as exc:  # reported by the test
        errors.append(exc)


def test_a_backup_taken_while_another_user_syncs_serves_the_same_from_both_servers(
    clients: dict[str, SyncClient], tmp_path: Path
) -> None:
    with running_server("ankihost", USERS) as server:
        a = device(clients, "a", server)
        build_rich_collection(a.col, notes=200, reviews=40)
        write_media(a.media_dir, {f"picture {i}.jpg": bytes([i]) * (2000 + i) for i in range(25)})
        a.sync(media=True)
        a.sync_media()
        b = device(clients, "b", server, BOB)
        add_notes(b, 50, "bob")
        assert b.sync().action == "upload"
        stop, errors, rounds = threading.Event(), [], []
        syncing = threading.Thread(target=syncing_in_a_loop, args=(b, stop, errors, rounds))
        syncing.start()
        try:
            while len(rounds) < 2 and not errors:
                syncing.join(0.05)
            admin(server, "backup", str(tmp_path / "whole.tar.zst"))
            during = len(rounds)
        finally:
            stop.set()
            syncing.join(120)
        assert not errors and len(rounds) > during >= 2
        wanted_a, wanted_media = snapshot(a.col), media_of(a.media_dir)

    verified = ankihost_cli(tmp_path, [], "backup", "--verify", str(tmp_path / "whole.tar.zst"))
    assert verified.returncode == 0 and "2 user(s)" in verified.stdout, verified.stderr
    seen: dict[str, object] = {}
    for kind in ("ankihost", "official"):
        base = tmp_path / f"restored-{kind}"
        unpacked = ankihost_cli(tmp_path, [], "backup", "--restore", str(tmp_path / "whole.tar.zst"), str(base))
        assert unpacked.returncode == 0, unpacked.stderr
        with running_server(kind, USERS, base=base) as restored:
            a2 = device(clients, f"a-{kind}", restored)
            assert a2.sync(media=True).action == "download"
            a2.sync_media()
            assert_same(wanted_a, snapshot(a2.col), f"alice's device and alice's collection from {kind}")
            assert media_of(a2.media_dir) == wanted_media
            b2 = device(clients, f"b-{kind}", restored, BOB)
            assert b2.sync().action == "download"
            assert b2.col.db.scalar("pragma integrity_check") == "ok"
            assert rounds[0] <= b2.col.note_count() <= rounds[-1]
            seen[kind] = only_tables(snapshot(b2.col), *CONTENT)
            assert a2.sync().required == NO_CHANGES and b2.sync().required == NO_CHANGES
    assert_same(seen["ankihost"], seen["official"], "bob's collection served by ankihost and by the official server")


def test_an_exported_package_imports_in_the_real_client_as_the_servers_collection(
    clients: dict[str, SyncClient], tmp_path: Path
) -> None:
    files = {f"img {i}.png": bytes([i]) * (500 + 7 * i) for i in range(12)} | {"über.mp3": b"\xff\xfb" * 900}
    with running_server("ankihost", USERS) as server:
        a = device(clients, "a", server)
        build_rich_collection(a.col, notes=150, reviews=40)
        write_media(a.media_dir, files)
        a.sync(media=True)
        a.sync_media()
        fresh = device(clients, "fresh", server)
        assert fresh.sync().action == "download"
        served = snapshot(fresh.col)
        admin(server, "export", "alice", str(tmp_path / "alice.colpkg"))
        admin(server, "export", "alice", str(tmp_path / "bare.colpkg"), "--no-media")

    target = tmp_path / "imported"
    target.mkdir()
    RustBackend().import_collection_package(
        col_path=str(target / "collection.anki2"), backup_path=str(tmp_path / "alice.colpkg"),
        media_folder=str(target / "collection.media"), media_db=str(target / "collection.media.db2"))
    imported = Collection(str(target / "collection.anki2"))
    try:
        assert_same(only_tables(served, *CONTENT), only_tables(snapshot(imported), *CONTENT),
                    "the server's collection and the imported package")
    finally:
        imported.close()
    assert media_of(target / "collection.media") == {n: hashlib.sha256(d).hexdigest() for n, d in files.items()}
    with zipfile.ZipFile(tmp_path / "bare.colpkg") as bare:
        assert [i.filename for i in bare.infolist()] == ["meta", "collection.anki21b", "collection.anki2", "media"]
        assert not MediaEntries.FromString(unzstd(bare.read("media"))).entries


def test_the_package_is_laid_out_as_the_desktop_writes_it(clients: dict[str, SyncClient], tmp_path: Path) -> None:
    """Member by member against the real client's own "Export collection package"."""
    with running_server("ankihost", USERS) as server:
        a = device(clients, "a", server)
        add_notes(a, 5, "x")
        write_media(a.media_dir, {"a.jpg": b"a" * 100, "b.jpg": b"b" * 50})
        a.sync(media=True)
        a.sync_media()
        admin(server, "export", "alice", str(tmp_path / "ours.colpkg"))
    a.col.export_collection_package(str(tmp_path / "desktop.colpkg"), True, False)
    a.col.reopen()
    with zipfile.ZipFile(tmp_path / "ours.colpkg") as ours, zipfile.ZipFile(tmp_path / "desktop.colpkg") as desktop:
        for package in (ours, desktop):
            assert [i.filename for i in package.infolist()] == ["meta", "collection.anki21b", "collection.anki2",
                                                                 "0", "1", "media"]
            assert {(i.compress_type, i.create_system, i.external_attr) for i in package.infolist()} == \
                {(zipfile.ZIP_STORED, 3, 0o100644 << 16)}
            assert PackageMetadata.FromString(package.read("meta")).version == PackageMetadata.VERSION_LATEST
        assert ours.read("meta") == desktop.read("meta")
        ours_media = MediaEntries.FromString(unzstd(ours.read("media")))
        desktop_media = MediaEntries.FromString(unzstd(desktop.read("media")))
        assert sorted((e.name, e.size, e.sha1) for e in ours_media.entries) == \
            sorted((e.name, e.size, e.sha1) for e in desktop_media.entries)
        notice = tmp_path / "notice.anki2"
        notice.write_bytes(ours.read("collection.anki2"))
    old = Collection(str(notice))  # the real client reads (and upgrades) the schema-11 notice
    try:
        [nid] = old.find_notes("")
        assert "Please update to the latest Anki version" in old.get_note(nid).fields[0]
    finally:
        old.close()


def test_restore_backup_and_export_refuse_bad_input_with_a_message_and_change_nothing(
    clients: dict[str, SyncClient], tmp_path: Path
) -> None:
    with running_server("ankihost", USERS) as server:
        a = device(clients, "a", server)
        add_notes(a, 5, "x")
        a.sync()
        files_before = data_files(server.base)
        for args, message in [
            (("snapshot", "restore", "alice", "20200101-000000"), "no snapshot '20200101-000000'"),
            (("snapshot", "list", "nobody"), "no user 'nobody'"),
            (("export", "nobody", str(tmp_path / "x.colpkg")), "no user 'nobody'"),
            (("backup", str(tmp_path / "missing" / "b.tar.zst")), "does not exist"),
            (("export", "alice", str(tmp_path / "missing" / "x.colpkg")), "does not exist"),
            (("backup", str(server.base / "alice" / "b.tar.zst")), "inside the data folder"),
        ]:
            result = ankihost_cli(server.base, USERS, *args)
            assert result.returncode == 1 and message in result.stderr, (args, result.stderr)
        (tmp_path / "taken.tar.zst").write_bytes(b"mine")
        result = ankihost_cli(server.base, USERS, "backup", str(tmp_path / "taken.tar.zst"))
        assert result.returncode == 1 and "already exists" in result.stderr
        assert (tmp_path / "taken.tar.zst").read_bytes() == b"mine"
        assert data_files(server.base) == files_before
        assert sorted(p.name for p in tmp_path.iterdir()) == ["taken.tar.zst"]
        assert a.sync().required == NO_CHANGES


def data_files(base: Path) -> list[tuple[str, str]]:
    """Every user file under `base` and its content's hash (not ankihost's own folder, not
    SQLite's -wal/-shm of open databases)."""
    return sorted((str(p.relative_to(base)), hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "")
                  for p in base.rglob("*")
                  if ".ankihost" not in p.parts and not p.name.endswith(("-wal", "-shm")))


def corrupt_copy(source: Path, target: Path, at: float) -> Path:
    data = bytearray(source.read_bytes())
    data[int(len(data) * at)] ^= 0x10
    target.write_bytes(bytes(data))
    return target


def test_a_corrupted_archive_is_refused_by_verify_and_restore(tmp_path: Path) -> None:
    with running_server("ankihost", USERS) as server:
        admin(server, "backup", str(tmp_path / "good.tar.zst"))
    for at in (0.3, 0.9):
        bad = corrupt_copy(tmp_path / "good.tar.zst", tmp_path / f"bad-{at}.tar.zst", at)
        verified = ankihost_cli(tmp_path, [], "backup", "--verify", str(bad))
        assert verified.returncode == 1 and "damaged" in verified.stderr, verified.stderr
        restored = ankihost_cli(tmp_path, [], "backup", "--restore", str(bad), str(tmp_path / f"base-{at}"))
        assert restored.returncode == 1 and "damaged" in restored.stderr
        assert not (tmp_path / f"base-{at}").exists()
    shutil.copy(tmp_path / "good.tar.zst", tmp_path / "short.tar.zst")
    with open(tmp_path / "short.tar.zst", "r+b") as f:
        f.truncate(f.seek(0, 2) - 64)
    verified = ankihost_cli(tmp_path, [], "backup", "--verify", str(tmp_path / "short.tar.zst"))
    assert verified.returncode == 1 and ("damaged" in verified.stderr or "incomplete" in verified.stderr)
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == []
