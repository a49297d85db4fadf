"""An old Anki (2.1.54, protocol 10) and a current one (26.9.3) syncing one account on ankihost.

The old client runs in a venv of its own (`tests/support/old_client.py`) and speaks the
legacy envelope: multipart + gzip, schema-11 full syncs, `GET /msync/begin`. Full syncs in
both directions, normal syncs in both directions with deletions, media both ways (a file
over 2 MiB included), and all of it again through nginx (contrib/'s proxy settings) under a
subpath, as old clients are configured with two URLs (`…/anki/sync/` and `…/anki/msync/`).
After every exchange both devices hold equal collections (`old_client.comparable`/`differences`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.client import NO_CHANGES, SyncClient
from tests.support.content import build_rich_collection
from tests.support.media_files import write_media
from tests.support.old_client import OldClient, comparable, differences, new_client_dump
from tests.support.reverse_proxy import NginxSubpath
from tests.support.server import SyncServer

pytestmark = pytest.mark.e2e

USER, PASSWORD = "alice", "old and new"
MiB = 1024 * 1024
DONE = ("NO_CHANGES", "NORMAL_SYNC")  # what 2.1.54 reports once a normal sync went through


@pytest.fixture
def server(tmp_path: Path) -> Iterator[SyncServer]:
    with SyncServer("ankihost", [(USER, PASSWORD)], base=tmp_path / "base") as running, \
            running.log_on_failure():  # fmt: skip
        yield running


def _new(clients: dict[str, SyncClient], server: object, name: str = "new") -> SyncClient:
    clients[name] = SyncClient(server, USER, PASSWORD, name=name)  # type: ignore[arg-type]
    return clients[name]


def _assert_same(old: OldClient, new: SyncClient) -> None:
    x, y = comparable(old.dump(), new_client_dump(new.col))
    assert not differences(x, y), differences(x, y)


def _fill_old(old: OldClient) -> None:
    """Notes in nested decks, a cloze, tags, custom options, reviews, a filtered deck, a
    deletion: what a long-used old collection has."""
    old.add_notes([{"fields": {"Front": f"old {i}", "Back": "ß"}, "tags": ["old", "a::b"],
                    "deck": "Old::Sub"} for i in range(30)])  # fmt: skip
    old.add_notes([{"notetype": "Cloze", "fields": {"Text": "{{c1::cloze}} text"}, "deck": "Old"}])
    old.add_deck_options("Old options", "Old::Sub", 25, [2.0, 20.0])
    old.review("Old::Sub", 6)
    old.add_filtered_deck("Old filtered", "deck:Old::Sub", 4)
    old.remove_notes(old.find_notes('"old 7"'))


def _change_on_new(new: SyncClient) -> None:
    col = new.col
    note = col.new_note(col.models.by_name("Basic"))
    note["Front"], note["Back"] = "added by the new client", "x"
    col.add_note(note, col.decks.id("From new"))
    first = col.get_note(col.find_notes("")[0])
    first.fields[-1] = "edited by the new client"
    col.update_note(first)
    col.remove_notes(col.find_notes("")[1:3])
    col.decks.remove([col.decks.id("Doomed deck")])


def _change_on_old(old: OldClient) -> None:
    old.add_notes([{"fields": {"Front": "added by the old client", "Back": "y"}, "deck": "From old"}])
    old.edit_note(old.find_notes('"added by the new client"')[0], {"Back": "edited by the old client"})
    old.remove_notes(old.find_notes("")[:2])
    old.review("Default", 3)


def test_old_client_uploads_a_new_client_downloads_then_both_sync_both_ways(
    server: SyncServer, clients: dict[str, SyncClient], tmp_path: Path
) -> None:
    with OldClient(folder=tmp_path / "old") as old:
        _fill_old(old)
        old.add_deck("Doomed deck")
        old.login(USER, PASSWORD, server.endpoint)
        assert old.sync() == "FULL_UPLOAD"
        old.full_upload()
        new = _new(clients, server)
        assert new.sync().action == "download"
        _assert_same(old, new)

        _change_on_new(new)
        assert new.sync().action == "normal"
        assert old.sync() in DONE
        assert old.find_notes('"added by the new client"')
        _assert_same(old, new)

        _change_on_old(old)
        assert old.sync() in DONE
        assert new.sync().action == "normal"
        assert new.col.find_notes('"edited by the old client"')
        _assert_same(old, new)
        assert old.sync() == "NO_CHANGES" and new.sync().required == NO_CHANGES  # both settled
    # the old client's version (sent only in meta's payload) names it in the log
    assert "/sync/meta user=alice client=anki,2.1.54" in server.log_text()


def test_new_client_uploads_an_old_client_downloads_then_both_sync_both_ways(
    server: SyncServer, clients: dict[str, SyncClient], tmp_path: Path
) -> None:
    new = _new(clients, server)
    build_rich_collection(new.col, notes=200, reviews=40)
    new.col.decks.id("Doomed deck")
    new.col.remove_notes(new.col.find_notes("")[:5])
    assert new.sync().action == "upload"
    with OldClient(folder=tmp_path / "old") as old:
        old.login(USER, PASSWORD, server.endpoint)
        assert old.sync() == "FULL_DOWNLOAD"
        old.full_download()
        _assert_same(old, new)

        _change_on_new(new)
        assert new.sync().action == "normal"
        assert old.sync() in DONE
        _assert_same(old, new)

        _change_on_old(old)
        assert old.sync() in DONE
        assert new.sync().action == "normal"
        _assert_same(old, new)


def _media(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha1(p.read_bytes()).hexdigest() for p in folder.iterdir() if p.is_file()}


def _media_both_ways(old: OldClient, new: SyncClient) -> None:
    """The old client sends a 3 MiB file (alone in its zip) and small ones; the new one gets
    them, adds a 2.5 MiB file, changes and deletes; the old one gets that."""
    old_dir = old.media_dir()
    write_media(old_dir, {"big from old.bin": b"\x01" * (3 * MiB), "small.txt": b"small",
                          "ünïcödé.mp3": b"\xff\xfb" * 300})  # fmt: skip
    old.sync_media()
    new.sync_media()
    assert _media(new.media_dir) == _media(old_dir) and len(_media(old_dir)) == 3
    write_media(new.media_dir, {"big from new.bin": b"\x02" * (5 * MiB // 2), "small.txt": None,
                                "ünïcödé.mp3": b"changed"})  # fmt: skip
    new.sync_media()
    old.sync_media()
    assert _media(old_dir) == _media(new.media_dir)
    assert set(_media(old_dir)) == {"big from old.bin", "big from new.bin", "ünïcödé.mp3"}


def test_media_both_ways(server: SyncServer, clients: dict[str, SyncClient], tmp_path: Path) -> None:
    new = _new(clients, server)
    new.login()
    with OldClient(folder=tmp_path / "old") as old:
        old.login(USER, PASSWORD, server.endpoint)
        _media_both_ways(old, new)


def test_everything_through_nginx_under_a_subpath(
    server: SyncServer, clients: dict[str, SyncClient], tmp_path: Path
) -> None:
    """Old clients take two URLs, `…/anki/sync/` and `…/anki/msync/`; nginx forwards
    `/anki/` to the server with contrib/'s proxy settings (2.1.54's chunked upload streamed
    through as it comes)."""
    with NginxSubpath(server, "/anki/") as proxy, OldClient(folder=tmp_path / "old") as old:
        _fill_old(old)
        old.login(USER, PASSWORD, proxy.endpoint, media_endpoint=proxy.endpoint + "msync/")
        assert old.sync() == "FULL_UPLOAD"
        old.full_upload()
        new = _new(clients, proxy)
        assert new.sync().action == "download"
        _assert_same(old, new)
        _media_both_ways(old, new)
        old.add_notes([{"fields": {"Front": "through nginx", "Back": "z"}}])
        old.remove_notes(old.find_notes('"old 3"'))
        assert old.sync() in DONE
        assert new.sync().action == "normal"
        _assert_same(old, new)
        log = (proxy.root / "access.log").read_text()
        assert "GET /anki/msync/begin?k=" in log and "POST /anki/sync/upload" in log
