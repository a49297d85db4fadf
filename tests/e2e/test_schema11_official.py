"""storage/schema11 against the official server's legacy full syncs, with real clients.

The official server (`python -m anki.syncserver`, anki 26.9.3) serves the old client
(anki 2.1.54, protocol 10) schema-11 files; a recording proxy keeps what went over the wire.
What `schema11.upgrade` makes of an old client's upload must be what the official server
stores, and what `schema11.downgrade` makes of a stored collection must be what the official
server sends an old client. The files we make must also be served by the official server to
new and old clients alike.
"""

from __future__ import annotations

import shutil
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ankihost.storage import schema, schema11
from tests.support.client import NO_CHANGES, SyncClient
from tests.support.content import build_rich_collection
from tests.support.legacy_wire import recorded_payload
from tests.support.old_client import OldClient, comparable, differences, new_client_dump
from tests.support.proxy import ForwardingProxy
from tests.support.server import SyncServer
from tests.support.sync_steps import content

pytestmark = pytest.mark.e2e

USER, PASSWORD = "alice", "s3cret:pw"
LEGACY_COLUMNS = ("conf", "models", "decks", "dconf", "tags")


@pytest.fixture
def official(tmp_path: Path) -> Iterator[tuple[SyncServer, ForwardingProxy]]:
    server = SyncServer("official", [(USER, PASSWORD)], base=tmp_path / "base")
    with server, server.log_on_failure(), ForwardingProxy(server, record=True) as proxy:
        yield server, proxy


def _stored(server: SyncServer) -> Path:
    return server.base / USER / "collection.anki2"


def _legacy_content(path: Path) -> dict[str, Any]:
    import json

    db = sqlite3.connect(path)
    try:
        row = db.execute(f"select {', '.join(LEGACY_COLUMNS)}, ver, crt, scm from col").fetchone()
        return {
            **{c: json.loads(v) for c, v in zip(LEGACY_COLUMNS, row, strict=False)},
            "col": row[len(LEGACY_COLUMNS):],
            "journal_mode": db.execute("pragma journal_mode").fetchone()[0],
            **{t: sorted(db.execute(f"select * from {t}").fetchall())
               for t in ("notes", "cards", "revlog", "graves")},  # fmt: skip
        }
    finally:
        db.close()


def _fill_old(old: OldClient) -> None:
    old.add_notes([{"fields": {"Front": f"old {i}", "Back": "ß"}, "tags": ["old", "a::b"],
                    "deck": "Old::Sub"} for i in range(20)])  # fmt: skip
    old.add_notes([{"notetype": "Cloze", "fields": {"Text": "{{c1::cloze}} text"}, "deck": "Old"}])
    old.add_deck_options("Old options", "Old::Sub", 25, [2.0, 20.0])
    old.review("Old::Sub", 5)
    old.add_filtered_deck("Old filtered", "deck:Old::Sub", 4)
    old.remove_notes(old.find_notes("old 7"))


def _only_upload(proxy: ForwardingProxy, path: str) -> Any:
    assert proxy.exchanges is not None
    found = [e for e in proxy.exchanges if e.path == path]
    assert len(found) == 1, [e.path for e in proxy.exchanges]
    return found[0]


def _old_client_upload(server: SyncServer, proxy: ForwardingProxy, folder: Path) -> dict[str, Any]:
    """An old client fills a collection and full-uploads it through `proxy`; its dump."""
    with OldClient(folder=folder / "old") as old:
        _fill_old(old)
        old.login(USER, PASSWORD, proxy.endpoint)
        assert old.sync() == "FULL_UPLOAD"
        old.full_upload()
        return old.dump()


def test_upgrade_of_an_old_clients_upload_is_what_the_official_server_stores(
    official: tuple[SyncServer, ForwardingProxy], tmp_path: Path
) -> None:
    server, proxy = official
    _old_client_upload(server, proxy, tmp_path)
    uploaded = tmp_path / "uploaded11.anki2"
    uploaded.write_bytes(recorded_payload(_only_upload(proxy, "/sync/upload")))
    server.stop()  # the stored file is complete and unlocked
    ours = tmp_path / "ours18.anki2"
    assert schema11.upgrade(uploaded, ours) is None
    assert content(ours) == content(_stored(server))
    assert schema.upload_problem(ours) is None


def test_downgrade_is_what_the_official_server_sends_an_old_client(
    official: tuple[SyncServer, ForwardingProxy], tmp_path: Path
) -> None:
    server, proxy = official
    new = SyncClient(proxy, USER, PASSWORD, name="new")
    try:
        build_rich_collection(new.col, notes=150, reviews=30)
        new.col.remove_notes(new.col.find_notes("tag:hard")[:4])
        assert new.sync().action == "upload"
        expected = new_client_dump(new.col)
    finally:
        new.cleanup()
    server.stop()
    stored = tmp_path / "stored18.anki2"
    shutil.copyfile(_stored(server), stored)
    server.start()
    with OldClient(folder=tmp_path / "old") as old:
        old.login(USER, PASSWORD, proxy.endpoint)
        assert old.sync() == "FULL_DOWNLOAD"
        old.full_download()
        x, y = comparable(old.dump(), expected)
        assert not differences(x, y), differences(x, y)
    sent = tmp_path / "sent11.anki2"
    sent.write_bytes(_only_upload(proxy, "/sync/download").response_body)
    ours = tmp_path / "ours11.anki2"
    schema11.downgrade(stored, ours)
    assert _legacy_content(ours) == _legacy_content(sent)
    assert ours.read_bytes()[16:20] == sent.read_bytes()[16:20]  # page size, journal mode


def test_the_official_server_serves_our_upgrade_to_new_and_old_clients(
    official: tuple[SyncServer, ForwardingProxy], tmp_path: Path
) -> None:
    recorder, proxy = official
    made = _old_client_upload(recorder, proxy, tmp_path)
    uploaded = tmp_path / "uploaded11.anki2"
    uploaded.write_bytes(recorded_payload(_only_upload(proxy, "/sync/upload")))
    base = tmp_path / "other-base"
    (base / USER).mkdir(parents=True)
    assert schema11.upgrade(uploaded, base / USER / "collection.anki2") is None
    server = SyncServer("official", [(USER, PASSWORD)], base=base)
    with server, server.log_on_failure():
        new = SyncClient(server, USER, PASSWORD, name="new")
        try:
            assert new.sync().action == "download"
            x, y = comparable(new_client_dump(new.col), made)
            assert not differences(x, y), differences(x, y)
            note = new.col.new_note(new.col.models.by_name("Basic"))
            note["Front"], note["Back"] = "added by the new client", "x"
            new.col.add_note(note, new.col.decks.id("Old"))
            assert new.sync().action == "normal"
            with OldClient(folder=tmp_path / "other-old") as old:
                old.login(USER, PASSWORD, server.endpoint)
                assert old.sync() == "FULL_DOWNLOAD"
                old.full_download()
                assert old.find_notes('"added by the new client"')
                old.edit_note(old.find_notes('"old 1"')[0], {"Back": "edited by the old client"})
                assert old.sync() == "NO_CHANGES"  # a normal sync, done
            assert new.sync().action == "normal"
            assert new.col.find_notes('"edited by the old client"')
            assert new.sync().required == NO_CHANGES
        finally:
            new.cleanup()
