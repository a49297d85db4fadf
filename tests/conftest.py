"""Fixtures shared by every tier: settings over a temp SYNC_BASE, the real app in process."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import zstandard
from starlette.testclient import TestClient

from ankihost.config import Settings
from ankihost.server import build

USERS = {"SYNC_USER1": "alice:secret", "SYNC_USER2": "bob:hunter2"}
ALICE_KEY = hashlib.sha1(b"alice:secret").hexdigest()
BOB_KEY = hashlib.sha1(b"bob:hunter2").hexdigest()


def make_settings(base: Path, **env: str) -> Settings:
    return Settings.from_env({**USERS, "SYNC_BASE": str(base), "HOME": str(base), **env})


class Wire:
    """Hand-built protocol requests against the in-process app."""

    def __init__(self, http: TestClient) -> None:
        self.http = http

    def post(
        self, method: str, payload: Any = None, *, area: str = "sync", key: str = ALICE_KEY,
        session: str = "s1", version: int = 11, body: bytes | None = None, path: str | None = None,
    ):
        if body is None:
            raw = payload if isinstance(payload, bytes) else orjson.dumps({} if payload is None else payload)
            body = zstandard.ZstdCompressor().compress(raw)
        header = orjson.dumps({"v": version, "k": key, "c": "test,1,linux", "s": session}).decode()
        return self.http.post(path or f"/{area}/{method}", content=body, headers={"anki-sync": header})

    @staticmethod
    def payload(response) -> bytes:
        assert response.status_code == 200, response.text
        data = zstandard.ZstdDecompressor().decompressobj().decompress(response.content)
        assert int(response.headers["anki-original-size"]) == len(data)
        return data

    def json(self, response) -> Any:
        return orjson.loads(self.payload(response))


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path / "base")


@pytest.fixture
def wire(settings: Settings) -> Iterator[Wire]:
    with TestClient(build(settings)) as http:
        yield Wire(http)


@pytest.fixture(scope="session")
def client_collection(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """The bytes of a small collection made by the real client, prepared as for upload."""
    from anki.collection import Collection

    folder = tmp_path_factory.mktemp("client")
    col = Collection(str(folder / "collection.anki2"))
    basic = col.models.by_name("Basic")
    for i in range(40):
        note = col.new_note(basic)
        note["Front"], note["Back"] = f"front {i}", f"back {i}"
        col.add_note(note, col.decks.id("Deck::Sub"))
    col.close(downgrade=False)
    return (folder / "collection.anki2").read_bytes()


@pytest.fixture
def fewer_notes(client_collection: bytes, tmp_path: Path) -> bytes:
    """The client's collection with 10 of its 40 notes (and their cards) gone."""
    from ankihost.storage.collection import connect

    path = tmp_path / "fewer.anki2"
    path.write_bytes(client_collection)
    db = connect(path, exclusive=False)
    db.execute("delete from notes where id in (select id from notes order by id limit 10)")
    db.execute("delete from cards where nid not in (select id from notes)")
    db.execute("vacuum")
    db.close()
    return path.read_bytes()
