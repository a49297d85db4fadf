"""Accounts managed live, end to end: `python -m ankihost user|device …` against a running
ankihost process, and the real client (anki 26.9.3) as the devices.

One server serves the tests of this module that only need a running server; each test uses
users of its own, so they do not depend on each other.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import httpx2
import orjson
import pytest
import zstandard

from ankihost.storage import schema
from tests.support.cli import cli_json, cli_ok
from tests.support.client import NO_CHANGES, SyncClient, is_auth_error
from tests.support.content import build_rich_collection
from tests.support.server import SyncServer
from tests.support.snapshot import assert_same, snapshot

pytestmark = pytest.mark.e2e

ENV_USER, ENV_PASSWORD = "envuser", "env-pw"


@pytest.fixture(scope="module")
def server() -> Iterator[SyncServer]:
    with SyncServer("ankihost", [(ENV_USER, ENV_PASSWORD)]) as running, running.log_on_failure():
        yield running


def add_user(server: SyncServer, name: str, password: str, *options: str) -> None:
    out = cli_ok(server.base, "user", "add", name, *options, stdin=password + "\n")
    assert out.strip() == f"added {name}; its data will be in {server.base / name}"


def device(clients: dict[str, SyncClient], server: SyncServer, label: str, user: str, password: str) -> SyncClient:
    clients[label] = SyncClient(server, user, password, name=label)
    return clients[label]


def add_note(client: SyncClient, front: str) -> None:
    note = client.col.new_note(client.col.models.by_name("Basic"))
    note["Front"], note["Back"] = front, "back"
    client.col.add_note(note, 1)


def device_ids(server: SyncServer, name: str) -> list[str]:
    listed = cli_json(server.base, "device", "list", name)
    assert isinstance(listed, dict) and listed["shared_key"] is False
    return [d["id"] for d in listed["devices"]]


def test_a_user_added_while_the_server_runs_uploads_and_a_second_device_downloads(
    server: SyncServer, clients: dict[str, SyncClient]
) -> None:
    add_user(server, "carol", "carol pw ☃")
    a = device(clients, server, "A", "carol", "carol pw ☃")
    build_rich_collection(a.col, notes=60, reviews=20)
    assert a.sync().action == "upload"
    b = device(clients, server, "B", "carol", "carol pw ☃")
    assert b.sync().action == "download"
    assert_same(snapshot(a.col), snapshot(b.col), "uploader A and downloader B")
    assert a.hkey != b.hkey
    users = {u["name"]: u for u in cli_json(server.base, "user", "list")}  # type: ignore[union-attr]
    carol = users["carol"]
    assert (carol["source"], carol["devices"], carol["last_result"]) == ("store", 2, "ok")
    assert carol["last_client"].startswith("26.09") and carol["collection_bytes"] > 100_000
    assert users[ENV_USER]["source"] == "env" and users[ENV_USER]["devices"] is None
    listed = cli_json(server.base, "device", "list", "carol")
    assert [d["last_ip"] for d in listed["devices"]] == ["127.0.0.1"] * 2  # type: ignore[index]
    assert all(d["client"].startswith("26.09") for d in listed["devices"])  # type: ignore[index]
    table = cli_ok(server.base, "user", "list")
    assert table.splitlines()[0].split() == ["NAME", "SOURCE", "COLLECTION", "MEDIA", "QUOTA", "LAST",
                                             "SYNC", "RESULT", "CLIENT", "DEVICES"]


def test_revoking_one_device_refuses_only_that_one(server: SyncServer, clients: dict[str, SyncClient]) -> None:
    add_user(server, "dave", "dave-pw")
    lost = device(clients, server, "lost phone", "dave", "dave-pw")
    add_note(lost, "from the phone")
    assert lost.sync().action == "upload"
    (phone_id,) = device_ids(server, "dave")
    laptop = device(clients, server, "laptop", "dave", "dave-pw")
    assert laptop.sync().action == "download"
    out = cli_ok(server.base, "device", "revoke", "dave", phone_id)
    assert out.strip() == f"revoked 1 device(s) of dave: {phone_id}"
    add_note(lost, "written after it was lost")
    with pytest.raises(Exception) as refused:
        lost.sync()
    assert is_auth_error(refused.value), repr(refused.value)
    add_note(laptop, "from the laptop")
    assert laptop.sync().action == "normal"
    assert phone_id not in device_ids(server, "dave") and len(device_ids(server, "dave")) == 1
    lost.login()  # found again: logging in makes a new device
    assert lost.sync().action == "normal"
    fronts = sorted(lost.col.get_note(n)["Front"] for n in lost.col.find_notes(""))
    assert fronts == ["from the laptop", "from the phone", "written after it was lost"]


def test_a_new_password_logs_every_device_out_and_works(server: SyncServer, clients: dict[str, SyncClient]) -> None:
    add_user(server, "erin", "old-pw")
    a = device(clients, server, "A", "erin", "old-pw")
    add_note(a, "one")
    assert a.sync().action == "upload"
    out = cli_ok(server.base, "user", "passwd", "erin", stdin="new-pw\n")
    assert "1 device(s) logged out" in out
    for attempt in (a.sync, lambda: a.login("old-pw")):
        with pytest.raises(Exception) as refused:
            attempt()
        assert is_auth_error(refused.value), repr(refused.value)
    a.login("new-pw")
    assert a.sync().required == NO_CHANGES


def _post(server: SyncServer, key: str, method: str, payload: object, session: str = "s1") -> httpx2.Response:
    header = orjson.dumps({"v": 11, "k": key, "c": "26.09.3,test,linux", "s": session}).decode()
    return httpx2.post(f"{server.endpoint}sync/{method}", headers={"anki-sync": header},
                       content=zstandard.ZstdCompressor().compress(orjson.dumps(payload)), timeout=30)


def _json(response: httpx2.Response) -> object:
    assert response.status_code == 200, response.status_code
    return orjson.loads(zstandard.ZstdDecompressor().decompressobj().decompress(response.content))


def test_removing_a_user_mid_sync_refuses_them_and_keeps_their_data(
    server: SyncServer, clients: dict[str, SyncClient]
) -> None:
    add_user(server, "frank", "frank-pw")
    a = device(clients, server, "A", "frank", "frank-pw")
    build_rich_collection(a.col, notes=40, reviews=10)
    assert a.sync().action == "upload"
    before = snapshot(a.col)
    cards = list(a.col.find_cards(""))
    key = a.auth().hkey
    # The device's next sync, driven by hand up to the middle: meta, start, deletions sent.
    meta = _json(_post(server, key, "meta", {"v": 11, "cv": "anki,26.09.3 (test),linux"}))
    assert isinstance(meta, dict)
    _json(_post(server, key, "start", {"minUsn": meta["usn"], "lnewer": True}))
    assert _json(_post(server, key, "applyGraves", {"chunk": {"cards": cards[:5], "notes": [], "decks": []}})) is None
    out = cli_ok(server.base, "user", "remove", "frank")
    folder = server.base / "frank"
    assert out.strip() == f"removed frank; its data is kept in {folder}"
    changes = {"changes": {"models": [], "decks": [[], []], "tags": [], "conf": None, "crt": 0}}
    assert _post(server, key, "applyChanges", changes).status_code == 403
    assert _post(server, key, "finish", {}).status_code == 403
    with pytest.raises(Exception) as refused:
        a.sync()
    assert is_auth_error(refused.value), repr(refused.value)
    assert "frank" not in [u["name"] for u in cli_json(server.base, "user", "list")]  # type: ignore[union-attr]
    # Nothing corrupted, nothing of the half-done sync applied, the data still on disk:
    stored = folder / "collection.anki2"
    assert schema.upload_problem(stored) is None
    with contextlib.closing(sqlite3.connect(stored)) as db:
        assert db.execute("select count() from cards").fetchone()[0] == len(cards)
        assert db.execute("select count() from graves").fetchone()[0] == 0
    # ... and an account made again under that name finds it as it was.
    add_user(server, "frank", "frank-pw2")
    a.login("frank-pw2")
    assert a.sync().required == NO_CHANGES
    assert_same(before, snapshot(a.col), "A before the removal and after")


def _big_notes(client: SyncClient, count: int) -> None:
    basic = client.col.models.by_name("Basic")
    for i in range(count):
        note = client.col.new_note(basic)
        note["Front"], note["Back"] = f"big {i}", os.urandom(4000).hex()
        client.col.add_note(note, 1)


def test_a_quota_refuses_uploads_with_the_message_shown_by_the_app(
    server: SyncServer, clients: dict[str, SyncClient]
) -> None:
    add_user(server, "gina", "gina-pw", "--quota-mb", "1")
    a = device(clients, server, "A", "gina", "gina-pw")
    add_note(a, "small")
    assert a.sync().action == "upload"
    stored = server.base / "gina" / "collection.anki2"
    stored_digest = hashlib.sha256(stored.read_bytes()).digest()
    # A full upload past the quota (another device choosing "Upload to AnkiWeb"):
    big = device(clients, server, "big", "gina", "gina-pw")
    _big_notes(big, 200)
    with pytest.raises(Exception) as refused:
        big.full_upload()
    assert "storage quota of 1.0 MB" in str(refused.value), repr(refused.value)
    assert hashlib.sha256(stored.read_bytes()).digest() == stored_digest
    # Media past the quota: the media sync fails with the message, nothing is stored.
    (a.media_dir / "photo1.jpg").write_bytes(os.urandom(600_000))
    (a.media_dir / "photo2.jpg").write_bytes(os.urandom(600_000))
    with pytest.raises(Exception) as refused:
        a.sync_media()
    assert "storage quota of 1.0 MB" in str(refused.value), repr(refused.value)
    assert os.listdir(server.base / "gina" / "media") == []
    # The user still syncs notes and reviews, and downloads.
    add_note(a, "still syncing")
    assert a.sync().action == "normal"
    fresh = device(clients, server, "fresh", "gina", "gina-pw")
    assert fresh.sync().action == "download"
    # With a bigger quota, set while the server runs, the media goes up.
    assert cli_ok(server.base, "user", "set", "gina", "--quota-mb", "5").strip() == "quota of gina: 5.0 MB"
    a.sync_media()
    assert sorted(os.listdir(server.base / "gina" / "media")) == ["photo1.jpg", "photo2.jpg"]


def test_a_second_server_on_the_same_folder_refuses_to_start_while_the_first_serves_an_upload(
    tmp_path: Path, client_collection: bytes
) -> None:
    import http.client

    key = hashlib.sha1(b"alice:pw").hexdigest()
    with SyncServer("ankihost", [("alice", "pw")], base=tmp_path / "base") as first, first.log_on_failure():
        assert first.port is not None
        body = zstandard.ZstdCompressor().compress(client_collection)
        conn = http.client.HTTPConnection("127.0.0.1", first.port, timeout=60)
        conn.putrequest("POST", "/sync/upload")
        conn.putheader("anki-sync", orjson.dumps({"v": 11, "k": key, "c": "test", "s": "x"}).decode())
        conn.putheader("Transfer-Encoding", "chunked")
        conn.endheaders()
        half = len(body) // 2
        conn.send(b"%x\r\n%s\r\n" % (half, body[:half]))  # the upload is under way...
        second = SyncServer("ankihost", [("alice", "pw")], base=first.base)
        try:
            with pytest.raises(Exception) as refused:
                second.start()
            log = second.log_text()
        finally:
            second.cleanup()
        assert "exited with 1" in str(refused.value)
        assert f"the data folder {first.base} is in use by an ankihost server (pid {first.pid}" in log
        assert "Traceback" not in log
        rest = body[half:]
        conn.send(b"%x\r\n%s\r\n0\r\n\r\n" % (len(rest), rest))  # ... and ends now
        response = conn.getresponse()
        assert response.status == 200
        assert zstandard.ZstdDecompressor().decompressobj().decompress(response.read()) == b"OK"
        conn.close()
        assert (first.base / "alice" / "collection.anki2").read_bytes() == client_collection
        assert _post(first, key, "meta", {"v": 11}).status_code == 200


def test_env_users_switch_to_and_from_the_official_server_without_logging_in_again(
    tmp_path: Path, clients: dict[str, SyncClient]
) -> None:
    """The drop-in promise with the account store in place: the host key an env user's device
    holds works on both servers. (tests/e2e/test_full_sync.py::test_servers_share_sync_base
    logs in again on each server; test_hash_password.py compares the keys only.)"""
    base = tmp_path / "base"
    ours = SyncServer("ankihost", [("alice", "pw")], base=base)
    official = SyncServer("official", [("alice", "pw")], base=base)
    try:
        ours.start()
        a = device(clients, ours, "A", "alice", "pw")
        add_note(a, "via ankihost")
        assert a.sync().action == "upload"
        key = a.hkey
        assert key == hashlib.sha1(b"alice:pw").hexdigest()
        ours.stop()
        official.start()
        a.use_server(official, keep_login=True)
        add_note(a, "via the official server")
        assert a.sync().action == "normal" and a.hkey == key
        official.stop()
        ours.start()
        a.use_server(ours, keep_login=True)
        b = device(clients, ours, "B", "alice", "pw")
        assert b.sync().action == "download"
        add_note(a, "back on ankihost")
        assert a.sync().action == "normal" and a.hkey == key
        assert b.sync().action == "normal"
        fronts = sorted(b.col.get_note(n)["Front"] for n in b.col.find_notes(""))
        assert fronts == ["back on ankihost", "via ankihost", "via the official server"]
    finally:
        ours.cleanup()
        official.cleanup()


def test_a_throttled_login_is_a_network_error_not_a_wrong_password(
    server: SyncServer, clients: dict[str, SyncClient]
) -> None:
    """What the app sees once a name is locked out at an address: "429 Too Many Requests" as a
    network error (desktop keeps its saved login), never the 403 that logs it out."""
    from ankihost.accounts.throttle import PAIR_LIMIT

    add_user(server, "hank", "hank-pw")
    a = device(clients, server, "A", "hank", "hank-pw")
    for _ in range(PAIR_LIMIT):
        with pytest.raises(Exception) as refused:
            a.login("a guess")
        assert is_auth_error(refused.value), repr(refused.value)
    with pytest.raises(Exception) as refused:
        a.login("hank-pw")
    assert not is_auth_error(refused.value) and "429 Too Many Requests" in str(refused.value), repr(refused.value)
