"""Every bad request gets a clear 4xx (or the exact reply spec 01 documents), the stored
collection stays byte-for-byte as it was, nothing is left behind, and the server keeps serving."""

import hashlib
import os
import sqlite3

import orjson
import pytest
import zstandard
from starlette.testclient import TestClient

from ankihost.server import build
from ankihost.sync.full import CORRUPT_MESSAGE, TOO_LARGE_MESSAGE
from tests.conftest import Wire, make_settings

MIB = 1024 * 1024


@pytest.fixture
def stored(tmp_path, client_collection):
    """An app (MAX_SYNC_PAYLOAD_MEGS=1) whose user alice has uploaded a real collection."""
    settings = make_settings(tmp_path / "base", MAX_SYNC_PAYLOAD_MEGS="1")
    with TestClient(build(settings)) as http:
        wire = Wire(http)
        assert wire.payload(wire.post("upload", client_collection)) == b"OK"
        folder = settings.base / "alice"
        yield wire, folder
        # The server still serves, and the collection is the one uploaded.
        leftovers = [n for n in os.listdir(folder) if n.startswith(".") or "previous" in n]
        assert leftovers == []
        assert hashlib.sha256((folder / "collection.anki2").read_bytes()).digest() == \
            hashlib.sha256(client_collection).digest()
        meta = wire.json(wire.post("meta", {"v": 11}))
        assert meta["empty"] is False and meta["cont"] is True


def zstd(data: bytes) -> bytes:
    return zstandard.ZstdCompressor().compress(data)


@pytest.mark.parametrize(
    ("method", "body", "status"),
    [
        ("meta", b"garbage, not zstd", 400),
        ("meta", b"", 400),
        ("meta", bytes.fromhex("28b52ffd") + b"\x00\x58" + b"\xff" * 30, 400),
        ("meta", zstd(b"{not json"), 400),
        ("meta", zstd(b"[11]"), 400),
        ("meta", zstd(b'{"v": "11"}'), 400),
        ("meta", zstd(b'{"cv": "no version"}'), 400),
        ("meta", zstd(b'{"v": 99}'), 501),
        ("meta", zstd(b'{"v": 11, "pad": "' + b"x" * (3 * MIB) + b'"}'), 400),
        # Small-body methods get 1 MiB whatever MAX_SYNC_PAYLOAD_MEGS says (JSON amplification).
        ("meta", zstd(b'{"v":11,"pad":[' + b"{}," * (MIB // 3) + b'{}]}'), 400),
        ("chunk", zstd(b'{"pad":"' + b"x" * MIB + b'"}'), 400),
        ("download", zstd(b"[]"), 400),
        ("abort", zstd(b"nope"), 400),
        ("upload", b"garbage, not zstd", 400),
        ("upload", zstd(os.urandom(1000))[:-5], 400),
        ("nosuchmethod", zstd(b"{}"), 400),
        ("chunk", zstd(b"{}"), 409),
    ],
)
def test_bad_bodies(stored, method, body, status):
    wire, _ = stored
    response = wire.post(method, body=body)
    assert (response.status_code, response.text) == (status, str(status))


@pytest.mark.parametrize("header", ['{"v":12,"k":"x","c":"","s":""}', '{"v":7}', "not json", '{"k":"x"}',
                                    '{"v":"11"}', "[]"])
def test_bad_headers(stored, header):
    wire, _ = stored
    response = wire.http.post("/sync/meta", content=zstd(b'{"v":11}'), headers={"anki-sync": header})
    assert response.status_code == 400


@pytest.mark.parametrize("method", ["meta", "upload", "download", "start", "abort"])
@pytest.mark.parametrize("key", ["", "0" * 40, "not-a-key"])
def test_wrong_host_key(stored, method, key):
    wire, _ = stored
    response = wire.post(method, {"v": 11}, key=key)
    assert (response.status_code, response.text) == (403, "403")


def test_no_header_and_not_multipart(stored):
    wire, _ = stored
    assert wire.http.post("/sync/meta", content=b"{}").status_code == 400


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(b"", id="empty"),
        pytest.param(os.urandom(50_000), id="random"),
        pytest.param(b"SQLite format 3\x00" + os.urandom(8000), id="sqlite-magic-then-junk"),
    ],
)
def test_uploads_that_are_not_collections(stored, content):
    wire, _ = stored
    assert wire.payload(wire.post("upload", content)).decode() == CORRUPT_MESSAGE


def test_upload_of_a_database_without_col(stored, tmp_path):
    wire, _ = stored
    path = tmp_path / "other.db"
    db = sqlite3.connect(path)
    db.execute("create table notes (id)")
    db.commit()
    db.close()
    assert wire.payload(wire.post("upload", path.read_bytes())).decode() == CORRUPT_MESSAGE


def test_truncated_collection_upload(stored, client_collection):
    wire, _ = stored
    half = client_collection[: len(client_collection) // 2]
    assert wire.payload(wire.post("upload", half)).decode() == CORRUPT_MESSAGE


def test_truncated_upload_stream(stored, client_collection):
    wire, _ = stored
    response = wire.post("upload", body=zstd(client_collection)[:-100])
    assert response.status_code == 400


def test_upload_over_the_size_limit(stored):
    wire, _ = stored
    response = wire.post("upload", bytes(3 * MIB))  # == 3 x MAX_SYNC_PAYLOAD_MEGS
    assert wire.payload(response).decode() == TOO_LARGE_MESSAGE


def test_bad_request_inside_a_session_leaves_it_usable(stored):
    """Unparsable JSON is refused before any state changes (spec 01 §4.2)."""
    wire, _ = stored
    assert wire.post("start", {"minUsn": 0, "lnewer": False}, session="k1").status_code == 200
    assert wire.post("applyGraves", body=zstd(b"{broken"), session="k1").status_code == 400
    assert wire.post("chunk", {"_pad": None}, session="k1").status_code == 200
    assert wire.post("abort", {}, session="other").status_code == 200
    assert wire.post("chunk", {}, session="k1").status_code == 409


def test_oversized_declared_length_is_refused_before_reading(stored):
    wire, _ = stored
    header = orjson.dumps({"v": 11, "k": "x", "c": "", "s": ""}).decode()
    response = wire.http.post("/sync/meta", content=b"x" * 10, headers={
        "anki-sync": header, "content-length": str(10 * MIB)})
    assert response.status_code in (400, 403, 413)
