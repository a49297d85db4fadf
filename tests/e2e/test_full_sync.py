"""End-to-end full sync with the real Anki client.

Client A builds a rich collection, logs in and full-uploads; the server is
restarted; an empty client B logs in and full-downloads; the snapshots of A
and B must be equal (see tests/support/snapshot.py for what is compared).
The same scenario also runs against the official server as a control, and a
SYNC_BASE written by one server must be served by the other.
"""

from __future__ import annotations

import pytest

from tests.support.client import NO_CHANGES, FullSyncRequired, SyncClient, is_auth_error
from tests.support.content import build_rich_collection
from tests.support.server import ServerKind, SyncServer
from tests.support.snapshot import assert_same, only_tables, snapshot

USER, PASSWORD = "alice", "correct horse ☃"
OTHER_USER, OTHER_PASSWORD = "bob", "b0b:with:colons"
USERS = [(USER, PASSWORD), (OTHER_USER, OTHER_PASSWORD)]

pytestmark = pytest.mark.e2e


def _client(clients: dict[str, SyncClient], name: str, server: SyncServer,
            user: str = USER, password: str = PASSWORD) -> SyncClient:
    clients[name] = SyncClient(server, user, password, name=name)
    return clients[name]


def _add_basic_note(client: SyncClient, front: str) -> None:
    note = client.col.new_note(client.col.models.by_name("Basic"))
    note["Front"], note["Back"] = front, "back"
    client.col.add_note(note, 1)


def _upload_then_download(up_server: SyncServer, down_server: SyncServer,
                          clients: dict[str, SyncClient], restart_between: bool = False) -> None:
    """A (rich) full-uploads via up_server, B (empty) full-downloads via
    down_server; A and B must be equal and then both in sync."""
    a = _client(clients, "A", up_server)
    build_rich_collection(a.col, notes=400, reviews=90)
    with up_server.log_on_failure():
        a.login()
        assert a.sync().action == "upload"
    before = snapshot(a.col)
    if restart_between:
        up_server.restart()
    b = _client(clients, "B", down_server)
    with down_server.log_on_failure():
        b.login()
        assert b.sync().action == "download"
    assert_same(before, snapshot(a.col), "client A before/after its upload")
    assert_same(snapshot(a.col), snapshot(b.col), "uploader A and downloader B")
    with down_server.log_on_failure():
        a.use_server(down_server)
        assert a.sync().required == NO_CHANGES
        assert b.sync().required == NO_CHANGES


@pytest.mark.parametrize("kind", ["ankihost", "official"])
def test_full_upload_restart_full_download(kind: ServerKind, clients: dict[str, SyncClient]) -> None:
    with SyncServer(kind, USERS) as server:
        _upload_then_download(server, server, clients, restart_between=True)
        # another user's collection is separate: empty, so a first sync uploads
        other = _client(clients, "other", server, OTHER_USER, OTHER_PASSWORD)
        _add_basic_note(other, "bob's note")
        with server.log_on_failure():
            assert other.sync().action == "upload"
            assert clients["A"].sync().required == NO_CHANGES


@pytest.mark.parametrize("kind", ["ankihost", "official"])
def test_wrong_password_is_refused(kind: ServerKind, clients: dict[str, SyncClient]) -> None:
    with SyncServer(kind, USERS) as server, server.log_on_failure():
        for user, password in [(USER, "wrong"), (USER, OTHER_PASSWORD), ("nobody", PASSWORD), (USER, "")]:
            client = clients.get("C") or _client(clients, "C", server)
            client.username = user
            with pytest.raises(Exception) as info:
                client.login(password)
            assert is_auth_error(info.value), f"{user!r}: not an auth error: {info.value!r}"
        client.username = USER
        assert client.login(PASSWORD)


@pytest.mark.parametrize(("first", "second"), [("official", "ankihost"), ("ankihost", "official")])
def test_servers_share_sync_base(first: ServerKind, second: ServerKind, tmp_path,
                                 clients: dict[str, SyncClient]) -> None:
    """Upload via `first`, stop it, serve the same SYNC_BASE with `second`,
    download via `second`: the folder format is shared."""
    base = tmp_path / "sync-base"
    up = SyncServer(first, USERS, base=base)
    down = SyncServer(second, USERS, base=base)
    try:
        up.start()
        a = _client(clients, "A", up)
        build_rich_collection(a.col, notes=300, reviews=60)
        with up.log_on_failure():
            assert a.sync().action == "upload"
        up.stop()
        down.start()
        b = _client(clients, "B", down)
        with down.log_on_failure():
            assert b.sync().action == "download"
        assert_same(snapshot(a.col), snapshot(b.col), f"A (via {first}) and B (via {second})")
        with down.log_on_failure():
            a.use_server(down)
            assert a.sync().required == NO_CHANGES
            # a change made via `second` is visible to a normal sync
            _add_basic_note(b, "added after switching servers")
            assert b.sync().action == "normal"
            assert a.sync().action == "normal"
        assert_same(*(only_tables(snapshot(c.col), "notes", "cards", "revlog") for c in (a, b)),
                    "A and B after a normal sync")
    finally:
        up.cleanup()
        down.cleanup()


def test_conflict_requires_a_choice(clients: dict[str, SyncClient]) -> None:
    """Two devices with unrelated collections: the second must choose."""
    with SyncServer("ankihost", USERS) as server, server.log_on_failure():
        a = _client(clients, "A", server)
        build_rich_collection(a.col, notes=50, reviews=10)
        assert a.sync().action == "upload"
        b = _client(clients, "B", server)
        build_rich_collection(b.col, notes=20, reviews=5, seed=2)
        with pytest.raises(FullSyncRequired):
            b.sync()
        assert b.sync(on_conflict="download").action == "download"
        assert_same(snapshot(a.col), snapshot(b.col), "A and B after B chose download")
