"""Login, meta, upload, download and abort through the real app, in process."""

import sqlite3
from pathlib import Path

import orjson
import pytest
import zstandard

from ankihost.accounts.passwords import hash_password
from ankihost.storage import schema
from tests.conftest import ALICE_KEY, BOB_KEY, Wire, make_settings


def test_health(wire):
    from ankihost import __version__

    response = wire.http.get("/health")
    assert (response.status_code, response.content) == (200, b"")
    assert response.headers["x-ankihost-version"] == __version__
    assert wire.http.head("/health").status_code == 200
    response = wire.http.post("/health")
    assert response.status_code == 405 and response.headers["allow"] == "GET,HEAD"


def test_login_gives_the_official_host_key(wire):
    response = wire.post("hostKey", {"u": "alice", "p": "secret"}, key="")
    assert response.headers["anki-original-size"] == "50"
    assert wire.json(response) == {"key": "6985e52cea44a28695d5c440bd42f57e9f50b7b1"}


@pytest.mark.parametrize("credentials", [{"u": "alice", "p": "wrong"}, {"u": "nobody", "p": "secret"},
                                         {"u": "Alice", "p": "secret"}])
def test_bad_credentials_are_403_and_look_the_same(wire, credentials):
    response = wire.post("hostKey", credentials, key="")
    assert (response.status_code, response.text) == (403, "403")


def test_login_with_hashed_password(tmp_path):
    from starlette.testclient import TestClient

    from ankihost.server import build

    phc = hash_password("pw", rounds=1000)
    settings = make_settings(tmp_path, SYNC_USER1=f"carol:{phc}", SYNC_USER2=f"bob:{phc}",
                             PASSWORDS_HASHED="1")
    with TestClient(build(settings)) as http:
        w = Wire(http)
        assert w.post("hostKey", {"u": "carol", "p": "pw"}, key="").status_code == 200
        assert w.post("hostKey", {"u": "carol", "p": phc}, key="").status_code == 403


def test_new_user_meta(wire):
    meta = wire.json(wire.post("meta", {"v": 11, "cv": "anki,26.09.3 (x),linux"}))
    assert meta["mod"] == 0 and meta["usn"] == 0 and meta["empty"] is True
    assert meta["media_usn"] == 0 and meta["cont"] is True and meta["msg"] == ""
    assert meta["hostNum"] == 0 and abs(meta["ts"] - __import__("time").time()) < 5
    again = wire.json(wire.post("meta", {"v": 11}))
    assert again["scm"] == meta["scm"]


def test_meta_versions(wire):
    assert wire.post("meta", {"v": 7}).status_code == 501
    assert wire.post("meta", {"v": 12}).status_code == 501
    assert wire.json(wire.post("meta", {"v": 10}))["cont"] is True
    old = wire.post("meta", {"v": 10}, version=10)  # a header request of protocol 10: raw reply
    assert "anki-original-size" not in old.headers
    assert orjson.loads(old.content)["cont"] is True and orjson.loads(old.content)["msg"] == ""


def test_upload_then_download(wire, settings, client_collection):
    response = wire.post("upload", client_collection)
    assert wire.payload(response) == b"OK"
    stored = settings.base / "alice" / "collection.anki2"
    assert stored.read_bytes() == client_collection
    meta = wire.json(wire.post("meta", {"v": 11}))
    assert meta["empty"] is False
    downloaded = wire.payload(wire.post("download", {"_pad": None}))
    copy = settings.base / "copy.anki2"
    copy.write_bytes(downloaded)
    assert schema.upload_problem(copy) is None
    db = sqlite3.connect(copy)
    assert db.execute("select usn, mod from col").fetchone()[0] == meta["usn"] + 1
    assert db.execute("select count() from notes").fetchone()[0] == 40
    after = wire.json(wire.post("meta", {"v": 11}))
    assert after["usn"] == meta["usn"] + 1 and after["mod"] > meta["mod"]


def only_snapshot(folder: Path) -> bytes:
    """The collection held by the one snapshot in `folder`/snapshots (no pending copy left)."""
    files = sorted((folder / "snapshots").iterdir())
    assert len(files) == 1 and files[0].name.endswith(".upload.anki2.zst"), files
    return zstandard.ZstdDecompressor().stream_reader(files[0].read_bytes()).read()


def test_second_upload_keeps_the_replaced_collection_as_a_snapshot(wire, settings, client_collection):
    assert wire.payload(wire.post("upload", client_collection)) == b"OK"
    folder = settings.base / "alice"
    assert not (folder / "snapshots").exists()  # the new user's empty collection is not kept
    wire.post("download", {})  # changes the stored collection: usn + 1
    wire.post("abort", {})  # closes it, so the file on disk is complete
    before = (folder / "collection.anki2").read_bytes()
    assert wire.payload(wire.post("upload", client_collection)) == b"OK"
    assert only_snapshot(folder) == before
    assert (folder / "collection.anki2").read_bytes() == client_collection
    assert not (folder / "collection.anki2.previous").exists()


def test_download_of_a_new_user_is_an_empty_collection(wire, settings):
    data = wire.payload(wire.post("download", {}))
    path = settings.base / "d.anki2"
    path.write_bytes(data)
    assert schema.upload_problem(path) is None


def test_abort_without_session_is_null(wire):
    assert wire.payload(wire.post("abort", {"_pad": None}, session="other")) == b"null"


def test_users_are_isolated(wire, settings, client_collection):
    assert wire.payload(wire.post("upload", client_collection)) == b"OK"
    bob = wire.json(wire.post("meta", {"v": 11}, key=BOB_KEY))
    assert bob["empty"] is True
    assert not (settings.base / "bob" / "collection.anki2").read_bytes() == client_collection


@pytest.mark.parametrize("prefix", ["", "/anki", "/a/b/c"])
@pytest.mark.parametrize("slash", ["", "/"])
def test_routes_by_suffix_under_any_prefix(wire, prefix, slash):
    response = wire.post("meta", {"v": 11}, path=f"{prefix}/sync/meta{slash}")
    assert wire.json(response)["cont"] is True


def test_routing_errors(wire):
    assert wire.http.get("/sync/meta").status_code == 405
    assert wire.http.get("/sync/meta").headers["allow"] == "POST"
    assert wire.http.post("/").status_code == 404
    assert wire.http.post("/sync").status_code == 404
    assert wire.post("Meta", {"v": 11}).status_code == 400
    assert wire.post("sanityCheck", {}).status_code == 400


def test_unknown_user_costs_no_more_than_a_wrong_password_in_plain_mode(wire, settings):
    """In plain-text mode a wrong password is a string comparison; an unknown name must not
    run a 600,000-round PBKDF2 instead (that would tell names apart). Checked by work done,
    not by timing: no configured hash means no PBKDF2 at all."""
    import hashlib

    calls = []
    real = hashlib.pbkdf2_hmac

    def counting(*args, **kwargs):
        calls.append(args[0])
        return real(*args, **kwargs)

    hashlib.pbkdf2_hmac = counting
    try:
        assert wire.post("hostKey", {"u": "nobody", "p": "x"}, key="").status_code == 403
        assert wire.post("hostKey", {"u": "alice", "p": "x"}, key="").status_code == 403
    finally:
        hashlib.pbkdf2_hmac = real
    assert calls == []


def test_unknown_user_runs_one_pbkdf2_in_hashed_mode(tmp_path):
    import hashlib

    from starlette.testclient import TestClient

    from ankihost.server import build

    phc = hash_password("pw", rounds=1000)
    settings = make_settings(tmp_path, SYNC_USER1=f"carol:{phc}", SYNC_USER2=f"bob:{phc}",
                             PASSWORDS_HASHED="1")
    calls = []
    real = hashlib.pbkdf2_hmac

    def counting(*args, **kwargs):
        calls.append(args[3])
        return real(*args, **kwargs)

    with TestClient(build(settings)) as http:
        hashlib.pbkdf2_hmac = counting
        try:
            assert Wire(http).post("hostKey", {"u": "nobody", "p": "x"}, key="").status_code == 403
            assert Wire(http).post("hostKey", {"u": "carol", "p": "x"}, key="").status_code == 403
        finally:
            hashlib.pbkdf2_hmac = real
    assert calls == [1000, 1000]


def test_the_snapshot_before_an_upload_keeps_commits_left_in_the_wal(tmp_path, client_collection):
    """After a crash the last commits may still be in collection.anki2-wal; the snapshot kept
    by the next upload must contain them."""
    import shutil

    from starlette.testclient import TestClient

    from ankihost.server import build
    from ankihost.storage.collection import connect

    crashed = tmp_path / "crashed"
    crashed.mkdir()
    (crashed / "collection.anki2").write_bytes(client_collection)
    db = connect(crashed / "collection.anki2")
    db.execute("pragma journal_mode = wal")
    db.execute("pragma wal_autocheckpoint = 0")
    db.execute("update col set usn = 4242")
    # The "crash": copy the files while the change is only in the -wal.
    folder = tmp_path / "base" / "alice"
    folder.mkdir(parents=True)
    for name in ("collection.anki2", "collection.anki2-wal"):
        shutil.copy(crashed / name, folder / name)
    db.close()

    with TestClient(build(make_settings(tmp_path / "base"))) as http:
        assert Wire(http).payload(Wire(http).post("upload", client_collection)) == b"OK"
    kept = tmp_path / "kept.anki2"
    kept.write_bytes(only_snapshot(folder))
    assert sqlite3.connect(kept).execute("select usn from col").fetchone()[0] == 4242
    assert not (folder / "collection.anki2-wal").exists() or \
        (folder / "collection.anki2").read_bytes() == client_collection


def test_leftovers_of_an_interrupted_run_are_removed_at_start_up(tmp_path):
    from ankihost.server import build

    folder = tmp_path / "base" / "alice"
    folder.mkdir(parents=True)
    for name in (".upload-abc", ".download-xyz", ".new-1.anki2", "collection.anki2.previous.tmp"):
        (folder / name).write_bytes(b"x" * 100)
    (folder / "notes.txt").write_text("the operator's own file")
    build(make_settings(tmp_path / "base"))
    left = sorted(p.name for p in folder.iterdir())
    assert [n for n in left if n.startswith(".") or n.endswith(".tmp")] == []
    assert "notes.txt" in left and "media" in left
    assert "media.db" in left  # created at start-up, as the official server does


def test_download_for_protocol_10_is_schema_11_and_raw(wire, settings, client_collection):
    """A header request of protocol 8-10 is served as upstream serves it: a raw schema-11
    file; the stored collection stays schema 18."""
    assert wire.payload(wire.post("upload", client_collection)) == b"OK"
    response = wire.post("download", {}, version=10)
    assert response.status_code == 200 and "anki-original-size" not in response.headers
    assert response.content[:16] == b"SQLite format 3\x00" and response.content[18:20] == b"\x01\x01"
    copy = settings.base / "copy.anki2"
    copy.write_bytes(response.content)
    db = sqlite3.connect(copy)
    assert db.execute("select ver from col").fetchone()[0] == 11
    db.close()
    modern = settings.base / "modern.anki2"
    modern.write_bytes(wire.payload(wire.post("download", {})))
    assert schema.upload_problem(modern) is None  # schema 18, as stored


def test_one_log_line_per_request_without_secrets(wire, caplog):
    import logging

    caplog.set_level(logging.INFO)
    wire.post("hostKey", {"u": "alice", "p": "secret"}, key="")
    wire.post("hostKey", {"u": "alice", "p": "wrong-secret"}, key="")
    wire.post("meta", {"v": 11})
    wire.post("meta", {"v": 11}, key="f" * 40)
    lines = [r.getMessage() for r in caplog.records if r.name == "ankihost.request"]
    request_lines = [line for line in lines if line.startswith("POST ")]
    assert len(request_lines) == 4
    assert "user=alice" in request_lines[0] and "status=200" in request_lines[0]
    assert "client=test,1,linux" in request_lines[2] and "ms=" in request_lines[2]
    assert "ip=" in request_lines[3] and "status=403" in request_lines[3]
    everything = "\n".join(r.getMessage() for r in caplog.records)
    for secret in ("secret", "wrong-secret", ALICE_KEY, "f" * 40):
        assert secret not in everything


def test_a_refused_upload_is_logged_with_its_reason(tmp_path, caplog, client_collection):
    import logging

    from starlette.testclient import TestClient

    from ankihost.server import build
    from ankihost.sync.full import CORRUPT_MESSAGE, TOO_LARGE_MESSAGE
    from tests.conftest import Wire, make_settings

    caplog.set_level(logging.INFO)
    with TestClient(build(make_settings(tmp_path / "base", MAX_SYNC_PAYLOAD_MEGS="1"))) as http:
        wire = Wire(http)
        assert wire.payload(wire.post("upload", b"not a collection at all")) == CORRUPT_MESSAGE.encode()
        assert wire.payload(wire.post("upload", b"\0" * (3 * 1024 * 1024))) == TOO_LARGE_MESSAGE.encode()
        assert wire.payload(wire.post("upload", client_collection)) == b"OK"
    lines = [r.getMessage() for r in caplog.records if "POST /sync/upload" in r.getMessage()]
    assert len(lines) == 3
    assert lines[0].endswith("reason=not a collection: not an SQLite file") and "status=200" in lines[0]
    assert lines[1].endswith(f"reason=over {3 * 1024 * 1024 - 1} bytes decompressed")
    assert "reason=" not in lines[2]
