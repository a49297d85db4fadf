"""The media-sync scenario end to end: two real clients, one server, restarts in between.

Client A makes 300+ media files (names with spaces, NFC and NFD Unicode, sizes from 0 bytes to
several MB, some over the 2.5 MiB zip target), notes that use most of them, and syncs; an empty
client B full-downloads the collection and then the media; the server restarts; B deletes,
replaces and adds files and both sync until settled. Both folders, both client media databases
and the server's media folder + `media.db` must then describe the same set of files, with one
media USN per effective change. Every restart is also a check of the server's store at rest.
The same scenario runs against the official server as a control for what the client does.

What the client does with names and sizes (rslib `changetracker.rs`, `media/files.rs`), asserted
here rather than assumed: every normalized file in the media folder is synced whether or not a
note uses it; a file written on disk under an NFD name is ignored until "Check Media" renames it
to NFC (`col.media.write_data` normalizes at once); empty files are never synced.
"""

from __future__ import annotations

import hashlib
import os
import random
import sqlite3
import time
import unicodedata
from pathlib import Path

import pytest

from tests.support.client import SyncClient
from tests.support.media_files import write_media
from tests.support.server import ServerKind, SyncServer

USER, PASSWORD = "media-user", "médïa pw"
USERS = [(USER, PASSWORD)]
KiB, MiB = 1024, 1024 * 1024
ZIP_TARGET = 2_621_440  # the client closes an upload zip / the server a download zip past this

pytestmark = pytest.mark.e2e


# -- the files -----------------------------------------------------------------------------------
def _nfd(name: str) -> str:
    decomposed = unicodedata.normalize("NFD", name)
    assert decomposed != name, name
    return decomposed


def _blob(rng: random.Random, size: int) -> bytes:
    """Incompressible content of exactly `size` bytes."""
    return rng.randbytes(size)


def _initial_files(rng: random.Random) -> dict[str, bytes]:
    """Name (as A writes it) → content: 300+ files, every kind of name and size we care about."""
    files: dict[str, bytes] = {}
    scripts = ["plain", "café ünïcödé", "日本語 ファイル", "Ελληνικά", "русский файл", "emoji 🎵🦉"]
    for i in range(240):
        stem = scripts[i % len(scripts)]
        ext = (".txt", ".mp3", ".png", ".ogg")[i % 4]
        files[f"{stem} {i:03}{ext}"] = _blob(rng, rng.randint(1, 8 * KiB))
    for i in range(30):  # medium: 64 KiB .. 700 KiB
        files[f"medium file {i:02}.jpg"] = _blob(rng, rng.randint(64 * KiB, 700 * KiB))
    files.update({
        "one byte.txt": b"x",
        "exactly the zip target.bin": _blob(rng, ZIP_TARGET),
        "just over the zip target.bin": _blob(rng, ZIP_TARGET + 1),
        "big 3 MiB.mp4": _blob(rng, 3 * MiB),
        "bigger 6 MiB.mp4": _blob(rng, 6 * MiB + 123),
        "empty.txt": b"",
        "also empty (zero bytes).dat": b"",
    })
    return files


# names A writes straight to disk in NFD; the client must leave them alone until Check Media
RAW_NFD = [_nfd(f"naïve raw {i:02} résumé.mp3") for i in range(10)]
# names A hands to col.media.write_data in NFD; the client stores them as NFC at once
WRITTEN_NFD = [_nfd(f"Ångström écrit {i:02}.wav") for i in range(15)]
UNREFERENCED = {"not used by any note.txt", "orphan 🙈.png"}
EMPTY = {"empty.txt", "also empty (zero bytes).dat"}


# -- client-side helpers -----------------------------------------------------------------------


def _renamed(stored: set[str] | list[str], wanted: set[str] | list[str] | dict[str, bytes]) -> bool:
    """Whether the client stored the `wanted` names as `stored`: in NFC, one for one. (Where the
    26.9 client renames a name, `write_data` or Check Media, it also lower-cases it.)"""
    return (all(unicodedata.is_normalized("NFC", n) for n in stored)
            and sorted(n.lower() for n in stored)
            == sorted(unicodedata.normalize("NFC", n).lower() for n in wanted))


def _add_note(client: SyncClient, names: list[str]) -> None:
    note = client.col.new_note(client.col.models.by_name("Basic"))
    note["Front"] = " ".join(f"[sound:{name}]" for name in names)
    note["Back"] = f"{len(names)} files"
    client.col.add_note(note, 1)


def _finish_media(client: SyncClient, timeout: float = 60.0) -> None:
    """Wait for the media sync the client started in the background; its error is raised here
    (`media_sync_status` re-raises what the sync failed with)."""
    deadline = time.monotonic() + timeout
    while client.col.media_sync_status().active:
        assert time.monotonic() < deadline, "media sync did not finish"
        time.sleep(0.02)
    assert client.col.media_sync_status().active is False  # and no stored error left


def _folder(client: SyncClient) -> dict[str, str]:
    return {
        entry.name: hashlib.sha1(Path(entry.path).read_bytes()).hexdigest()
        for entry in os.scandir(client.media_dir) if entry.is_file()
    }


def _client_db(client: SyncClient) -> tuple[dict[str, str], int, int]:
    """From the client's own media DB (client closed): live name → sha1, dirty rows, lastUsn."""
    db = sqlite3.connect(f"file:{client.folder / 'collection.media.db2'}?mode=ro", uri=True)
    try:
        live = dict(db.execute("select fname, csum from media where csum is not null"))
        dirty = db.execute("select count(*) from media where dirty = 1").fetchone()[0]
        (last_usn,) = db.execute("select lastUsn from meta").fetchone()
        return live, dirty, last_usn
    finally:
        db.close()


def _check_media(client: SyncClient) -> tuple[list[str], list[str]]:
    result = client.col.media.check()
    return sorted(result.missing), sorted(result.unused)


# -- server-side helpers -----------------------------------------------------------------------
def _server_store(base: Path) -> tuple[dict[str, str], int]:
    """The server's live media (name → sha1) and media USN, after checking that `media.db` and
    the media folder agree with each other (read with the server stopped)."""
    user_dir = base / USER
    db = sqlite3.connect(f"file:{user_dir / 'media.db'}?mode=ro", uri=True)
    try:
        rows = db.execute("select fname, lower(hex(csum)), size, usn from media").fetchall()
        last_usn, total_bytes, live_files = db.execute(
            "select last_usn, total_bytes, total_nonempty_files from meta").fetchone()
    finally:
        db.close()
    live = {name: (sha1, size) for name, sha1, size, _ in rows if size > 0}
    on_disk = {e.name: Path(e.path) for e in os.scandir(user_dir / "media") if e.is_file()}
    assert sorted(on_disk) == sorted(live), "server media folder and media.db disagree"
    for name, (sha1, size) in live.items():
        data = on_disk[name].read_bytes()
        assert (hashlib.sha1(data).hexdigest(), len(data)) == (sha1, size), name
    assert live_files == len(live)
    assert total_bytes == sum(size for _, size in live.values())
    assert last_usn == max((usn for *_, usn in rows), default=0)
    assert all(unicodedata.is_normalized("NFC", name) for name, *_ in rows)
    return {name: sha1 for name, (sha1, _) in live.items()}, last_usn


# -- the scenario ------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["ankihost", "official"])  # official: a control for the client
def test_media_scenario_two_clients_and_restarts(kind: ServerKind,
                                                 clients: dict[str, SyncClient]) -> None:
    rng = random.Random(20261126)
    started = time.monotonic()
    with SyncServer(kind, USERS) as server, server.log_on_failure():
        a = clients["A"] = SyncClient(server, USER, PASSWORD, name="A")
        b = clients["B"] = SyncClient(server, USER, PASSWORD, name="B")

        # A: 300+ files, most used by notes
        initial = _initial_files(rng)
        write_media(a.media_dir, initial)
        raw_nfd = {name: _blob(rng, rng.randint(100, 3000)) for name in RAW_NFD}
        write_media(a.media_dir, raw_nfd)
        written = {a.col.media.write_data(name, _blob(rng, 2000 + i))
                   for i, name in enumerate(WRITTEN_NFD)}
        assert _renamed(written, WRITTEN_NFD)
        write_media(a.media_dir, {name: f"unreferenced {name}".encode() for name in UNREFERENCED})
        used = sorted(set(initial) | set(RAW_NFD) | written)
        for i in range(0, len(used), 20):
            _add_note(a, used[i : i + 20])

        # the first sync leaves the NFD files on disk alone (the client skips non-normalized names)
        assert a.sync(media=True).action == "upload"
        _finish_media(a)
        nfd_on_disk = {n for n in os.listdir(a.media_dir) if not unicodedata.is_normalized("NFC", n)}
        assert nfd_on_disk == set(RAW_NFD)
        first_live, first_usn = _restart_and_inspect(server)
        assert set(first_live) == {n for n in _folder(a) if n not in nfd_on_disk and n not in EMPTY}
        assert first_usn == len(first_live)

        # Check Media renames them to NFC (and fixes the notes); then they sync like the rest
        a.col.media.check()
        renamed_raw = set(_folder(a)) - set(first_live) - EMPTY
        assert _renamed(renamed_raw, RAW_NFD)
        assert a.sync(media=True).action == "normal"
        _finish_media(a)

        syncable = {n: s for n, s in _folder(a).items() if (a.media_dir / n).stat().st_size}
        assert len(syncable) >= 300
        # every non-empty file arrived, used by a note or not
        assert set(syncable) == (set(initial) - EMPTY) | renamed_raw | written | UNREFERENCED

        # B: empty; full download of the collection, then every file with identical bytes
        assert b.sync(media=True).action == "download"
        _finish_media(b)
        assert _folder(b) == syncable
        assert b.col.note_count() == a.col.note_count()
        assert all(unicodedata.is_normalized("NFC", n) for n in _folder(b))
        # empty files never leave A; A drops them so that the folders can be compared as a whole
        write_media(a.media_dir, dict.fromkeys(EMPTY))

        stored, usn = _restart_and_inspect(server)
        assert stored == syncable and usn == len(syncable)

        # B: delete some (through the client and behind its back), replace some, add some
        names = sorted(syncable)
        trashed = [n for n in names if n.startswith(("Ελληνικά", "big 3"))][:25]
        b.col.media.trash_files(trashed)
        removed_raw = [n for n in names if n.startswith("naïve raw")][:5] + ["one byte.txt"]
        replaced = [n for n in names if n.startswith(("日本語", "medium"))][::7]
        added = {
            **{f"added by B {i:02} ✓.txt": _blob(rng, rng.randint(1, 4 * KiB)) for i in range(20)},
            _nfd("B’s ñew çlip.mp3"): _blob(rng, 100 * KiB),  # NFD again: needs Check Media
            "B large 4 MiB.webm": _blob(rng, 4 * MiB),
        }
        write_media(b.media_dir, {
            **{n: None for n in removed_raw},
            **{n: _blob(rng, rng.randint(10, 50 * KiB)) for n in replaced},
            **added,
        })
        before_check = set(_folder(b))
        b.col.media.check()  # renames the NFD name
        after_check = set(_folder(b))
        added_nfc = sorted(after_check - before_check | (set(added) & after_check))
        assert _renamed(added_nfc, added)
        _add_note(b, added_nfc)

        # both sync, B first, until neither has anything left to do
        assert b.sync().action == "normal"
        b.sync_media()
        assert a.sync().action == "normal"
        a.sync_media()
        assert b.sync().action == "normal"
        b.sync_media()

        final_a, final_b = _folder(a), _folder(b)
        gone = set(trashed) | set(removed_raw)
        assert final_a == final_b
        assert set(final_a) == (set(syncable) - gone) | set(added_nfc)
        assert all(final_a[n] != syncable[n] for n in replaced)
        assert a.col.note_count() == b.col.note_count()
        # Check Media sees the same on both devices (the unreferenced files stay, unused)
        check_a, check_b = _check_media(a), _check_media(b)
        assert check_a == check_b
        assert check_a[0] == sorted(gone | EMPTY)  # still used by the notes
        assert set(check_a[1]) == UNREFERENCED
        a.sync_media()  # after Check Media: nothing to do, and no error
        b.sync_media()

        a.close()
        b.close()
        db_a, db_b = _client_db(a), _client_db(b)
        server.stop()
        stored, usn = _server_store(server.base)
        assert db_a == db_b
        live, dirty, last_usn = db_a
        assert live == final_a == stored and dirty == 0
        changes = len(gone) + len(replaced) + len(added)
        assert last_usn == usn == len(syncable) + changes
    assert time.monotonic() - started < 60


def _restart_and_inspect(server: SyncServer) -> tuple[dict[str, str], int]:
    """Restart the server; while it is down, check its store (see `_server_store`)."""
    server.stop()
    store = _server_store(server.base)
    server.start()
    return store
