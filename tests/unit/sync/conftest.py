"""Fixtures for the sync-step unit tests: a real server collection, open in a transaction."""

from __future__ import annotations

import shutil
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from ankihost.storage.collection import connect
from ankihost.sync.session import SyncSession
from tests.support.sync_steps import mark_uploaded, new_client

SERVER_USN = 5


@pytest.fixture(scope="session")
def uploaded_collection(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh real-client collection (Basic, Cloze… notetypes, Default deck) as uploaded."""
    path = new_client(tmp_path_factory.mktemp("uploaded") / "collection.anki2")
    mark_uploaded(path, usn=SERVER_USN)
    return path


@pytest.fixture
def db(uploaded_collection: Path, tmp_path: Path) -> Iterator[sqlite3.Connection]:
    path = tmp_path / "collection.anki2"
    shutil.copyfile(uploaded_collection, path)
    conn = connect(path)
    conn.execute("begin immediate")
    yield conn
    conn.execute("rollback")
    conn.close()


@pytest.fixture
def session() -> SyncSession:
    """A client that last synced at usn 3; the server is now at usn 5."""
    return SyncSession("key", server_usn=SERVER_USN, client_usn=3, client_is_newer=False)
