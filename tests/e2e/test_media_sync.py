"""End-to-end media sync with the real Anki client (`Collection.sync_media`).

Device A adds, changes and deletes media; device B must end up with exactly A's media folder.
The same scenario runs against the official server as a control, and a SYNC_BASE whose media
was written by one server must be served by the other.
"""

from __future__ import annotations

import hashlib
import shutil
import sqlite3
from pathlib import Path

import pytest
from anki.errors import SyncError, SyncErrorKind

from tests.support.client import SyncClient
from tests.support.media_files import write_media
from tests.support.server import ServerKind, SyncServer

USER, PASSWORD = "alice", "media pw"
USERS = [(USER, PASSWORD)]
MiB = 1024 * 1024

pytestmark = pytest.mark.e2e


def _client(clients: dict[str, SyncClient], name: str, server: SyncServer) -> SyncClient:
    clients[name] = SyncClient(server, USER, PASSWORD, name=name)
    clients[name].login()
    return clients[name]


def _media(client: SyncClient) -> dict[str, str]:
    return {
        p.name: hashlib.sha1(p.read_bytes()).hexdigest()
        for p in client.media_dir.iterdir() if p.is_file()
    }


def _server_meta(base: Path) -> tuple[int, int, int]:
    db = sqlite3.connect(base / USER / "media.db")
    try:
        assert db.execute("pragma user_version").fetchone() == (4,)
        row = db.execute("select last_usn, total_bytes, total_nonempty_files from meta").fetchone()
        return tuple(row)
    finally:
        db.close()


INITIAL = {
    **{f"note{i:02}.txt": f"media file {i}".encode() for i in range(30)},
    **{f"big{i}.bin": bytes([i + 1]) * MiB for i in range(4)},  # spans several download zips
    "ünïcödé sound.mp3": b"\xff\xfb" * 500,
}


@pytest.mark.parametrize("kind", ["ankihost", "official"])
def test_media_round_trip_between_two_devices(kind: ServerKind,
                                              clients: dict[str, SyncClient]) -> None:
    with SyncServer(kind, USERS) as server, server.log_on_failure():
        a = _client(clients, "A", server)
        write_media(a.media_dir, INITIAL)
        a.sync_media()
        b = _client(clients, "B", server)
        b.sync_media()
        assert _media(b) == _media(a) and len(_media(a)) == len(INITIAL)

        write_media(a.media_dir, {"note00.txt": b"changed", "note01.txt": None, "added.txt": b"new"})
        a.sync_media()
        b.sync_media()
        assert _media(b) == _media(a)
        assert "note01.txt" not in _media(b)

        write_media(b.media_dir, {"from-b.txt": b"b was here", "big0.bin": None})
        b.sync_media()
        a.sync_media()
        assert _media(a) == _media(b)
        server.stop()
        usn, total_bytes, live = _server_meta(server.base)
        assert live == len(_media(a))
        assert total_bytes == sum((a.media_dir / n).stat().st_size for n in _media(a))
        # 35 added, then 1 changed + 1 deleted + 1 added, then 1 added + 1 deleted
        assert usn == len(INITIAL) + 3 + 2


@pytest.mark.parametrize(("first", "second"), [("official", "ankihost"), ("ankihost", "official")])
def test_servers_share_the_media_store(first: ServerKind, second: ServerKind, tmp_path: Path,
                                       clients: dict[str, SyncClient]) -> None:
    base = tmp_path / "sync-base"
    up = SyncServer(first, USERS, base=base)
    down = SyncServer(second, USERS, base=base)
    try:
        up.start()
        with up.log_on_failure():
            a = _client(clients, "A", up)
            write_media(a.media_dir, INITIAL)
            a.sync_media()
            write_media(a.media_dir, {"note05.txt": None, "note06.txt": b"v2"})
            a.sync_media()
        up.stop()
        down.start()
        with down.log_on_failure():
            b = _client(clients, "B", down)
            b.sync_media()
            assert _media(b) == _media(a)
            write_media(b.media_dir, {"after-switch.txt": b"via the second server", "note07.txt": None})
            b.sync_media()
            a.use_server(down)
            a.login()
            a.sync_media()
            assert _media(a) == _media(b)
    finally:
        up.cleanup()
        down.cleanup()


@pytest.mark.parametrize("kind", ["ankihost", "official"])
def test_meta_reports_the_media_usn(kind: ServerKind, clients: dict[str, SyncClient]) -> None:
    with SyncServer(kind, USERS) as server, server.log_on_failure():
        a = _client(clients, "A", server)
        write_media(a.media_dir, {"one.txt": b"1", "two.txt": b"2", "three.txt": b"3"})
        a.sync_media()
        write_media(a.media_dir, {"two.txt": None})
        a.sync_media()
        assert a.sync(on_conflict="upload").server_media_usn == 4


@pytest.mark.parametrize("kind", ["ankihost", "official"])
def test_a_wiped_server_store_is_refilled_by_the_client(kind: ServerKind,
                                                        clients: dict[str, SyncClient]) -> None:
    """Server media DB and folder removed: the next sync fails its sanity check and resets the
    client, the one after re-uploads everything (spec 03 §8)."""
    with SyncServer(kind, USERS) as server, server.log_on_failure():
        a = _client(clients, "A", server)
        write_media(a.media_dir, INITIAL)
        a.sync_media()
        server.stop()
        for leftover in (server.base / USER).glob("media.db*"):
            leftover.unlink()
        shutil.rmtree(server.base / USER / "media")
        server.start()
        with pytest.raises(SyncError) as raised:
            a.sync_media()
        assert raised.value.kind == SyncErrorKind.OTHER and "sync again" in str(raised.value)
        a.sync_media()
        b = _client(clients, "B", server)
        b.sync_media()
        assert _media(b) == _media(a) and len(_media(b)) == len(INITIAL)
