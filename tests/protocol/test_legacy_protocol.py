"""Protocols 8–10 through the real app, in process: every method in the legacy envelope
(multipart + gzip, raw replies), full syncs with schema-11 files, media with `sk` and
`GET begin`, `meta`'s answers to protocol 8 and 9, and every bad input the official server
refuses, with the same status or message and the stored collection untouched."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import sqlite3
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from anki.collection import Collection
from starlette.testclient import TestClient

from ankihost.server import build
from ankihost.storage import schema, schema11
from ankihost.sync import bodies
from ankihost.sync.full import CORRUPT_MESSAGE, TOO_LARGE_MESSAGE
from ankihost.sync.meta import NO_NEW_TIMEZONE_MESSAGE, NO_V2_SCHEDULER_MESSAGE
from tests.conftest import ALICE_KEY, Wire, make_settings
from tests.support.content import build_rich_collection
from tests.support.legacy_wire import LegacyStepClient, LegacyWire, legacy_request, multipart_body
from tests.support.media_files import media_zip
from tests.support.sync_steps import content, mark_uploaded, new_client

MIB = 1024 * 1024
SAME_ROW_TABLES = ("notes", "cards", "revlog", "graves")


@pytest.fixture(scope="module")
def uploaded11(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A real client's collection right after its full upload, as schema 18 and as the
    schema-11 file an old client uploads (40 notes in a nested deck)."""
    folder = tmp_path_factory.mktemp("uploaded")

    def fill(col: Collection) -> None:
        for i in range(40):
            note = col.new_note(col.models.by_name("Basic"))
            note["Front"], note["Back"] = f"front {i}", "back"
            col.add_note(note, col.decks.id("Deck::Sub"))

    path18 = new_client(folder / "collection.anki2", fill)
    mark_uploaded(path18)
    path11 = folder / "collection11.anki2"
    schema11.downgrade(path18, path11)
    return path18, path11


@pytest.fixture
def apps(tmp_path: Path) -> Iterator[tuple[LegacyWire, Wire, Path]]:
    """The app (MAX_SYNC_PAYLOAD_MEGS=1): a legacy wire and a protocol-11 wire for alice,
    and her folder."""
    settings = make_settings(tmp_path / "base", MAX_SYNC_PAYLOAD_MEGS="1")
    with TestClient(build(settings)) as http:
        yield LegacyWire(http, ALICE_KEY), Wire(http), settings.base / "alice"


@pytest.fixture
def stored(apps, uploaded11) -> Iterator[tuple[LegacyWire, Wire, Path]]:
    """alice has full-uploaded the schema-11 file with the old client's envelope; afterwards
    nothing is left in her folder but her files."""
    legacy, wire, folder = apps
    assert legacy.payload(legacy.post("upload", uploaded11[1].read_bytes())) == b"OK"
    yield apps
    assert [n for n in os.listdir(folder) if n.startswith(".")] == []


def stored_hash(folder: Path) -> bytes:
    return hashlib.sha256((folder / "collection.anki2").read_bytes()).digest()


def downloaded(wire: Wire, folder: Path) -> Path:
    """The stored collection, fetched with a protocol-11 download."""
    path = folder.parent / "v11-download.anki2"
    path.write_bytes(wire.payload(wire.post("download", {})))
    return path


# --- login and meta ------------------------------------------------------------------------------


def test_login_replies_raw_and_goes_through_the_throttled_gate(apps):
    legacy, wire, _ = apps
    assert legacy.json(legacy.post("hostKey", {"u": "alice", "p": "secret"})) == {"key": ALICE_KEY}
    assert legacy.post("hostKey", {"u": "alice", "p": "wrong"}).status_code == 403
    for _ in range(5):  # failures count together whatever the envelope
        wire.post("hostKey", {"u": "bob", "p": "wrong"}, key="")
    assert legacy.post("hostKey", {"u": "bob", "p": "hunter2"}).status_code == 429


def test_meta_for_protocol_10_is_the_normal_answer(apps):
    legacy, wire, _ = apps
    meta = legacy.json(legacy.post("meta", {"v": 10, "cv": "anki,2.1.54 (b6a7760c),linux"}))
    assert meta["cont"] is True and meta["msg"] == "" and meta["empty"] is True
    assert {k: v for k, v in meta.items() if k != "ts"} == \
        {k: v for k, v in wire.json(wire.post("meta", {"v": 11})).items() if k != "ts"}


@pytest.mark.parametrize(("version", "status"), [(7, 501), (12, 501), (None, 400)])
def test_meta_versions_outside_8_to_11(apps, version, status):
    legacy, _, _ = apps
    body = {} if version is None else {"v": version}
    assert legacy.post("meta", body).status_code == status


def test_meta_without_data_is_400_as_it_lacks_v(apps):
    legacy, _, _ = apps
    content_type, body = multipart_body([("c", b"1"), ("k", ALICE_KEY.encode()), ("s", b"x")])
    assert legacy.send("/sync/meta", content_type, body).status_code == 400


def _with_config(path: Path, tmp_path: Path, **config: Any) -> bytes:
    """The schema-11 file with `col.conf` changed (None removes a key)."""
    copy = tmp_path / "configured11.anki2"
    shutil.copyfile(path, copy)
    db = sqlite3.connect(copy)
    conf = json.loads(db.execute("select conf from col").fetchone()[0])
    for key, value in config.items():
        conf.pop(key, None) if value is None else conf.__setitem__(key, value)
    db.execute("update col set conf = ?", (json.dumps(conf),))
    db.commit()
    db.close()
    return copy.read_bytes()


@pytest.mark.parametrize(
    ("config", "version", "message"),
    [
        ({"schedVer": 2, "creationOffset": -60}, 8, NO_V2_SCHEDULER_MESSAGE),
        ({"schedVer": 2, "creationOffset": -60}, 9, NO_NEW_TIMEZONE_MESSAGE),
        ({"schedVer": 1, "creationOffset": 120}, 8, NO_NEW_TIMEZONE_MESSAGE),
        ({"schedVer": 2, "creationOffset": None}, 9, None),
        ({"schedVer": 1, "creationOffset": None}, 8, None),
        ({"schedVer": 2.0, "creationOffset": "60"}, 8, None),  # not what upstream reads
        ({"schedVer": 2, "creationOffset": -60}, 10, None),
    ],
)
def test_meta_stops_protocol_8_and_9_clients_as_upstream(apps, uploaded11, tmp_path, config, version, message):
    legacy, wire, _ = apps
    assert legacy.payload(legacy.post("upload", _with_config(uploaded11[1], tmp_path, **config))) == b"OK"
    meta = legacy.json(legacy.post("meta", {"v": version, "cv": "ankidroid,2.15.6,Android"}))
    assert (meta["cont"], meta["msg"]) == ((True, "") if message is None else (False, message))
    assert meta["usn"] == 1 and meta["empty"] is False  # the real figures, as upstream sends


def test_a_new_client_collection_stops_protocol_9(apps, client_collection):
    """Collections made by current clients have `creationOffset`: AnkiDroid 2.15's Java sync
    (protocol 9) is told so, as the official server tells it."""
    legacy, wire, _ = apps
    assert wire.payload(wire.post("upload", client_collection)) == b"OK"
    meta = legacy.json(legacy.post("meta", {"v": 9, "cv": "ankidroid,2.15.6,Android"}))
    assert (meta["cont"], meta["msg"]) == (False, NO_NEW_TIMEZONE_MESSAGE)


# --- full sync --------------------------------------------------------------------------------


def test_upload_of_schema_11_is_stored_as_schema_18(stored, uploaded11):
    legacy, wire, folder = stored
    copy = downloaded(wire, folder)
    assert schema.upload_problem(copy) is None
    mine, theirs = content(uploaded11[0]), content(copy)
    for table in ("notes", "cards", "revlog", "graves", "notetypes", "decks", "deck_config", "tags"):
        assert theirs[table] == mine[table], table


@pytest.mark.parametrize("compressed", [True, False], ids=["gzip", "c=0"])
def test_upload_with_or_without_gzip(apps, uploaded11, compressed):
    legacy, _, folder = apps
    upload = legacy.post("upload", uploaded11[1].read_bytes(), compressed=compressed)
    assert legacy.payload(upload) == b"OK"
    assert legacy.json(legacy.post("meta", {"v": 10}))["empty"] is False


def test_upload_of_schema_11_over_protocol_11_is_upgraded_too(apps, uploaded11):
    """Upstream accepts a schema-11 file whatever the protocol; so does ankihost."""
    _, wire, folder = apps
    assert wire.payload(wire.post("upload", uploaded11[1].read_bytes())) == b"OK"
    assert schema.upload_problem(folder / "collection.anki2") is None


def test_upload_of_schema_18_from_a_legacy_client_is_stored_as_it_is(apps, uploaded11):
    legacy, _, folder = apps
    assert legacy.payload(legacy.post("upload", uploaded11[0].read_bytes())) == b"OK"
    assert (folder / "collection.anki2").read_bytes() == uploaded11[0].read_bytes()


def test_download_is_schema_11_in_rollback_journal_mode_and_the_stored_file_stays_18(stored, tmp_path):
    legacy, wire, folder = stored
    before = wire.json(wire.post("meta", {"v": 11}))
    response = legacy.post("download", {})
    data = legacy.payload(response)
    assert int(response.headers["content-length"]) == len(data)
    assert data[18:20] == b"\x01\x01"  # journal mode delete, what 2.1.54 insists on
    path = tmp_path / "legacy-download.anki2"
    path.write_bytes(data)
    db = sqlite3.connect(path)
    assert db.execute("pragma integrity_check").fetchone() == ("ok",)  # without unicase
    assert db.execute("select ver, usn from col").fetchone() == (11, before["usn"] + 1)
    assert "notetypes" not in {r[0] for r in db.execute("select name from sqlite_master")}
    assert len(json.loads(db.execute("select models from col").fetchone()[0])) >= 1
    db.close()
    after = wire.json(wire.post("meta", {"v": 11}))
    assert after["usn"] == before["usn"] + 1 and after["mod"] > before["mod"]
    assert schema.upload_problem(downloaded(wire, folder)) is None  # still schema 18


def test_download_without_a_data_part_as_ankidroid_sends_it(stored):
    legacy, _, _ = stored
    content_type, body = multipart_body([("c", b"1"), ("k", ALICE_KEY.encode()), ("s", b"abc")])
    assert legacy.payload(legacy.send("/sync/download", content_type, body))[:6] == b"SQLite"


def test_a_downgrade_that_fails_is_a_500_and_leaves_no_copy(stored):
    """A stored file that cannot be downgraded (here: a table the downgrade needs is gone)
    fails the request cleanly; the copy made for it is removed."""
    legacy, wire, folder = stored
    wire.post("meta", {"v": 11})
    wire.http.app.registry.by_name("alice").collection.connection().execute("drop table deck_config")
    assert legacy.post("download", {}).status_code == 500
    assert [n for n in os.listdir(folder) if n.startswith(".download")] == []


# --- normal sync ---------------------------------------------------------------------------------


@pytest.mark.parametrize("graves_in_start", [True, False], ids=["graves-in-start", "applyGraves"])
def test_a_whole_normal_sync_in_the_legacy_envelope(stored, uploaded11, tmp_path, graves_in_start):
    """AnkiDroid-style with graves (string ids) inside `start`, or 2.1.54-style with
    `applyGraves`; every other step as protocol 11, the session key a 10-character printable
    string as Anki 2.1.54 makes them."""
    legacy, wire, folder = stored
    device = tmp_path / "device.anki2"
    shutil.copyfile(uploaded11[0], device)
    col = Collection(str(device))
    build_rich_collection(col, notes=120, reviews=20)
    gone = col.find_notes('"front 3"')
    gone_cards = list(col.card_ids_of_note(gone[0]))
    col.remove_notes(gone)
    client = LegacyStepClient(col, legacy, key="v@H?$gbvWQ", graves_in_start=graves_in_start)
    replies = client.sync_upward()
    assert replies["start"] == {"cards": [], "decks": [], "notes": []}
    assert replies["sanity"]["status"] == "ok", replies["sanity"]
    col.close()
    theirs = content(downloaded(wire, folder))
    mine = content(device)
    for table in ("notes", "cards", "revlog"):
        assert [r[0] for r in theirs[table]] == [r[0] for r in mine[table]], table
    assert sorted(r[:2] for r in theirs["graves"]) == sorted(r[:2] for r in mine["graves"])
    assert {(gone[0], 1), *((c, 0) for c in gone_cards)} <= {r[:2] for r in theirs["graves"]}


def test_session_rules_are_those_of_protocol_11(stored):
    legacy, _, _ = stored
    legacy.json(legacy.post("meta", {"v": 10}))
    start = {"minUsn": 0, "lnewer": False, "graves": None}
    assert legacy.post("start", start, session="").status_code == 400
    assert legacy.json(legacy.post("start", start, session="C]w7|ht4>5")) == {"cards": [], "decks": [], "notes": []}
    assert legacy.post("chunk", {}, session="another").status_code == 409
    assert legacy.json(legacy.post("abort", {}, session="anything")) is None
    assert legacy.post("chunk", {}, session="C]w7|ht4>5").status_code == 409


def test_large_session_bodies_are_read_with_their_shape_checked_as_they_are_gunzipped(stored, monkeypatch):
    """Bodies of start/applyGraves/applyChanges/applyChunk over 256 KiB go through the same
    shape-checked reader as protocol 11's, fed by the gunzipped pieces."""
    legacy, _, _ = stored
    streamed: list[str] = []
    read_pieces = bodies.read_pieces

    def watched(method: str, pieces: Any) -> Any:
        read = read_pieces(method, pieces)
        streamed.append(method if read.whole is None else "whole")
        return read

    monkeypatch.setattr(bodies, "read_pieces", watched)
    legacy.json(legacy.post("meta", {"v": 10}))
    assert legacy.post("start", {"minUsn": 0, "lnewer": True, "graves": None}, session="k").status_code == 200
    revlog = [[1_700_000_000_000 + i, 1, -1, 3, 10, 5, 2500, 6000, 1] for i in range(8000)]
    good = orjson.dumps({"chunk": {"done": False, "revlog": revlog}})
    assert len(good) > 256 * 1024
    assert legacy.json(legacy.post("applyChunk", good, session="k")) is None
    bad = orjson.dumps({"chunk": {"done": False, "revlog": revlog[:-1] + [["not", "a", "row"]]}})
    assert legacy.post("applyChunk", bad, session="k").status_code == 400
    not_gzip = multipart_body([("data", os.urandom(64 * 1024)), ("c", b"1"), ("k", ALICE_KEY.encode()),
                               ("s", b"k")])  # fmt: skip
    assert legacy.send("/sync/applyChunk", *not_gzip).status_code == 400
    assert streamed == ["applyChunk", "applyChunk"]


# --- media ---------------------------------------------------------------------------------------


def test_media_begin_by_get_and_by_post(apps):
    legacy, wire, _ = apps
    http = legacy.http
    version = "anki,2.1.54 (b6a7760c),linux"
    got = http.get("/msync/begin", params={"k": ALICE_KEY, "v": version})
    assert legacy.json(got) == {"data": {"usn": 0, "sk": ALICE_KEY}, "err": ""}
    as_ankidroid = multipart_body([("data", gzip.compress(b"{}")), ("c", b"1"), ("k", ALICE_KEY.encode()),
                                   ("v", b"ankidroid,2.15.6,Android")])  # fmt: skip
    assert legacy.json(legacy.send("/msync/begin", *as_ankidroid))["data"]["sk"] == ALICE_KEY
    assert legacy.json(legacy.media("begin", {"v": version}))["data"]["usn"] == 0


@pytest.mark.parametrize(
    ("params", "status"),
    [({"v": "x"}, 400), ({"k": ALICE_KEY}, 400), ({"k": ALICE_KEY, "v": ""}, 400), ({"k": "f" * 40, "v": "x"}, 403)],
)
def test_media_begin_by_get_refusals(apps, params, status):
    legacy, _, _ = apps
    assert legacy.http.get("/msync/begin", params=params).status_code == status


def test_media_begin_post_without_any_version_is_400(apps):
    legacy, _, _ = apps
    assert legacy.media("begin", {}).status_code == 400


def test_media_both_ways_with_sk_and_raw_zips(apps, tmp_path):
    legacy, wire, folder = apps
    big = os.urandom(3 * MIB // 4)  # the body cap is MAX_SYNC_PAYLOAD_MEGS=1 here
    assert legacy.json(legacy.media("uploadChanges", media_zip([("big.bin", big), ("a.txt", b"a")]))) == \
        {"data": [2, 2], "err": ""}
    changes = legacy.json(legacy.media("mediaChanges", {"lastUsn": 0}))["data"]
    assert [c[:2] for c in changes] == [["big.bin", 1], ["a.txt", 2]]
    response = legacy.media("downloadFiles", {"files": ["big.bin", "a.txt"]})
    with zipfile.ZipFile(io.BytesIO(legacy.payload(response))) as zf:
        names = json.loads(zf.read("_meta"))
        assert {names[n]: zf.read(n) for n in names} == {"big.bin": big, "a.txt": b"a"}
    assert legacy.json(legacy.media("uploadChanges", media_zip([("a.txt", None)])))["data"] == [1, 3]
    assert legacy.json(legacy.media("mediaSanity", {"local": 1})) == {"data": "OK", "err": ""}
    assert wire.json(wire.post("begin", {"v": "anki,26.09.3"}, area="msync"))["data"]["usn"] == 3
    assert legacy.json(legacy.post("meta", {"v": 10}))["media_usn"] == 3


def test_media_with_a_gzipped_json_body_and_c_1(apps):
    legacy, _, _ = apps
    fields = [("data", gzip.compress(b'{"lastUsn":0}')), ("c", b"1"), ("sk", ALICE_KEY.encode())]
    assert legacy.json(legacy.send("/msync/mediaChanges", *multipart_body(fields))) == {"data": [], "err": ""}


# --- bad input -----------------------------------------------------------------------------------


def _fields(data: bytes, c: bytes | None = b"1", key: bytes = ALICE_KEY.encode()) -> list[tuple[str, bytes]]:
    return [("data", data)] + ([("c", c)] if c is not None else []) + [("k", key), ("s", b"abc")]


@pytest.mark.parametrize(
    ("content_type", "body", "status"),
    [
        pytest.param("application/octet-stream", gzip.compress(b'{"v":10}'), 400, id="not-multipart"),
        pytest.param(None, b"", 400, id="no-content-type"),
        pytest.param("multipart/form-data; boundary=other", multipart_body(_fields(b"{}"), "bnd")[1], 400,
                     id="bad-boundary"),
        pytest.param("multipart/form-data; boundary=bnd", multipart_body(_fields(b"{}"), "bnd")[1][:-20], 400,
                     id="truncated-form"),
        pytest.param(*multipart_body(_fields(b"\x1f\x8b\x08 not really gzip")), 400, id="bad-gzip"),
        pytest.param(*multipart_body(_fields(gzip.compress(b'{"v":10}')[:-9])), 400, id="truncated-gzip"),
        pytest.param(*multipart_body(_fields(gzip.compress(b'{"v":10}'), c=None)), 400, id="gzip-without-c"),
        pytest.param(*multipart_body(_fields(gzip.compress(b"{not json"))), 400, id="not-json"),
        pytest.param(*multipart_body(_fields(gzip.compress(b'{"v":10,"p":"' + b"x" * (2 * MIB) + b'"}'))), 400,
                     id="gunzips-past-the-small-body-limit"),
        pytest.param(*multipart_body(_fields(os.urandom(MIB + 1))), 400, id="body-over-max"),
        pytest.param(*multipart_body(_fields(gzip.compress(b'{"v":10}'), key=b"f" * 40)), 403, id="unknown-key"),
        pytest.param(*multipart_body([("data", gzip.compress(b'{"v":10}')), ("c", b"1")]), 403, id="no-key"),
    ],
)
def test_bad_envelopes_are_refused_as_upstream_refuses_them(stored, content_type, body, status):
    legacy, _, folder = stored
    before = stored_hash(folder)
    headers = {"content-type": content_type} if content_type else {}
    assert legacy.http.post("/sync/meta", content=body, headers=headers).status_code == status
    assert stored_hash(folder) == before
    assert legacy.json(legacy.post("meta", {"v": 10}))["cont"] is True  # still serving


def test_an_unknown_method_is_400(apps):
    legacy, _, _ = apps
    assert legacy.post("nosuchmethod", {}).status_code == 400
    assert legacy.media("nosuchmethod", {}).status_code == 400


def test_a_declared_length_over_the_limit_is_refused_before_reading(apps):
    legacy, _, _ = apps
    content_type, body = legacy_request(b"{}", host_key=ALICE_KEY, session="s")

    def endless() -> Iterator[bytes]:
        yield body[:100]
        raise AssertionError("the body was read")

    headers = {"content-type": content_type, "content-length": str(2 * MIB)}
    assert legacy.http.post("/sync/upload", content=endless(), headers=headers).status_code == 400


def _broken_schema11(path: Path, tmp_path: Path, how: str) -> bytes:
    copy = tmp_path / f"broken-{how}.anki2"
    shutil.copyfile(path, copy)
    db = sqlite3.connect(copy)
    if how == "json":
        db.execute("update col set models = '{not json'")
    elif how == "table":
        db.execute("drop table revlog")
    elif how == "schema18-tables":
        db.execute("create table notetypes (id integer primary key)")
    db.commit()
    db.close()
    data = copy.read_bytes()
    if how == "integrity":
        page = 4096
        data = data[: 2 * page] + os.urandom(page) + data[3 * page :]
    return data


@pytest.mark.parametrize("how", ["json", "table", "schema18-tables", "integrity"])
def test_schema_11_uploads_that_fail_their_checks(stored, uploaded11, tmp_path, how):
    legacy, _, folder = stored
    before = stored_hash(folder)
    data = _broken_schema11(uploaded11[1], tmp_path, how)
    assert legacy.payload(legacy.post("upload", data)).decode() == CORRUPT_MESSAGE
    assert stored_hash(folder) == before


@pytest.mark.parametrize(
    "data", [b"", b"garbage", os.urandom(50_000), b"SQLite format 3\x00" + os.urandom(8000)],
    ids=["empty", "text", "random", "sqlite-magic-then-junk"],
)
def test_uploads_that_are_no_collection(stored, data):
    legacy, _, folder = stored
    before = stored_hash(folder)
    assert legacy.payload(legacy.post("upload", data)).decode() == CORRUPT_MESSAGE
    assert stored_hash(folder) == before


def test_upload_limits(stored):
    """The body is capped at MAX (400); the payload at 3 x MAX - 1 (the size message)."""
    legacy, _, folder = stored
    before = stored_hash(folder)
    assert legacy.post("upload", os.urandom(MIB + 1), compressed=False).status_code == 400
    too_big = legacy.post("upload", b"\0" * (3 * MIB))
    assert legacy.payload(too_big).decode() == TOO_LARGE_MESSAGE
    assert stored_hash(folder) == before
    assert legacy.send("/sync/upload", *multipart_body(_fields(b"\x1f\x8b not gzip"))).status_code == 400
    assert [n for n in os.listdir(folder) if n.startswith(".")] == []


def test_protocol_11_and_legacy_devices_of_one_user_see_the_same_collection(stored, client_collection):
    legacy, wire, _ = stored
    legacy_meta = legacy.json(legacy.post("meta", {"v": 10}))
    modern_meta = wire.json(wire.post("meta", {"v": 11}))
    assert (legacy_meta["scm"], legacy_meta["usn"], legacy_meta["mod"]) == \
        (modern_meta["scm"], modern_meta["usn"], modern_meta["mod"])
    assert wire.payload(wire.post("upload", client_collection)) == b"OK"
    assert legacy.json(legacy.post("meta", {"v": 10}))["scm"] != legacy_meta["scm"]
    assert orjson.loads(legacy.payload(legacy.post("abort", {}))) is None


def test_an_old_clients_version_is_taken_from_its_meta_payload(tmp_path):
    """The legacy form carries no client version: `meta`'s `cv` names it, for the device list,
    the last-sync summary and the log line; a later request without it keeps it."""
    settings = make_settings(tmp_path / "base")
    app = build(settings)
    with TestClient(app) as http:
        app.accounts.add("maria", "pw-maria-long", None)
        legacy = LegacyWire(http, "")
        key = legacy.json(legacy.post("hostKey", {"u": "maria", "p": "pw-maria-long"}))["key"]
        legacy = LegacyWire(http, key)
        version = "anki,2.1.54 (b6a7760c),lin:debian:12"
        assert legacy.json(legacy.post("meta", {"v": 10, "cv": version}))["cont"] is True
        [device] = app.accounts.devices("maria")
        assert device.client == version
        assert legacy.post("meta", {"v": 10, "cv": 5}).status_code == 200  # no usable cv: kept
        [device] = app.accounts.devices("maria")
        assert device.client == version
        activity = app.accounts.activity("maria")
        assert activity is not None and activity.last_client == version
        legacy.post("meta", {"v": 10, "cv": "x" * 5000})
        [device] = app.accounts.devices("maria")
        assert device.client == "x" * 200
